"""Hand-computed cases, input validation, serialisation and dataset accumulation for fapn_core.metrics."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

import fapn_core.metrics as M

IGN = 255


def square(h=20, w=20, y=5, x=5, size=10, cls=1, bg=0):
    m = np.full((h, w), bg, np.uint8)
    m[y : y + size, x : x + size] = cls
    return m


# ----------------------------------------------------------------------------- hand-computed cases
class TestSquareShiftedBy2:
    gt = square()
    a = square(x=7)  # shifted right by 2 px
    b = square()

    def test_region_iou(self):
        s = M.segmentation_scores(self.gt, self.a, 2)
        # class 1: |∩| = 10*8 = 80, |∪| = 120; class 0: 280 / 320
        assert s.iou.tolist() == pytest.approx([280 / 320, 80 / 120])
        assert s.pixel_accuracy == pytest.approx(360 / 400)

    def test_boundary_iou_d1(self):
        r = M.boundary_iou(self.gt, self.a, 2)  # diag 28.3 -> d = max(1, round(0.57)) = 1
        assert r.dilation == 1
        # class 1: two 36-px rings shifted by 2 share 8+8 px -> 16 / 56
        # class 0: image frame (76) + outer rings (44 each) sharing 20 px -> 96 / 144
        assert r.intersection.tolist() == [96, 16] and r.union.tolist() == [144, 56]
        assert r.iou.tolist() == pytest.approx([2 / 3, 2 / 7])
        assert r.mean == pytest.approx(10 / 21)

    def test_band_width_1_is_the_boundary(self):
        bs = M.trimap_scores(self.gt, self.a, 2, widths=(1,))
        # band = inner ring (36, GT 1) + outer ring (44, GT 0)
        assert bs.pixels.tolist() == [80]
        assert bs.confusions[0].tolist() == [[34, 10], [12, 24]]
        assert bs.iou[0].tolist() == pytest.approx([34 / 56, 24 / 46])

    def test_error_vs_distance(self):
        prof = M.error_vs_distance(self.gt, self.a, 2, max_distance=3)
        # wrong: cols 5,6 (GT 1) and 15,16 (GT 0), rows 5..14; cols 5 and 15 lie on the boundary,
        # col 6 too in rows 5 and 14; the rest is 1 px away
        assert prof.errors.tolist() == [22, 18, 0, 0]
        assert prof.pixels[0] == 80
        assert prof.rate[0] == pytest.approx(22 / 80)

    def test_fix_break(self):
        fb = M.fix_break(self.gt, self.a, self.b, 2, max_distance=3)
        assert (fb.fixed, fb.broken, fb.both_wrong, fb.both_right, fb.net) == (40, 0, 0, 360, 40)
        assert fb.map.dtype == np.int8 and int(fb.map.sum()) == 40 and fb.map.min() == 0
        assert fb.fixed_by_distance.tolist() == [22, 18, 0, 0]
        reverse = M.fix_break(self.gt, self.b, self.a, 2)
        assert (reverse.fixed, reverse.broken) == (0, 40) and int(reverse.map.sum()) == -40

    def test_boundary_f(self):
        exact = M.boundary_f_score(self.gt, self.a, 2, tolerance=0)
        assert exact.pred_total[1] == 36 and exact.pred_matched[1] == 16  # shared top/bottom segments
        tol2 = M.boundary_f_score(self.gt, self.a, 2, tolerance=2)
        assert tol2.precision[1] == 1.0 and tol2.recall[1] == 1.0 and tol2.f[1] == 1.0

    def test_object(self):
        objs = M.extract_objects(self.gt, 2, thing_classes=[1])
        assert len(objs) == 1 and objs.bboxes[0].tolist() == [5, 5, 10, 10] and objs.areas[0] == 100
        sc = M.score_objects(self.gt, self.a, 2, objs)
        assert (sc.tp[0], sc.fp[0]) == (80, 20) and sc.iou[0] == pytest.approx(80 / 120)
        assert sc.hit[0] and sc.recall[0] == pytest.approx(0.8)


class TestOnePixelLine:
    gt = np.zeros((9, 12), np.uint8)
    gt[4, 2:10] = 2
    shifted = np.roll(gt, 1, axis=0)

    def test_band_and_boundary_iou(self):
        assert int(M.band_mask(self.gt, 1).sum()) == 30  # rows 3..5 x cols 1..10
        assert M.boundary_iou(self.gt, self.gt, 3).iou[2] == 1.0
        r = M.boundary_iou(self.gt, self.shifted, 3)
        assert r.intersection[2] == 0 and r.union[2] == 16 and r.iou[2] == 0.0
        assert math.isnan(r.iou[1])

    def test_objects_lost_by_b(self):
        r = M.compare(self.gt, self.gt, self.shifted, 3, thing_classes=[2], class_names=["bg", "x", "line"])
        assert len(r.objects) == 1
        o = r.objects[0]
        assert (o.class_id, o.class_name, o.area, o.bbox, o.size) == (2, "line", 8, [2, 4, 8, 1], "small")
        assert (o.iou_a, o.recall_a, o.hit_a) == (1.0, 1.0, True)
        assert (o.iou_b, o.recall_b, o.hit_b, o.tp_b) == (0.0, 0.0, False, 0)
        assert o.outcome == "lost" and r.lost_objects() == [o] and r.recovered_objects() == []
        assert r.object_summary["small"].lost_by_b == 1 and r.object_summary["all"].n_objects == 1
        assert r.b.iiou.iiou[2] == 0.0 and r.a.iiou.iiou[2] == 1.0


class TestObjectTouchingBorder:
    gt = np.zeros((8, 8), np.int32)
    gt[0:3, 0:3] = 1
    pred = np.zeros((8, 8), np.int32)
    pred[0:3, 1:4] = 1

    def test_boundaries(self):
        # image border is not a label boundary: inner L (5) + outer L (7)
        assert int(M.label_boundary(self.gt).sum()) == 12
        # Boundary IoU counts the image border as contour: 8 of 9 pixels (all but the centre)
        r = M.boundary_iou(self.gt, self.gt, 2)
        assert r.union[1] == 8

    def test_object_neighbourhood_clipped(self):
        objs = M.extract_objects(self.gt, 2, thing_classes=[1])
        assert objs.bboxes.tolist() == [[0, 0, 3, 3]]
        sc = M.score_objects(self.gt, self.pred, 2, objs, margin=4)
        assert (sc.tp[0], sc.fp[0]) == (6, 3) and sc.iou[0] == 0.5 and sc.hit[0]


def test_only_ignore_pixels_gives_nan_without_crash():
    gt = np.full((6, 7), IGN, np.uint8)
    pred = np.zeros((6, 7), np.uint8)
    r = M.compare(gt, pred, pred, 3)
    for m in (r.a, r.b):
        assert np.isnan(m.iou).all() and math.isnan(m.miou) and math.isnan(m.pixel_accuracy)
        assert np.isnan(m.band.iou).all() and math.isnan(m.band.mean_miou)
        assert np.isnan(m.boundary_iou.iou).all() and np.isnan(m.boundary_f.f).all()
        assert m.error_profile.pixels.sum() == 0 and np.isnan(m.error_profile.rate).all()
        assert not m.error_map.any()
    assert r.objects == [] and r.object_summary["all"].n_objects == 0
    assert (r.fix_break.fixed, r.fix_break.broken, r.fix_break.both_right) == (0, 0, 0)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["a"]["miou"] is None and d["a"]["iou"] == [None, None, None]
    assert r.summary()["delta"]["miou"] is None
    acc = M.ComparisonAccumulator(3)
    acc.add(r)
    assert math.isnan(acc.result().a.miou)


def test_class_in_prediction_but_not_in_gt_has_iou_zero():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:5, 2:5] = 1
    pred = gt.copy()
    pred[6:9, 6:9] = 2
    s = M.segmentation_scores(gt, pred, 4)
    assert s.iou[2] == 0.0 and math.isnan(s.iou[3]) and s.iou[1] == 1.0
    assert M.boundary_iou(gt, pred, 4).iou[2] == 0.0
    bf = M.boundary_f_score(gt, pred, 4)
    assert bf.f[2] == 0.0 and bf.precision[2] == 0.0 and math.isnan(bf.recall[2]) and math.isnan(bf.f[3])
    assert M.trimap_scores(gt, pred, 4, widths=(2,)).iou[0, 2] == 0.0
    iiou = M.instance_iou(gt, pred, 4)
    assert iiou.iiou[2] == 0.0 and math.isnan(iiou.iiou[3])  # Cityscapes: no instances but FP -> 0


def test_boundary_f_empty_sides():
    gt = np.zeros((6, 6), np.uint8)
    pred = gt.copy()
    bf = M.boundary_f_score(gt, pred, 2)
    assert np.isnan(bf.f).all() and math.isnan(bf.mean_f)


# ----------------------------------------------------------------------------- instances & iIoU
def test_instances_touching_same_class_do_not_count_as_fp():
    gt = np.zeros((10, 12), np.uint8)
    gt[2:6, 1:5] = 1
    gt[2:6, 5:9] = 1  # touches the first one: one connected component, two instances
    inst = np.zeros_like(gt, dtype=np.int32)
    inst[2:6, 1:5] = 1001
    inst[2:6, 5:9] = 1002
    gt[0, 0] = IGN
    inst[0, 0] = 1003  # instance pixels on ignore are dropped -> instance 1003 vanishes
    pred = np.where(gt == IGN, 0, gt)
    objs = M.extract_objects(gt, 2, instances=inst, thing_classes=[1])
    assert objs.source == "instances" and objs.object_ids.tolist() == [1001, 1002]
    assert objs.areas.tolist() == [16, 16] and objs.bboxes.tolist() == [[1, 2, 4, 4], [5, 2, 4, 4]]
    sc = M.score_objects(gt, pred, 2, objs)
    assert sc.fp.tolist() == [0, 0] and sc.iou.tolist() == [1.0, 1.0]
    cc = M.extract_objects(gt, 2, thing_classes=[1])
    assert len(cc) == 1 and cc.areas[0] == 32


def test_instance_class_is_majority_gt_class():
    gt = np.zeros((6, 6), np.uint8)
    gt[1:4, 1:4] = 2
    gt[1, 1] = 1
    inst = np.zeros((6, 6), np.int64)
    inst[1:4, 1:4] = 7
    objs = M.extract_objects(gt, 3, instances=inst)
    assert objs.class_ids.tolist() == [2] and objs.areas.tolist() == [8]
    assert objs.label_map[1, 1] == 0 and objs.label_map[2, 2] == 1


def test_iiou_cityscapes_weighting_and_avg_sizes():
    gt = np.zeros((20, 20), np.uint8)
    inst = np.zeros((20, 20), np.int32)
    gt[0:2, 0:2] = 1; inst[0:2, 0:2] = 1   # small instance, 4 px
    gt[5:15, 5:15] = 1; inst[5:15, 5:15] = 2  # large instance, 100 px
    pred = np.zeros_like(gt)
    pred[5:15, 5:15] = 1  # large hit, small missed
    pred[18, 18] = 1  # 1 FP pixel
    r = M.instance_iou(gt, pred, 2, instances=inst, thing_classes=[1])
    avg = 52.0  # mean instance size in this image
    tpw = 100 * avg / 100
    fnw = 4 * avg / 4
    assert r.tp_weighted[1] == pytest.approx(tpw) and r.fn_weighted[1] == pytest.approx(fnw) and r.fp[1] == 1
    assert r.iiou[1] == pytest.approx(tpw / (tpw + fnw + 1)) and math.isnan(r.iiou[0])
    # plain IoU would be 100 / 105; iIoU weights the missed small instance like the big one
    fixed = M.instance_iou(gt, pred, 2, instances=inst, thing_classes=[1], avg_instance_size={1: 10.0})
    assert fixed.iiou[1] == pytest.approx(10 / (10 + 10 + 1))
    named = M.instance_iou(gt, pred, 2, instances=inst, thing_classes=[1],
                           avg_instance_size=M.CITYSCAPES_AVG_INSTANCE_SIZE, class_names=["road", "car"])
    a = M.CITYSCAPES_AVG_INSTANCE_SIZE["car"]
    assert named.iiou[1] == pytest.approx(a / (a + a + 1))
    with pytest.raises(ValueError, match=r"avg_instance_size is missing classes \[1\]"):
        M.instance_iou(gt, pred, 2, instances=inst, avg_instance_size={0: 5.0})


def test_size_bins_and_scaling():
    assert M.size_thresholds((480, 640)) == (1024.0, 9216.0)
    t = M.size_thresholds((1024, 2048), scale_to=(480, 640))
    f = 1024 * 2048 / (480 * 640)
    assert t == pytest.approx((1024 * f, 9216 * f))
    assert [M.size_bin(a, (1024, 9216)) for a in (1023, 1024, 9215, 9216)] == ["small", "medium", "medium", "large"]


# ----------------------------------------------------------------------------- bad input
GOOD = np.zeros((4, 5), np.uint8)


@pytest.mark.parametrize(
    "args, exc, msg",
    [
        ((GOOD, np.zeros((4, 6), np.uint8)), ValueError, "shape mismatch: gt has shape (4, 5) but pred has shape (4, 6)"),
        ((GOOD, GOOD.astype(np.float32)), TypeError, "pred must be an integer label map (uint8/int32/int64 ...), got dtype float32"),
        ((GOOD.astype(bool), GOOD), TypeError, "gt must be an integer label map (uint8/int32/int64 ...), got dtype bool"),
        ((np.zeros((0, 5), np.int64), GOOD), ValueError, "gt is empty (shape (0, 5))"),
        ((np.zeros((2, 3, 4), np.int64), GOOD), ValueError, "gt must be a 2-D (H, W) map, got a 3-D array of shape (2, 3, 4)"),
        ((np.zeros(5, np.int64), GOOD), ValueError, "gt must be a 2-D (H, W) map, got a 1-D array of shape (5,)"),
        ((GOOD.tolist(), GOOD), TypeError, "gt must be a numpy.ndarray, got list"),
    ],
)
def test_bad_input_messages(args, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        M.confusion_matrix(*args, 3)


def test_bad_class_ids_are_listed():
    pred = GOOD.copy()
    pred[0, :3] = [7, 9, 7]
    with pytest.raises(ValueError, match=re.escape("pred_b contains class ids [7, 9] outside 0..2 that are not ignore_index=255")):
        M.compare(GOOD, GOOD, pred, 3)
    gt = GOOD.astype(np.int64)
    gt[1, 1] = -1
    with pytest.raises(ValueError, match=re.escape("gt contains class ids [-1] outside 0..2")):
        M.compare(gt, GOOD, GOOD, 3)
    gt2 = GOOD.astype(np.int64)
    gt2[1, 1] = -1
    assert M.confusion_matrix(gt2, GOOD, 3, ignore_index=-1).sum() == 19  # custom ignore label works


def test_compare_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=re.escape("shape mismatch: gt has shape (4, 5) but pred_a has shape (5, 4)")):
        M.compare(GOOD, GOOD.T.copy(), GOOD, 3)
    with pytest.raises(ValueError, match=re.escape("shape mismatch: gt has shape (4, 5) but instances has shape (4, 4)")):
        M.compare(GOOD, GOOD, GOOD, 3, instances=np.zeros((4, 4), np.int32))


def test_prediction_with_ignore_on_labelled_pixels_is_rejected():
    pred = GOOD.copy()
    pred[0, 0] = IGN
    with pytest.raises(ValueError, match=re.escape("pred contains ignore_index=255 at 1 pixels where gt is labelled")):
        M.confusion_matrix(GOOD, pred, 3)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"thing_classes": [1, 5]}, ValueError, "thing_classes contains class ids [5] outside 0..2"),
        ({"class_names": ["a", "b"]}, ValueError, "class_names has 2 entries but num_classes=3"),
        ({"band_widths": (5, 3)}, ValueError, "band widths must be strictly increasing, got [5, 3]"),
        ({"band_widths": (0, 3)}, ValueError, "band width must be >= 1, got 0"),
        ({"max_distance": 0}, ValueError, "max_distance must be >= 1, got 0"),
        ({"boundary_dilation_ratio": 0}, ValueError, "dilation_ratio must be a positive number, got 0"),
        ({"ignore_index": 1}, ValueError, "ignore_index=1 collides with a valid class id (0..2)"),
        ({"instances": np.zeros((4, 5), np.float64)}, TypeError, "instances must be an integer label map"),
    ],
)
def test_bad_parameters(kwargs, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        M.compare(GOOD, GOOD, GOOD, 3, **kwargs)


def test_bad_num_classes():
    with pytest.raises(ValueError, match=re.escape("num_classes must be in 1..65535, got 0")):
        M.confusion_matrix(GOOD, GOOD, 0)
    with pytest.raises(TypeError, match="num_classes must be an int, got float"):
        M.confusion_matrix(GOOD, GOOD, 3.0)


# ----------------------------------------------------------------------------- dtypes, serialisation, accumulation
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint16])
def test_dtypes_give_identical_results(dtype):
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, (9, 11)).astype(np.int64)
    gt[0] = IGN
    pred = rng.integers(0, 4, (9, 11))
    ref = M.compare(gt.astype(np.uint8), pred.astype(np.uint8), pred.astype(np.uint8), 4).to_dict()
    assert M.compare(gt.astype(dtype), pred.astype(dtype), pred.astype(dtype), 4).to_dict() == ref


def test_many_classes_uint16_path():
    rng = np.random.default_rng(4)
    c = 300
    gt = rng.integers(0, c, (10, 12))
    gt[0, 0] = 65535
    pred = rng.integers(0, c, (10, 12))
    pred[0, 0] = 65535
    r = M.compare(gt, pred, gt, c, ignore_index=65535)
    valid = gt != 65535
    assert r.a.confusion.sum() == valid.sum() and r.a.pixel_accuracy == pytest.approx((pred == gt)[valid].mean())
    assert r.b.miou == 1.0


def test_to_dict_is_json_and_maps_are_optional():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 3, (8, 9))
    a, b = rng.integers(0, 3, (8, 9)), gt.copy()
    r = M.compare(gt, a, b, 4, class_names=["w", "x", "y", "z"], image="img_01")
    d = r.to_dict()
    s = json.dumps(d, allow_nan=False)
    assert "error_map" not in s and "distance_map" not in s and "label_map" not in s and '"map"' not in s
    assert d["a"]["iou"][3] is None and d["image"] == "img_01" and d["objects"][0]["image"] == "img_01"
    full = r.to_dict(include_maps=True)
    assert len(full["a"]["error_map"]) == 8 and len(full["fix_break"]["map"][0]) == 9
    json.dumps(full, allow_nan=False)
    assert isinstance(r.a.error_map, np.ndarray) and r.distance_map.dtype == np.float32
    lean = M.compare(gt, a, b, 4, keep_maps=False)
    assert lean.a.error_map is None and lean.fix_break.map is None and lean.distance_map is None
    assert lean.to_dict() == {**d, "class_names": None, "image": None,
                              "objects": [{**o, "class_name": None, "image": None} for o in d["objects"]]}


def _images(n, seed=11):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = np.kron(rng.integers(0, 4, (4, 5)), np.ones((4, 4), np.int64))
        gt[rng.random(gt.shape) < 0.05] = IGN
        a = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 4, gt.shape))
        b = np.where(rng.random(gt.shape) < 0.9, gt, rng.integers(0, 4, gt.shape))
        out.append((gt, np.where(a == IGN, 0, a), np.where(b == IGN, 0, b)))
    return out


def test_dataset_accumulator_sums_counts_not_means():
    imgs = _images(4)
    results = [M.compare(g, a, b, 4, thing_classes=[1, 2]) for g, a, b in imgs]
    acc = M.ComparisonAccumulator(4)
    for i, r in enumerate(results):
        acc.add(r, image=f"im{i}")
    d = acc.result()
    assert d.n_images == 4
    cm = sum(r.a.confusion for r in results)
    assert d.a.confusion.tolist() == cm.tolist()
    np.testing.assert_allclose(d.a.iou, M.iou_from_confusion(cm), equal_nan=True)
    band = sum(r.b.band.confusions for r in results)
    np.testing.assert_array_equal(d.b.band.confusions, band)
    np.testing.assert_allclose(d.b.band.iou[2], M.iou_from_confusion(band[2]), equal_nan=True)
    inter = sum(r.a.boundary_iou.intersection for r in results)
    union = sum(r.a.boundary_iou.union for r in results)
    np.testing.assert_allclose(d.a.boundary_iou.iou, inter / np.where(union, union, 1) + np.where(union, 0, np.nan))
    assert d.a.error_profile.errors.tolist() == sum(r.a.error_profile.errors for r in results).tolist()
    assert d.fix_break.fixed == sum(r.fix_break.fixed for r in results)
    assert len(d.objects) == sum(len(r.objects) for r in results)
    assert {o.image for o in d.objects} == {f"im{i}" for i in range(4)}
    # dataset iIoU uses dataset-wide mean instance sizes
    cls = np.array([o.class_id for o in d.objects]); area = np.array([o.area for o in d.objects])
    tp = np.array([o.tp_b for o in d.objects])
    ref = M.instance_iou_from_counts(cls, area, tp, d.b.confusion, classes=[1, 2])
    np.testing.assert_allclose(d.b.iiou.iiou, ref.iiou, equal_nan=True)
    json.dumps(d.to_dict(), allow_nan=False)
    assert set(d.summary()) == {"a", "b", "delta"}


def test_accumulator_merge_equals_sequential():
    results = [M.compare(g, a, b, 4) for g, a, b in _images(5, seed=12)]
    seq = M.ComparisonAccumulator(4)
    for r in results:
        seq.add(r)
    left, right = M.ComparisonAccumulator(4), M.ComparisonAccumulator(4)
    for r in results[:2]:
        left.add(r)
    for r in results[2:]:
        right.add(r)
    left.merge(right)
    x, y = seq.result().to_dict(), left.result().to_dict()
    for o in x["objects"] + y["objects"]:
        o.pop("image")
    assert x == y


def test_accumulator_rejects_inconsistent_settings():
    (g, a, b), = _images(1)
    acc = M.ComparisonAccumulator(4)
    acc.add(M.compare(g, a, b, 4))
    with pytest.raises(ValueError, match=re.escape("inconsistent band_widths: [3, 5] vs [3, 5, 8, 12]")):
        acc.add(M.compare(g, a, b, 4, band_widths=(3, 5)))
    with pytest.raises(ValueError, match="result has num_classes=5, accumulator has 4"):
        acc.add(M.compare(g, a, b, 5))
    with pytest.raises(ValueError, match="no images added"):
        M.ComparisonAccumulator(4).result()


def test_confusion_accumulator():
    imgs = _images(3, seed=13)
    acc = M.ConfusionAccumulator(4)
    for g, a, _ in imgs:
        acc.update(g, a)
    cm = sum(M.confusion_matrix(g, a, 4) for g, a, _ in imgs)
    assert acc.matrix.tolist() == cm.tolist() and acc.n_images == 3
    assert acc.miou() == pytest.approx(np.nanmean(M.iou_from_confusion(cm)))
    assert acc.scores().pixel_accuracy == pytest.approx(np.trace(cm) / cm.sum())
    other = M.ConfusionAccumulator(4)
    other.add(cm)
    acc.merge(other)
    assert acc.matrix.tolist() == (2 * cm).tolist()
    acc.reset()
    assert acc.matrix.sum() == 0 and math.isnan(acc.miou())


def test_metrics_do_not_import_torch():
    import subprocess
    import sys

    from pathlib import Path

    code = "import fapn_core.metrics, sys; assert 'torch' not in sys.modules and 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_region_counts_many_class_path_matches_joint_path(monkeypatch):
    import fapn_core.metrics.boundary as B

    (g, a, b), = _images(1, seed=21)
    kw = dict(band_widths=(1, 2, 5), max_distance=4)
    joint = M.compare(g, a, b, 4, **kw).to_dict()
    monkeypatch.setattr(B, "_JOINT_MAX_BINS", 0)
    assert M.compare(g, a, b, 4, **kw).to_dict() == joint


def test_inputs_are_never_modified():
    (g, a, b), = _images(1, seed=31)
    g8, a8, b8 = g.astype(np.uint8), a.astype(np.uint8), b.astype(np.uint8)
    a8[g8 == IGN] = IGN  # prediction carrying the ignore label where the GT is ignored
    inst = (np.arange(g.size).reshape(g.shape) // 7).astype(np.int32)
    copies = [x.copy() for x in (g8, a8, b8, inst)]
    M.compare(g8, a8, b8, 4, instances=inst)
    M.boundary_iou(g8, a8, 4)
    M.boundary_f_score(g8, a8, 4)
    for x, y in zip((g8, a8, b8, inst), copies):
        assert np.array_equal(x, y)
