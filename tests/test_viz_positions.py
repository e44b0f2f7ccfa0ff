"""fapn_core.viz.positions: PanopticFCN peaks, A/B peak matching, the kernel → instance table and the drawings,
against expectations worked out by hand on constructed maps; the ``positions`` capture on a small model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fapn_core.models.panopticfcn.captures import LevelMaps, PanopticFCNMaps
from fapn_core.models.panopticfcn.generators import fuse_thing_kernels
from fapn_core.models.panopticfcn.options import PanopticFCNOptions
from fapn_core.viz._common import apply_colormap, blend, greyed
from fapn_core.viz.detections import ONLY_A, ONLY_B
from fapn_core.viz.positions import (
    Peak, centre_view, fusion_table, instance_order, kept_peaks, level_rows, match_peaks, peak_agreement_view,
    peak_rule, region_view,
)

ROOT = Path(__file__).resolve().parents[1]
STRIDES = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
HW = (64, 96)  # image size: p3 has 8×12 cells


def _level(name: str, peaks=(), k: int = 2, s: int = 3, centres: np.ndarray | None = None,
            regions: np.ndarray | None = None, stuff=()) -> LevelMaps:
    stride = STRIDES[name]
    h, w = math.ceil(HW[0] / stride), math.ceil(HW[1] / stride)
    c = np.zeros((k, h, w), np.float32) if centres is None else centres
    r = np.full((s, h, w), 0.1, np.float32) if regions is None else regions
    return LevelMaps(name, stride, c, c.copy(), np.asarray(peaks, np.float32).reshape(-1, 4), r,
                     np.asarray(stuff, np.float32).reshape(-1, 2))


def _maps(peaks_by_level: dict[str, list]) -> PanopticFCNMaps:
    return PanopticFCNMaps(levels={n: _level(n, peaks_by_level.get(n, ())) for n in STRIDES})


# ------------------------------------------------------------------------------------------------------ peaks
def test_kept_peaks_in_level_order_at_cell_centres():
    maps = _maps({"p4": [(1, 2, 3, 0.7)], "p3": [(0, 1, 1, 0.9), (1, 0, 5, 0.4)]})
    peaks = kept_peaks(maps)
    assert [(p.level, p.class_id, p.y, p.x) for p in peaks] == [("p3", 0, 1, 1), ("p3", 1, 0, 5), ("p4", 1, 2, 3)]
    assert peaks[0].image_xy == (12.0, 12.0)  # (1 + 0.5) · 8
    assert peaks[2].image_xy == (56.0, 40.0)  # x: (3 + 0.5) · 16, y: (2 + 0.5) · 16
    assert peaks[0].score == pytest.approx(0.9)
    assert [p.level for p in kept_peaks(maps, ["p4"])] == ["p4"]
    with pytest.raises(ValueError, match="no level"):
        kept_peaks(maps, ["p9"])


def test_match_same_class_within_one_cell_of_the_coarser_level():
    a = _maps({"p3": [(0, 2, 3, 0.9),   # (28, 20)
                      (1, 5, 5, 0.8),   # (44, 44)
                      (0, 6, 10, 0.5),  # (84, 52): B has class 1 there
                      (0, 1, 0, 0.3)]})  # (4, 12): B's nearest class-0 peak is 2 cells away
    b = _maps({"p3": [(0, 2, 4, 0.6),   # (36, 20): 8 px from A's first = one p3 cell
                      (1, 6, 10, 0.5),
                      (0, 1, 2, 0.3)],  # (20, 12): 16 px from A's last
               "p4": [(1, 2, 2, 0.7)]})  # (40, 40): 5.66 px from A's class-1 peak on p3, within one p4 cell
    m = match_peaks(kept_peaks(a), kept_peaks(b))
    assert m.counts == {"matched": 2, "only_a": 2, "only_b": 2}
    pairs = {(p.a.y, p.a.x): (p.b.level, p.b.y, p.b.x, p.distance) for p in m.matched}
    assert pairs[(2, 3)][:3] == ("p3", 2, 4) and pairs[(2, 3)][3] == pytest.approx(8.0)
    assert pairs[(5, 5)][:3] == ("p4", 2, 2) and pairs[(5, 5)][3] == pytest.approx(math.hypot(4, 4))
    assert sorted((p.class_id, p.y, p.x) for p in m.only_a) == [(0, 1, 0), (0, 6, 10)]
    assert sorted((p.class_id, p.y, p.x) for p in m.only_b) == [(0, 1, 2), (1, 6, 10)]
    wide = match_peaks(kept_peaks(a), kept_peaks(b), cells=2.0)  # 16 px on p3: the last pair matches too
    assert wide.counts == {"matched": 3, "only_a": 1, "only_b": 1}
    assert "at most 2 cells" in wide.rule() and "p3: 16 px" in wide.rule()
    assert match_peaks([], kept_peaks(b)).counts == {"matched": 0, "only_a": 0, "only_b": 4}


def test_match_is_one_to_one_closest_first():
    b = [Peak("p3", 8, 0, 4, 4, 0.5)]  # (36, 36)
    far = Peak("p3", 8, 0, 4, 5, 0.9)  # (44, 36): 8 px, the higher score
    near = Peak("p4", 16, 0, 2, 2, 0.4)  # (40, 40): 5.66 px, wins
    m = match_peaks([far, near], b)
    assert [(p.a, p.b) for p in m.matched] == [(near, b[0])] and m.only_a == [far] and not m.only_b
    with pytest.raises(ValueError):
        match_peaks([far], b, cells=-1)


def test_level_rows_and_rule_text():
    centres = np.zeros((2, 8, 12), np.float32)
    centres[1, 3, 4] = 0.42
    maps = _maps({})
    maps.levels["p3"] = _level("p3", [(1, 3, 4, 0.42)], centres=centres, stuff=[(2, 0.5)])
    rows = {r.level: r for r in level_rows(maps)}
    assert rows["p3"].peaks == 1 and rows["p3"].best_score == pytest.approx(0.42) and rows["p3"].stuff == 1
    assert rows["p3"].cells == (8, 12) and rows["p7"].cells == (1, 1) and rows["p7"].peaks == 0
    opts = PanopticFCNOptions(center_thresh=0.25, center_top_num=60)
    assert "score > 0.25" in peak_rule(opts) and "top 30" in peak_rule(opts)
    assert "5×5" in peak_rule(opts, "p6") and "3×3 average" in peak_rule(opts, "p3")


# ---------------------------------------------------------------------------------------------- kernel fusion
def _fusion_case() -> PanopticFCNMaps:
    """Four candidates (score order). 0: p3 class 1; 1: p4 class 1, its kernel 20° from 0's (cos 0.94 ≥ 0.9):
    fused into 0; 2: p3 class 0, its own kernel; 3: p5 class 1, 40° from 0 (cos 0.77) and 20° from 1: its first
    similar kernel (1) was merged away, so it is dropped."""
    deg = np.deg2rad
    meta = torch.tensor([[1.0, 0, 0], [np.cos(deg(20)), np.sin(deg(20)), 0], [0, 0, 1.0],
                         [np.cos(deg(40)), np.sin(deg(40)), 0]], dtype=torch.float32)
    classes, scores = torch.tensor([1, 1, 0, 1]), torch.tensor([0.9, 0.8, 0.7, 0.3])
    fusion = fuse_thing_kernels(meta, classes, scores, thresh=0.9, class_specific=True)
    maps = _maps({})
    maps.candidates = np.array([[0, 1, 2, 3, 0.9], [1, 1, 1, 1, 0.8], [0, 0, 5, 5, 0.7], [2, 1, 0, 0, 0.3]],
                               np.float32)
    maps.fusion_keep, maps.fusion_assign = fusion.keep.numpy(), fusion.assign.numpy()
    maps.rescored = np.array([0.04, 0.5], np.float32)  # kernel 0 falls below the 0.05 floor
    return maps


def test_fusion_table_follows_candidates_to_kernels_and_instances():
    maps = _fusion_case()
    assert maps.fusion_keep.tolist() == [True, False, True, False]  # the library's fusion agrees with the story
    rows = fusion_table(maps, ["car", "person"])
    got = [(r.candidate, r.level, r.class_name, r.kernel, r.kernel_candidate, r.kernel_size, r.instance)
           for r in rows]
    assert got == [(0, "p3", "person", 0, 0, 2, None), (1, "p4", "person", 0, 0, 2, None),
                   (2, "p3", "car", 1, 2, 1, 0), (3, "p5", "person", None, None, None, None)]
    assert (rows[1].x, rows[1].y) == (24.0, 24.0)  # p4 cell (1, 1): (1.5 · 16, 1.5 · 16)
    assert rows[1].instance_level == "p3" and rows[1].instance_xy == (28.0, 20.0)  # kernel 0 is candidate 0's
    assert rows[2].rescored == pytest.approx(0.5) and rows[2].instance_class == "car"
    assert rows[0].rescored == pytest.approx(0.04) and rows[3].rescored is None
    assert rows[1].outcome.startswith("fused into #0") and "no instance" in rows[1].outcome
    assert rows[2].outcome == "own kernel → instance 0" and rows[3].outcome.startswith("dropped")
    maps.rescored = np.array([0.3, 0.6], np.float32)  # both pass: instances ordered by rescored score
    assert [r.instance for r in fusion_table(maps)] == [1, 1, 0, None]
    assert [r.instance for r in fusion_table(maps, top_num=1)] == [None, None, 0, None]
    assert fusion_table(_maps({})) == []


def test_instance_order_floor_and_top_k():
    s = np.array([0.2, 0.04, 0.6, 0.2, 0.05])
    assert instance_order(s).tolist() == [2, 0, 3, 4]  # stable among equal scores; 0.05 itself is kept
    assert instance_order(s, top_num=2).tolist() == [2, 0]
    assert instance_order(np.zeros(0)).tolist() == []


# --------------------------------------------------------------------------------------------------- drawing
def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (*HW, 3), dtype=np.uint8)


def test_centre_view_heatmap_cells_peaks_and_threshold():
    image = _image()
    centres = np.zeros((2, 8, 12), np.float32)
    centres[0, 1, 1] = 0.9
    centres[1, 6, 9] = 0.6
    lv = _level("p3", [(0, 1, 1, 0.9)], centres=centres)
    green = [[0, 255, 0], [255, 0, 255]]
    out = centre_view(image, lv, palette=green, threshold=0.5, alpha=0.7)
    assert out.shape == image.shape and out.dtype == np.uint8
    # a cell far from every peak and outline: the colour of its value blended over the greyed image
    want = blend(greyed(image)[32:40, 16:24], apply_colormap(np.zeros((8, 8), np.float32), 0.0, 1.0), 0.7)
    assert np.array_equal(out[32:40, 16:24], want)
    # the kept peak's ring is in its class colour, around its cell centre (12, 12); nowhere else
    ys, xs = np.nonzero(np.all(out == [0, 255, 0], axis=2))
    assert len(ys) and np.all(np.hypot(xs - 11.5, ys - 11.5) <= 6)
    # the class-1 cell passes the threshold: its outline (cyan) is drawn there; no peak of class 1 is kept
    assert not np.all(out == [255, 0, 255], axis=2).any()
    assert (np.all(out[47:57, 71:81] == [0, 220, 255], axis=2)).any()
    assert not np.all(centre_view(image, lv, threshold=None) == [0, 220, 255], axis=2).any()
    # one class: its map, and only its peaks
    one = centre_view(image, lv, class_id=1, palette=green)
    assert not np.all(one == [0, 255, 0], axis=2).any()
    want1 = blend(greyed(image)[48:56, 72:80], apply_colormap(np.full((8, 8), 0.6, np.float32), 0.0, 1.0), 0.7)
    assert np.array_equal(one[48:56, 72:80], want1)


def test_region_view_colours_by_most_likely_channel():
    image = _image()
    regions = np.full((3, 8, 12), 0.1, np.float32)
    regions[2, 0, 0] = 0.8
    lv = _level("p3", regions=regions)
    pal = np.array([[128, 128, 128], [255, 0, 0], [0, 0, 255]], np.uint8)
    out = region_view(image, lv, pal, alpha=0.6)
    g = greyed(image)
    w_hi, w_lo = 0.6 * (0.35 + 0.65 * 0.8), 0.6 * (0.35 + 0.65 * 0.1)
    assert np.array_equal(out[:8, :8], blend(g[:8, :8], np.broadcast_to(pal[2], (8, 8, 3)), w_hi))
    # ties (all channels 0.1): the first channel, things (grey)
    assert np.array_equal(out[8:16, 8:16], blend(g[8:16, 8:16], np.broadcast_to(pal[0], (8, 8, 3)), w_lo))


def test_peak_agreement_view_colours():
    image = _image()
    a = [Peak("p3", 8, 0, 1, 1, 0.9), Peak("p3", 8, 1, 6, 10, 0.9)]
    b = [Peak("p3", 8, 0, 1, 2, 0.9), Peak("p3", 8, 0, 6, 1, 0.5)]
    m = match_peaks(a, b)
    assert m.counts == {"matched": 1, "only_a": 1, "only_b": 1}
    out = peak_agreement_view(image, m)
    blue = np.all(out == ONLY_A, axis=2)
    orange = np.all(out == ONLY_B, axis=2)
    ys, xs = np.nonzero(blue)
    assert len(ys) and np.all(np.hypot(xs - 83.5, ys - 51.5) <= 6)  # only A: class 1 at (84, 52)
    ys, xs = np.nonzero(orange)
    assert len(ys) and np.all(np.hypot(xs - 11.5, ys - 51.5) <= 6)  # only B: (12, 52)


# ------------------------------------------------------------------------------------------ the capture itself
@pytest.fixture(scope="module")
def panopticfcn():
    from fapn_core.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("fpn_r18_panopticfcn", num_classes=4, sem_seg_num_classes=7).eval()
    with torch.no_grad():
        model.position_head.out_inst.bias.fill_(-1.7)  # random weights: some centres pass the 0.2 threshold
    return model


def test_positions_capture_follows_kernels_into_the_model_instances(panopticfcn):
    from fapn_core.introspect import predict_with_captures
    from fapn_core.io import read_image_file

    image = read_image_file(ROOT / "assets" / "samples" / "synthetic_00.png").rgb
    pred = predict_with_captures(panopticfcn, image, iter(("offsets", "positions")))  # an iterator works too
    maps = pred.captures.positions
    assert maps is not None and list(maps.levels) == ["p3", "p4", "p5", "p6", "p7"]
    assert maps.levels["p3"].centres.shape == (4, math.ceil(image.shape[0] / 8), math.ceil(image.shape[1] / 8))
    peaks = kept_peaks(maps)
    assert len(peaks) == len(maps.candidates) > 0
    assert all(p.score > panopticfcn.options.center_thresh for p in peaks)
    det = pred.detections
    rows = fusion_table(maps, top_num=panopticfcn.options.center_top_num)
    instances = {r.instance: r for r in rows if r.instance is not None}
    assert sorted(instances) == list(range(len(det.scores))) and len(det.scores) > 0
    for i, r in instances.items():
        assert r.rescored == pytest.approx(float(det.scores[i]), abs=1e-6)
        assert r.instance_class == f"class_{int(det.classes[i])}"
    # without the capture, or on a model without centre maps: None
    assert predict_with_captures(panopticfcn, image, ("offsets",)).captures.positions is None
    from fapn_core.models.zoo import build_model

    semantic = build_model("fpn_r18_semfpn", num_classes=3).eval()
    assert predict_with_captures(semantic, image[:64, :64].copy(), ("positions",)).captures.positions is None
