"""PQ/SQ/RQ with the COCO panoptic reference rules: hand-computed cases with void and crowd, and torchmetrics'
PanopticQuality where the two must agree (no crowd, no void in the prediction)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fapn_core.data import coco as C
from fapn_core.metrics import panoptic_scores, pq_counts

CATS = [{"id": 1, "name": "car", "isthing": 1}, {"id": 2, "name": "person", "isthing": 1},
        {"id": 5, "name": "road", "isthing": 0}, {"id": 6, "name": "sky", "isthing": 0}]
IDS = [c["id"] for c in CATS]


def seg(sid, cat, crowd=0):
    return {"id": sid, "category_id": cat, "iscrowd": crowd}


def test_perfect_prediction_is_100():
    ids = np.zeros((20, 30), np.int64)
    ids[:10] = 1
    ids[10:] = 2
    ids[12:16, 3:9] = 3
    ids[12:16, 20:25] = 4
    segs = [seg(1, 6), seg(2, 5), seg(3, 1), seg(4, 2)]
    s = panoptic_scores(pq_counts(ids, segs, ids.copy(), segs, IDS), CATS)
    assert (s.pq, s.sq, s.rq, s.n, s.n_things, s.n_stuff) == (1.0, 1.0, 1.0, 4, 2, 2)


def test_hand_computed_case_with_void_and_crowd():
    h, w = 20, 20
    gt = np.zeros((h, w), np.int64)  # 0 = void
    gt[0:10, :] = 1  # sky, 200 px
    gt[10:20, 0:10] = 2  # car A, 100 px
    gt[10:20, 10:16] = 3  # car crowd, 60 px
    gt[10:20, 16:20] = 0  # void 40 px
    gsegs = [seg(1, 6), seg(2, 1), seg(3, 1, crowd=1)]
    pred = np.zeros((h, w), np.int64)
    pred[0:10, :] = 1  # sky: perfect
    pred[10:20, 0:8] = 2  # car: 80 of 100 -> IoU 0.8
    pred[10:20, 8:10] = 5  # person on the car: FP (not void, not crowd of person)
    pred[10:20, 10:15] = 3  # car on the crowd: 50 px, all crowd -> ignored
    pred[10:20, 15:20] = 4  # car: 10 crowd + 40 void of 50 -> ignored
    psegs = [seg(1, 6), seg(2, 1), seg(3, 1), seg(4, 1), seg(5, 2)]
    c = pq_counts(gt, gsegs, pred, psegs, IDS)
    k = {cid: i for i, cid in enumerate(IDS)}
    assert c.tp[k[1]] == 1 and c.fp[k[1]] == 0 and c.fn[k[1]] == 0 and c.iou_sum[k[1]] == pytest.approx(0.8)
    assert (c.tp[k[2]], c.fp[k[2]], c.fn[k[2]]) == (0, 1, 0)
    assert c.tp[k[6]] == 1 and c.iou_sum[k[6]] == 1.0
    s = panoptic_scores(c, CATS)
    assert s.per_class[1]["pq"] == pytest.approx(0.8) and s.per_class[2]["pq"] == 0.0
    assert math.isnan(s.per_class[5]["pq"])  # road: in neither -> not counted
    assert s.n == 3 and s.pq == pytest.approx((0.8 + 0 + 1) / 3)
    assert s.pq_things == pytest.approx(0.4) and s.rq_things == pytest.approx(0.5) and s.sq_things == pytest.approx(0.4)
    assert s.pq_stuff == 1.0 and s.n_stuff == 1


def test_void_ground_truth_leaves_the_union_and_match_needs_more_than_half():
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 1
    pred = np.zeros((10, 10), np.int64)
    pred[:, :8] = 1  # 50 on the segment, 30 on void: IoU = 50 / (80 + 50 - 50 - 30) = 1
    c = pq_counts(gt, [seg(1, 1)], pred, [seg(1, 1)], IDS)
    assert c.tp[0] == 1 and c.iou_sum[0] == 1.0
    pred2 = np.zeros((10, 10), np.int64)
    pred2[:, :2] = 1  # IoU 20 / 50 = 0.4: FN and FP
    c2 = pq_counts(gt, [seg(1, 1)], pred2, [seg(1, 1)], IDS)
    assert (c2.tp[0], c2.fp[0], c2.fn[0]) == (0, 1, 1)
    exact = np.zeros((10, 10), np.int64)
    exact[:, :5] = 1
    exact[:5, :5] = 0  # IoU exactly 0.5 is not a match (the reference: > 0.5)
    c3 = pq_counts(gt, [seg(1, 1)], exact, [seg(1, 1)], IDS)
    assert c3.tp[0] == 0 and c3.fn[0] == 1


def test_bad_segment_lists_raise():
    ids = np.ones((4, 4), np.int64)
    with pytest.raises(ValueError, match="not in segments_info"):
        pq_counts(ids, [seg(1, 1)], ids * 2, [seg(1, 1)], IDS)
    with pytest.raises(ValueError, match="not in the map"):
        pq_counts(ids, [seg(1, 1)], ids, [seg(1, 1), seg(9, 1)], IDS)
    with pytest.raises(ValueError, match="unknown category"):
        pq_counts(ids, [seg(1, 1)], ids, [seg(1, 3)], IDS)
    with pytest.raises(ValueError, match="one size"):
        pq_counts(ids, [seg(1, 1)], np.ones((3, 4), np.int64), [seg(1, 1)], IDS)


def _cat_map(ids, segs):
    """torchmetrics' (category, instance) map; void (id 0) -> category 99, which torchmetrics treats as void."""
    out = np.zeros(ids.shape + (2,), np.int64)
    out[..., 0] = 99
    for s in segs:
        out[ids == s["id"], 0] = s["category_id"]
        out[ids == s["id"], 1] = s["id"] if s["category_id"] in (1, 2) else 0
    return out


