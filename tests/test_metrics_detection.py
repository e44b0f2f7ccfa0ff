"""COCO box/mask/Boundary AP through pycocotools and faster-coco-eval on cases with known answers, and the
per-object A vs B table against the dataset numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fapn_core.data import coco as C
from fapn_core.metrics import boundary_iou, coco_evaluate, detection_object_records, false_positives, image_matches
from fapn_core.metrics.detection import STAT_NAMES

H, W = 200, 300
CATS = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1}, {"id": 3, "name": "c", "isthing": 1}]


def rect(y0, x0, y1, x1, h=H, w=W):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def ann(aid, iid, cat, mask, crowd=0):
    ys, xs = np.nonzero(mask)
    return {"id": aid, "image_id": iid, "category_id": cat, "segmentation": C.encode_mask(mask),
            "area": float(mask.sum()), "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
                                                float(ys.max() + 1 - ys.min())], "iscrowd": crowd}


def det(iid, cat, mask, score):
    ys, xs = np.nonzero(mask)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)
    return C.detection_results(box, [score], [cat], image_id=iid, masks=mask[None])[0]


def scene():
    """Image 1: a small (8x8), a medium (40x40) and a large (110x110) object of class 1, a medium one of class 2."""
    masks = {"small": rect(5, 5, 13, 13), "medium": rect(20, 150, 60, 190), "large": rect(80, 10, 190, 120),
             "medium2": rect(100, 200, 140, 240)}
    anns = [ann(1, 1, 1, masks["small"]), ann(2, 1, 1, masks["medium"]), ann(3, 1, 1, masks["large"]),
            ann(4, 1, 2, masks["medium2"])]
    gt = {"images": [C.image_entry(1, H, W, "x.png")], "annotations": anns, "categories": CATS}
    return gt, masks


def perfect(gt):
    return [det(a["image_id"], a["category_id"], C.decode_mask(a["segmentation"]), 0.9) for a in gt["annotations"]
            if not a["iscrowd"]]


@pytest.mark.parametrize("iou_type,backend", [("bbox", "faster"), ("bbox", "pycocotools"), ("segm", "faster"),
                                              ("segm", "pycocotools"), ("boundary", "faster")])
def test_perfect_prediction_is_100_everywhere(iou_type, backend):
    gt, _ = scene()
    s = coco_evaluate(gt, perfect(gt), iou_type, backend=backend)
    assert set(s.stats) == set(STAT_NAMES)
    for k, v in s.stats.items():
        # AR1 allows one detection per image and class: 1 of the 3 class-1 objects, 1 of 1 of class 2
        assert v == pytest.approx((1 / 3 + 1) / 2 if k == "AR1" else 1.0), k
    assert s.per_class_ap[1] == pytest.approx(1.0) and math.isnan(s.per_class_ap[3])  # class 3: no ground truth


def test_small_object_moves_ap_s_not_ap_l():
    gt, masks = scene()
    res = perfect(gt)
    res[0] = det(1, 1, rect(9, 9, 17, 17), 0.9)  # small object: IoU 16/112 < 0.5
    for backend in ("faster", "pycocotools"):
        s = coco_evaluate(gt, res, "segm", backend=backend)
        assert s.stats["AP_S"] == pytest.approx(0.0)
        assert s.stats["AP_L"] == pytest.approx(1.0) and s.stats["AP_M"] == pytest.approx(1.0)
        assert s.stats["AP"] < 1.0 and s.recall50["small"][1] == 0.0 and s.recall50["large"][1] == 1.0


def test_crowd_region_absorbs_detections():
    gt, _ = scene()
    crowd = rect(150, 200, 195, 295)
    gt_crowd = dict(gt, annotations=gt["annotations"] + [ann(5, 1, 1, crowd, crowd=1)])
    gt_plain = dict(gt, annotations=list(gt["annotations"]))
    res = perfect(gt) + [det(1, 1, rect(160, 210, 190, 290), 0.95)]  # highest score, inside the crowd region
    for backend in ("faster", "pycocotools"):
        on_crowd = coco_evaluate(gt_crowd, res, "segm", backend=backend)
        without = coco_evaluate(gt_plain, res, "segm", backend=backend)
        assert on_crowd.stats["AP"] == pytest.approx(1.0)  # ignored, not a false positive
        assert without.stats["AP"] < 1.0  # the same detection is a false positive without the crowd region
        assert on_crowd.n_gt == 4


def test_class_absent_from_ground_truth_is_left_out_of_the_mean():
    gt, _ = scene()
    res = perfect(gt) + [det(1, 3, rect(150, 200, 195, 295), 0.99)]  # class 3 has no ground truth
    s = coco_evaluate(gt, res, "bbox")
    assert s.stats["AP"] == pytest.approx(1.0) and math.isnan(s.per_class_ap[3])


def test_no_detections_and_images_without_objects():
    gt, _ = scene()
    gt2 = dict(gt, images=gt["images"] + [C.image_entry(2, H, W, "empty.png")])
    for backend in ("faster", "pycocotools"):
        assert coco_evaluate(gt2, [], "segm", backend=backend).stats["AP"] == 0.0
        only_empty = coco_evaluate(gt2, [], "bbox", backend=backend, image_ids=[2])
        assert all(math.isnan(v) for v in only_empty.stats.values())  # nothing defined: NaN, not 0
        fp_on_empty = perfect(gt) + [det(2, 1, rect(10, 10, 50, 50), 0.99)]
        assert coco_evaluate(gt2, fp_on_empty, "bbox", backend=backend).stats["AP"] < 1.0
    with pytest.raises(ValueError, match="boundary"):
        coco_evaluate(gt, [], "boundary", backend="pycocotools")


def test_boundary_ap_penalises_coarse_boundaries_and_boundary_iou_matches_the_lab():
    gt = {"images": [C.image_entry(1, H, W, "x.png")], "annotations": [ann(1, 1, 1, rect(40, 40, 160, 160))],
          "categories": CATS}
    coarse = rect(40, 40, 160, 160)
    coarse[40:160:6, 40:160] = False  # stripes: mask IoU 0.83, boundary badly off
    res = [det(1, 1, coarse, 0.9)]
    segm, bnd = coco_evaluate(gt, res, "segm"), coco_evaluate(gt, res, "boundary")
    assert segm.stats["AP50"] == 1.0 and bnd.stats["AP50"] == 0.0
    # Boundary IoU of the pair equals the lab's own Boundary IoU (reference mask_to_boundary) of class 1
    from fapn_core.metrics import boundary_ious

    got = boundary_ious([gt["annotations"][0]["segmentation"]], [res[0]["segmentation"]])[0]
    lab = boundary_iou(rect(40, 40, 160, 160).astype(np.int64), coarse.astype(np.int64), 2, ignore_index=255)
    assert got == pytest.approx(lab.iou[1], abs=1e-12)


def test_backends_agree_on_random_cases():
    rng = np.random.default_rng(0)
    imgs, anns, res = [], [], []
    for i in range(1, 7):
        imgs.append(C.image_entry(i, H, W, f"{i}.png"))
        for _ in range(int(rng.integers(0, 6))):
            y, x = int(rng.integers(0, H - 20)), int(rng.integers(0, W - 20))
            s = int(rng.integers(3, 90))
            m = rect(y, x, min(H, y + s), min(W, x + s))
            anns.append(ann(len(anns) + 1, i, int(rng.integers(1, 3)), m, crowd=int(rng.random() < 0.1)))
            if rng.random() < 0.8:
                dy, dx = rng.integers(-4, 5, 2)
                res.append(det(i, anns[-1]["category_id"], np.roll(m, (int(dy), int(dx)), (0, 1)), float(rng.random())))
    gt = {"images": imgs, "annotations": anns, "categories": CATS}
    for t in ("bbox", "segm"):
        a, b = coco_evaluate(gt, res, t), coco_evaluate(gt, res, t, backend="pycocotools")
        for k in STAT_NAMES:
            assert (math.isnan(a.stats[k]) and math.isnan(b.stats[k])) or abs(a.stats[k] - b.stats[k]) < 1e-4, (t, k)


def test_per_object_table_reproduces_coco_recall_at_iou_05_per_size():
    from fapn_core.data import open_dataset

    ds = open_dataset("synthetic:n=6,seed=2")
    things = ds.thing_classes
    rng = np.random.default_rng(1)
    imgs, anns, res = [], [], {"A": [], "B": []}
    records, fps = [], []
    for i in range(len(ds)):
        s = ds[i]
        h, w = s["label"].shape
        img = C.image_entry(i + 1, h, w, s["name"])
        g = C.gt_annotations(s["label"], s["instances"], things, image_id=i + 1, first_id=len(anns) + 1)
        per = {}
        for name, shift in (("A", 3), ("B", 1)):
            out = []
            for a in g:
                if rng.random() < 0.15:
                    continue
                m = np.roll(C.decode_mask(a["segmentation"]), int(rng.integers(-shift, shift + 1)), axis=1)
                if m.any():
                    out.append(det(i + 1, a["category_id"], m, float(rng.random())))
            per[name] = out
        ma, mb = (image_matches(g, per[k], img, C.categories(ds.class_names, things), "segm") for k in "AB")
        records += detection_object_records(g, per["A"], per["B"], ma, mb, class_names=ds.class_names, image=i)
        fps += false_positives(per["A"], ma, model="A", image=i)
        for k in "AB":
            res[k] += per[k]
        imgs.append(img)
        anns += g
    gt = {"images": imgs, "annotations": anns, "categories": C.categories(ds.class_names, things)}
    assert len(records) == sum(1 for a in anns if not a["iscrowd"]) > 20
    for side, key in (("a", "A"), ("b", "B")):
        sc = coco_evaluate(gt, res[key], "segm")
        for size in ("small", "medium", "large"):
            for c, r50 in sc.recall50[size].items():
                rs = [r for r in records if r.size == size and r.class_id == c]
                if not rs:
                    assert math.isnan(r50)
                    continue
                assert np.mean([getattr(r, f"hit_{side}") for r in rs]) == pytest.approx(r50, abs=1e-12)
    outcomes = {r.outcome for r in records}
    assert outcomes <= {"recovered", "lost", "both_hit", "both_missed"}
    bad = [(r.iou_a, r.det_a, r.object_id) for r in records if r.hit_a and not 0.5 <= r.iou_a <= 1]
    assert not bad, bad[:5]
    assert fps and all(fp.model == "A" and 0 <= fp.best_iou <= 1 for fp in fps)
