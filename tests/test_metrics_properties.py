"""Property-based tests (hypothesis) for fapn_core.metrics."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fapn_core.metrics as M

IGN = 255
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenes(draw, with_ignore=True):
    """(gt, pred_a, pred_b, num_classes) on small blocky maps; preds never hold ignore on labelled pixels."""
    c = draw(st.integers(2, 5))
    h, w = draw(st.integers(3, 14)), draw(st.integers(3, 14))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    block = draw(st.integers(1, 5))
    small = rng.integers(0, c, (h // block + 1, w // block + 1))
    gt = np.kron(small, np.ones((block, block), np.int64))[:h, :w]
    if with_ignore and draw(st.booleans()):
        gt[rng.random((h, w)) < draw(st.floats(0.0, 0.5))] = IGN
    preds = []
    for _ in range(2):
        p = np.where(rng.random((h, w)) < draw(st.floats(0.0, 1.0)), gt, rng.integers(0, c, (h, w)))
        preds.append(np.where(p == IGN, 0, p))
    return gt, preds[0], preds[1], c


def _defined(x):
    a = np.asarray(x, float).ravel()
    return a[~np.isnan(a)]


@SETTINGS
@given(scenes())
def test_perfect_prediction_scores_one_everywhere_defined(scene):
    gt, _, _, c = scene
    perfect = np.where(gt == IGN, 0, gt)
    r = M.compare(gt, perfect, perfect, c, band_widths=(1, 2, 3), boundary_tolerance=0)
    m = r.a
    for arr in (m.iou, m.band.iou, m.boundary_iou.iou, m.boundary_f.f, m.boundary_f.precision,
                m.boundary_f.recall, m.iiou.iiou, m.class_accuracy):
        assert np.all(_defined(arr) == 1.0)
    for v in (m.band.mean_miou, m.boundary_f.mean_f):  # NaN when the GT has no boundary at all
        assert math.isnan(v) or v == 1.0
    for v in (m.miou, m.pixel_accuracy, m.boundary_iou.mean, m.iiou.mean):  # NaN only without labelled pixels
        assert math.isnan(v) == bool((gt == IGN).all()) and (math.isnan(v) or v == 1.0)
    assert m.error_profile.errors.sum() == 0 and not m.error_map.any()
    assert all(o.iou_a == 1.0 and o.recall_a == 1.0 and o.hit_a for o in r.objects)
    assert r.fix_break.fixed == r.fix_break.broken == 0


@SETTINGS
@given(scenes(), st.lists(st.integers(1, 15), min_size=2, max_size=5, unique=True))
def test_band_grows_monotonically_with_width(scene, widths):
    gt, a, _, c = scene
    widths = sorted(widths)
    masks = [M.band_mask(gt, w) for w in widths]
    for small, big in zip(masks, masks[1:]):
        assert not (small & ~big).any()
    bs = M.trimap_scores(gt, a, c, widths=widths)
    assert np.all(np.diff(bs.pixels) >= 0)
    assert bs.pixels.tolist() == [int((m & (gt != IGN)).sum()) for m in masks]


@SETTINGS
@given(scenes(), st.randoms(use_true_random=False))
def test_permuting_class_ids_permutes_per_class_results(scene, rnd):
    gt, a, b, c = scene
    perm = list(range(c))
    rnd.shuffle(perm)
    lut = np.arange(256)
    lut[:c] = perm
    r1 = M.compare(gt, a, b, c, boundary_dilation_ratio=0.1)
    r2 = M.compare(lut[gt], lut[a], lut[b], c, boundary_dilation_ratio=0.1)
    p = np.array(perm)
    for m in ("a", "b"):
        x, y = getattr(r1, m), getattr(r2, m)
        for f in (lambda s: s.iou, lambda s: s.boundary_iou.iou, lambda s: s.boundary_f.f,
                  lambda s: s.iiou.iiou, lambda s: s.class_accuracy):
            np.testing.assert_array_equal(f(y)[p], f(x))
        np.testing.assert_array_equal(y.band.iou[:, p], x.band.iou)
        np.testing.assert_array_equal(y.confusion[np.ix_(p, p)], x.confusion)
        np.testing.assert_allclose(y.miou, x.miou, rtol=1e-12, equal_nan=True)  # summation order differs
        np.testing.assert_array_equal(y.error_profile.errors, x.error_profile.errors)

    def key(o):
        return (o.area, tuple(o.bbox), o.tp_a, o.tp_b, round(o.iou_a, 12), round(o.iou_b, 12))

    before = sorted((perm[o.class_id],) + key(o) for o in r1.objects)
    assert before == sorted((o.class_id,) + key(o) for o in r2.objects)


@SETTINGS
@given(scenes(), st.integers(0, 2**32 - 1), st.booleans())
def test_prediction_at_ignore_pixels_never_counts(scene, seed, use_ignore_label):
    gt, a, b, c = scene
    rng = np.random.default_rng(seed)
    ign = gt == IGN
    fill = np.full(gt.shape, IGN) if use_ignore_label else rng.integers(0, c, gt.shape)
    a2, b2 = np.where(ign, fill, a), np.where(ign, rng.integers(0, c, gt.shape), b)
    kw = dict(boundary_dilation_ratio=0.1, boundary_tolerance=2, band_widths=(1, 3))
    r1, r2 = M.compare(gt, a, b, c, **kw), M.compare(gt, a2, b2, c, **kw)
    assert r1.to_dict() == r2.to_dict()
    assert np.array_equal(r1.fix_break.map, r2.fix_break.map)
    assert np.array_equal(r1.a.error_map, r2.a.error_map)
    assert not r1.a.error_map[ign].any() and not r1.fix_break.map[ign].any()


@SETTINGS
@given(scenes(with_ignore=False))
def test_single_image_accumulator_equals_image_result(scene):
    gt, a, b, c = scene
    r = M.compare(gt, a, b, c)
    acc = M.ComparisonAccumulator(c)
    acc.add(r, image="x")
    d = acc.result()
    for m in ("a", "b"):
        x, y = getattr(r, m), getattr(d, m)
        np.testing.assert_array_equal(x.band.iou, y.band.iou)
        np.testing.assert_array_equal(x.boundary_iou.iou, y.boundary_iou.iou)
        np.testing.assert_array_equal(x.boundary_f.f, y.boundary_f.f)
        np.testing.assert_allclose(x.iiou.iiou, y.iiou.iiou, rtol=1e-12, equal_nan=True)
        assert x.summary() == y.summary() or np.allclose(
            [v if v is not None else np.nan for v in x.summary().values()],
            [v if v is not None else np.nan for v in y.summary().values()], equal_nan=True)
    assert all(o.image == "x" for o in d.objects)
