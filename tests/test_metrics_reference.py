"""fapn_core.metrics against independent brute-force references (plain Python loops over pixels)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

import fapn_core.metrics as M
from fapn_core.metrics._validate import masked_pred, prepare_gt, prepare_pred
from fapn_core.metrics.boundary import boundary_f_counts

IGN = 255
NB8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


# ----------------------------------------------------------------------------- brute-force references
def ref_confusion(gt, pred, c):
    cm = [[0] * c for _ in range(c)]
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            if gt[y, x] != IGN:
                cm[gt[y, x]][pred[y, x]] += 1
    return cm


def ref_iou(cm):
    c = len(cm)
    out = []
    for k in range(c):
        tp = cm[k][k]
        den = sum(cm[k]) + sum(cm[i][k] for i in range(c)) - tp
        out.append(tp / den if den else math.nan)
    return out


def ref_boundary_pixels(lab):
    h, w = lab.shape
    pts = []
    for y in range(h):
        for x in range(w):
            for dy, dx in NB8:
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and lab[yy, xx] != lab[y, x]:
                    pts.append((y, x))
                    break
    return pts


def ref_distance(gt):
    pts = ref_boundary_pixels(gt)
    h, w = gt.shape
    d = np.full((h, w), math.inf)
    for y in range(h):
        for x in range(w):
            for by, bx in pts:
                d[y, x] = min(d[y, x], math.sqrt((y - by) ** 2 + (x - bx) ** 2))
    return d


def ref_band_iou(gt, pred, c, width):
    d = ref_distance(gt)
    cm = [[0] * c for _ in range(c)]
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            if gt[y, x] != IGN and d[y, x] < width:
                cm[gt[y, x]][pred[y, x]] += 1
    return ref_iou(cm), sum(map(sum, cm))


def ref_contour_region(lab, cls, d):
    """Pixels of class ``cls`` with a non-``cls`` pixel (or the outside) within chessboard distance d."""
    h, w = lab.shape
    out = set()
    for y in range(h):
        for x in range(w):
            if lab[y, x] != cls:
                continue
            hit = False
            for dy in range(-d, d + 1):
                for dx in range(-d, d + 1):
                    yy, xx = y + dy, x + dx
                    if not (0 <= yy < h and 0 <= xx < w) or lab[yy, xx] != cls:
                        hit = True
            if hit:
                out.add((y, x))
    return out


def ref_boundary_iou(gt, pred, c, d):
    pm = np.where(gt == IGN, IGN, pred)
    res = []
    for k in range(c):
        g, p = ref_contour_region(gt, k, d), ref_contour_region(pm, k, d)
        u = len(g | p)
        res.append(len(g & p) / u if u else math.nan)
    return res


def reference_mask_to_boundary(mask, dilation):
    """Transcription of boundary-iou-api ``mask_to_boundary`` (Cheng et al.) with a given dilation."""
    h, w = mask.shape
    new_mask = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    new_mask_erode = cv2.erode(new_mask, np.ones((3, 3), np.uint8), iterations=dilation)
    return mask - new_mask_erode[1 : h + 1, 1 : w + 1]


def ref_error_profile(gt, pred, n):
    d = ref_distance(gt)
    pix, err = [0] * (n + 1), [0] * (n + 1)
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            if gt[y, x] == IGN:
                continue
            k = n if d[y, x] == math.inf else min(int(math.floor(d[y, x])), n)
            pix[k] += 1
            err[k] += int(pred[y, x] != gt[y, x])
    return pix, err


def ref_components(gt, classes):
    """8-connected components per class via flood fill: list of (class, frozenset of pixels)."""
    h, w = gt.shape
    seen = np.zeros((h, w), bool)
    comps = []
    for y in range(h):
        for x in range(w):
            c = gt[y, x]
            if seen[y, x] or c == IGN or c not in classes:
                continue
            stack, pix = [(y, x)], set()
            seen[y, x] = True
            while stack:
                py, px = stack.pop()
                pix.add((py, px))
                for dy, dx in NB8:
                    yy, xx = py + dy, px + dx
                    if 0 <= yy < h and 0 <= xx < w and not seen[yy, xx] and gt[yy, xx] == c:
                        seen[yy, xx] = True
                        stack.append((yy, xx))
            comps.append((int(c), frozenset(pix)))
    return comps


def ref_object_score(gt, pred, cls, pix, margin):
    ys = [p[0] for p in pix]
    xs = [p[1] for p in pix]
    h, w = gt.shape
    y0, y1 = max(0, min(ys) - margin), min(h, max(ys) + 1 + margin)
    x0, x1 = max(0, min(xs) - margin), min(w, max(xs) + 1 + margin)
    tp = sum(1 for (y, x) in pix if pred[y, x] == cls)
    fp = 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            if (y, x) not in pix and pred[y, x] == cls and gt[y, x] != IGN and gt[y, x] != cls:
                fp += 1
    bbox = (min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)
    return tp, fp, tp / (len(pix) + fp), bbox


def ref_inner_boundary(lab):
    """{class: [(y, x), ...]} inner contour pixels of each class mask (image border excluded)."""
    out: dict[int, list] = {}
    for y, x in ref_boundary_pixels(lab):
        if lab[y, x] != IGN:
            out.setdefault(int(lab[y, x]), []).append((y, x))
    return out


def ref_boundary_f(gt, pred, c, tol):
    pm = np.where(gt == IGN, IGN, pred)
    gb, pb = ref_inner_boundary(gt), ref_inner_boundary(pm)

    def matched(src, dst):
        return sum(1 for (y, x) in src if any((y - v) ** 2 + (x - u) ** 2 <= tol * tol for (v, u) in dst))

    rows = []
    for k in range(c):
        g, p = gb.get(k, []), pb.get(k, [])
        rows.append((len(p), matched(p, g), len(g), matched(g, p)))
    return np.array(rows).T


def random_map(rng, h=12, w=15, c=4, ignore_frac=0.1, block=3):
    small = rng.integers(0, c, (h // block + 2, w // block + 2))
    m = np.kron(small, np.ones((block, block), np.int64))[:h, :w]
    noise = rng.random((h, w)) < 0.12
    m[noise] = rng.integers(0, c, noise.sum())
    if ignore_frac:
        m[rng.random((h, w)) < ignore_frac] = IGN
    return m.astype(np.int64)


def random_pred(rng, gt, c):
    p = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, c, gt.shape))
    p = np.where(p == IGN, rng.integers(0, c, gt.shape), p)
    return p.astype(np.int64)


SEEDS = list(range(12))


def nan_equal(a, b):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=0, atol=1e-12, equal_nan=True)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_and_iou_match_reference(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 6))
    gt = random_map(rng, c=c)
    pred = random_pred(rng, gt, c)
    cm = M.confusion_matrix(gt, pred, c)
    ref = ref_confusion(gt, pred, c)
    assert cm.dtype == np.int64 and cm.tolist() == ref
    nan_equal(M.iou_from_confusion(cm), ref_iou(ref))
    s = M.segmentation_scores(gt, pred, c)
    valid = gt != IGN
    assert s.pixel_accuracy == pytest.approx(np.mean(pred[valid] == gt[valid]))


@pytest.mark.parametrize("seed", SEEDS)
def test_band_membership_and_band_iou_match_reference(seed):
    rng = np.random.default_rng(100 + seed)
    c = int(rng.integers(2, 5))
    gt = random_map(rng, c=c, block=int(rng.integers(2, 6)))
    pred = random_pred(rng, gt, c)
    d_ref = ref_distance(gt)
    d = M.distance_to_boundary(gt)
    assert np.array_equal(np.isinf(d), np.isinf(d_ref))
    fin = np.isfinite(d_ref)
    np.testing.assert_allclose(d[fin], d_ref[fin], atol=1e-4)
    assert np.array_equal(M.label_boundary(gt), d_ref == 0)
    widths = (1, 2, 3, 5)
    bs = M.trimap_scores(gt, pred, c, widths=widths)
    for i, w in enumerate(widths):
        assert np.array_equal(M.band_mask(gt, w), d_ref < w)
        iou_ref, npix = ref_band_iou(gt, pred, c, w)
        assert bs.pixels[i] == npix
        nan_equal(bs.iou[i], iou_ref)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", [0.02, 0.1, 0.15])
def test_boundary_iou_matches_reference(seed, ratio):
    rng = np.random.default_rng(200 + seed)
    c = int(rng.integers(2, 5))
    gt = random_map(rng, c=c, block=int(rng.integers(2, 6)))
    pred = random_pred(rng, gt, c)
    d = M.boundary_dilation(gt.shape, ratio)
    assert d == max(1, int(round(ratio * math.hypot(*gt.shape))))
    res = M.boundary_iou(gt, pred, c, dilation_ratio=ratio)
    assert res.dilation == d
    nan_equal(res.iou, ref_boundary_iou(gt, pred, c, d))
    # and against the reference implementation's mask_to_boundary (erosion with zero padding)
    pm = np.where(gt == IGN, IGN, pred)
    for k in range(c):
        g = reference_mask_to_boundary((gt == k).astype(np.uint8), d).astype(bool)
        p = reference_mask_to_boundary((pm == k).astype(np.uint8), d).astype(bool)
        u = (g | p).sum()
        expect = (g & p).sum() / u if u else math.nan
        nan_equal([res.iou[k]], [expect])


@pytest.mark.parametrize("seed", SEEDS)
def test_error_vs_distance_matches_reference(seed):
    rng = np.random.default_rng(300 + seed)
    c = int(rng.integers(2, 5))
    gt = random_map(rng, c=c, block=int(rng.integers(2, 7)))
    pred = random_pred(rng, gt, c)
    n = int(rng.integers(1, 6))
    prof = M.error_vs_distance(gt, pred, c, max_distance=n)
    pix, err = ref_error_profile(gt, pred, n)
    assert prof.pixels.tolist() == pix and prof.errors.tolist() == err
    assert prof.bins[-1] == f">={n}" and len(prof.bins) == n + 1
    em = M.error_map(gt, pred, c)
    assert np.array_equal(em, (gt != IGN) & (pred != gt))


@pytest.mark.parametrize("seed", SEEDS)
def test_components_and_object_scores_match_reference(seed):
    rng = np.random.default_rng(400 + seed)
    c = int(rng.integers(2, 5))
    gt = random_map(rng, c=c, block=int(rng.integers(2, 5)))
    pred = random_pred(rng, gt, c)
    things = sorted(rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False).tolist())
    margin = int(rng.integers(0, 4))
    objs = M.extract_objects(gt, c, thing_classes=things)
    sc = M.score_objects(gt, pred, c, objs, margin=margin)
    ref = ref_components(gt, things)
    got = {}
    for i in range(len(objs)):
        pix = frozenset(zip(*np.nonzero(objs.label_map == i + 1)))
        got[pix] = i
    assert set(got) == {p for _, p in ref}
    for cls, pix in ref:
        i = got[pix]
        tp, fp, iou, bbox = ref_object_score(gt, pred, cls, pix, margin)
        assert objs.class_ids[i] == cls and objs.areas[i] == len(pix)
        assert tuple(objs.bboxes[i]) == bbox
        assert (sc.tp[i], sc.fp[i]) == (tp, fp)
        assert sc.iou[i] == pytest.approx(iou)
        assert sc.recall[i] == pytest.approx(tp / len(pix))
        assert sc.hit[i] == (tp / len(pix) >= 0.5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tol", [0, 1, 2, 3])
def test_boundary_f_matches_reference_both_methods(seed, tol):
    rng = np.random.default_rng(500 + seed)
    c = int(rng.integers(2, 5))
    gt = random_map(rng, c=c, block=int(rng.integers(2, 6)))
    pred = random_pred(rng, gt, c)
    ref = ref_boundary_f(gt, pred, c, tol)
    prep = prepare_gt(gt, c, IGN)
    pm = masked_pred(prepare_pred(pred, prep), prep)
    for method in ("gather", "dt"):
        got = np.array(boundary_f_counts(prep, pm, tol, method=method))
        assert got.tolist() == ref.tolist(), method
    bf = M.boundary_f_score(gt, pred, c, tolerance=tol)
    assert np.array([bf.pred_total, bf.pred_matched, bf.gt_total, bf.gt_matched]).tolist() == ref.tolist()


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_iiou_matches_reference(seed):
    rng = np.random.default_rng(600 + seed)
    c = 4
    gt = random_map(rng, c=c, block=3)
    pred = random_pred(rng, gt, c)
    things = [1, 3]
    res = M.instance_iou(gt, pred, c, thing_classes=things)
    comps = ref_components(gt, things)
    for k in range(c):
        if k not in things:
            assert math.isnan(res.iiou[k])
            continue
        objs = [p for cls, p in comps if cls == k]
        fp = sum(1 for y in range(gt.shape[0]) for x in range(gt.shape[1])
                 if gt[y, x] not in (IGN, k) and pred[y, x] == k)
        if not objs:
            expect = 0.0 if fp else math.nan
        else:
            avg = sum(len(p) for p in objs) / len(objs)
            tpw = sum(sum(pred[y, x] == k for y, x in p) * avg / len(p) for p in objs)
            fnw = sum(sum(pred[y, x] != k for y, x in p) * avg / len(p) for p in objs)
            expect = tpw / (tpw + fnw + fp)
        nan_equal([res.iiou[k]], [expect])


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_compare_agrees_with_individual_functions(seed):
    rng = np.random.default_rng(700 + seed)
    c = 4
    gt = random_map(rng, c=c)
    a, b = random_pred(rng, gt, c), random_pred(rng, gt, c)
    r = M.compare(gt, a, b, c, band_widths=(1, 2, 4), max_distance=3, boundary_tolerance=2,
                  boundary_dilation_ratio=0.1)
    for name, p in (("a", a), ("b", b)):
        mr = getattr(r, name)
        assert mr.confusion.tolist() == ref_confusion(gt, p, c)
        nan_equal(mr.band.iou, M.trimap_scores(gt, p, c, widths=(1, 2, 4)).iou)
        nan_equal(mr.boundary_iou.iou, ref_boundary_iou(gt, p, c, M.boundary_dilation(gt.shape, 0.1)))
        assert mr.error_profile.errors.tolist() == ref_error_profile(gt, p, 3)[1]
        assert mr.boundary_f.pred_matched.tolist() == ref_boundary_f(gt, p, c, 2)[1].tolist()
    ea, eb = (gt != IGN) & (a != gt), (gt != IGN) & (b != gt)
    assert r.fix_break.fixed == int((ea & ~eb).sum()) and r.fix_break.broken == int((eb & ~ea).sum())
    assert np.array_equal(r.fix_break.map, (ea & ~eb).astype(np.int8) - (eb & ~ea).astype(np.int8))