def _random_scene(rng, h=24, w=32, void=True):
    """(segment ids, segments): two stuff rows, up to four thing boxes, optional void pixels."""
    ids = np.zeros((h, w), np.int64)
    segs = []
    cut = int(rng.integers(6, h - 6))
    for sid, (sl, cat) in enumerate(((slice(0, cut), 6), (slice(cut, h), 5)), start=1):
        ids[sl] = sid
        segs.append(seg(sid, cat))
    for _ in range(int(rng.integers(1, 5))):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        sid = len(segs) + 1
        ids[y:y + int(rng.integers(3, 9)), x:x + int(rng.integers(3, 9))] = sid
        segs.append(seg(sid, int(rng.integers(1, 3))))
    if void:
        ids[rng.random((h, w)) < 0.05] = 0
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segs if s["id"] in present]


def test_agrees_with_torchmetrics_without_crowd_or_void_predictions():
    torch = pytest.importorskip("torch")
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(0)
    tm = PanopticQuality(things={1, 2}, stuffs={5, 6}, return_sq_and_rq=True, return_per_class=True)
    total = None
    for _ in range(16):
        g, gs = _random_scene(rng)
        if rng.random() < 0.5:  # a prediction close to the truth: void filled, a band moved to the first stuff
            p = g.copy()
            p[p == 0] = 1
            p[:, : int(rng.integers(1, 6))] = 1
            present = set(np.unique(p).tolist())
            ps = [dict(s) for s in gs if s["id"] in present]
        else:
            p, ps = _random_scene(rng, void=False)
        c = pq_counts(g, gs, p, ps, [1, 2, 5, 6])
        total = c if total is None else total.__iadd__(c)
        tm.update(torch.as_tensor(_cat_map(p, ps))[None], torch.as_tensor(_cat_map(g, gs))[None])
    ours = panoptic_scores(total, CATS)
    ref = tm.compute().double().numpy()  # per class (things, then stuffs, sorted) x (PQ, SQ, RQ), float32
    assert ref.shape == (4, 3) and total.tp.sum() > 10 and total.fp.sum() > 3 and total.fn.sum() > 3
    for row, cid in zip(ref, [1, 2, 5, 6]):
        pc = ours.per_class[cid]
        assert row[0] == pytest.approx(pc["pq"], abs=1e-6) and row[1] == pytest.approx(pc["sq"], abs=1e-6)
        assert row[2] == pytest.approx(pc["rq"], abs=1e-6)  # torchmetrics returns float32


def test_panoptic_ground_truth_from_maps():
    label = np.full((10, 12), 255, np.int64)
    label[:5] = 6
    label[5:] = 5
    label[6:9, 1:4] = 1
    label[6:9, 6:9] = 1
    inst = np.zeros((10, 12), np.int32)
    inst[6:9, 1:4] = 7  # an object; the second car region has no id -> crowd
    label[9, 11] = 255
    pan, info = C.panoptic_gt(label, inst, [1, 2], [5, 6])
    kinds = sorted((s["category_id"], s["iscrowd"], s["area"]) for s in info)
    assert kinds == [(1, 0, 9), (1, 1, 9), (5, 0, 41), (6, 0, 60)]
    assert (pan == 0).sum() == 1
    s = panoptic_scores(pq_counts(pan, info, pan, [dict(x, iscrowd=0) for x in info], [1, 2, 5, 6]), CATS)
    # the prediction also has the crowd region as a car: it lies wholly on crowd -> ignored, not a FP
    assert s.pq == 1.0 and s.counts.fp.sum() == 0
