"""Cityscapes-style test data and the official evaluator as an oracle (test helper, not a test module).

``write_cityscapes`` writes ``leftImg8bit`` / ``gtFine`` (labelIds + instanceIds) scenes holding all 19
evaluated classes, void label ids (unlabeled, ego vehicle, border, parking, guard rail, polegroup, ...),
thing instances of varied sizes that occlude each other, group regions (instance id = labelId, e.g. 26 =
a group of cars), and caravan / trailer instances (ignored in evaluation). ``perturb`` derives label-id
predictions with boundary shifts, class swaps, dropped instances, blobs and void label ids.
``official`` runs cityscapesScripts' ``evalPixelLevelSemanticLabeling`` on a prediction folder.
"""

from __future__ import annotations

import contextlib
import glob
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fapn_core.data.cityscapes import LABEL_ID_TO_TRAIN_ID

STUFF_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23)  # road .. sky (evaluated, no instances)
VOID_IDS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18)  # ignored in evaluation
THING_IDS = (24, 25, 26, 27, 28, 31, 32, 33)  # person .. bicycle (evaluated instances)
IGNORED_THING_IDS = (29, 30)  # caravan, trailer: instances, ignored in evaluation
GROUP_IDS = (24, 26, 33)  # persongroup, cargroup, bicyclegroup regions (instance id = labelId)
CITIES = ("aachen", "bonn", "zurich")


def _colour(label_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lut = np.random.default_rng(7).integers(0, 256, (256, 3)).astype(np.int16)
    img = lut[label_ids] + rng.integers(-25, 26, label_ids.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_scene(rng: np.random.Generator, h: int = 128, w: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image, labelIds uint8, instanceIds int32) of one street-like scene."""
    lab = np.full((h, w), 23, np.uint8)  # sky
    horizon = int(h * rng.uniform(0.3, 0.45))
    lab[horizon:] = 7  # road
    x = 0
    while x < w:  # facades and trees along the horizon
        bw = int(rng.integers(12, 60))
        top = int(rng.integers(5, horizon))
        lab[top:horizon + 4, x:x + bw] = rng.choice([11, 11, 12, 21, 15, 16])
        x += bw
    lab[horizon + 2:horizon + 10] = 8  # sidewalk
    lab[horizon + 10:horizon + 12, : w // 2] = 13  # fence rail
    lab[horizon + 5:horizon + 9, w // 2:] = rng.choice([22, 9, 10])  # terrain / parking / rail track
    lab[horizon + 12:horizon + 16, w // 3:] = 14  # guard rail (void)
    for _ in range(int(rng.integers(2, 5))):  # poles with lights and signs
        px = int(rng.integers(2, w - 4))
        pw = int(rng.integers(1, 4))
        lab[int(rng.integers(3, horizon)):horizon + 10, px:px + pw] = rng.choice([17, 17, 18])
        sy = int(rng.integers(3, horizon))
        lab[sy:sy + int(rng.integers(2, 7)), px - 1:px + int(rng.integers(3, 8))] = rng.choice([19, 20])
    inst = lab.astype(np.int32).copy()
    # things (and ignored caravan/trailer) back to front, so nearer objects hide farther ones
    objs = []
    for lid in THING_IDS + IGNORED_THING_IDS:
        for _ in range(int(rng.integers(1, 4))):
            objs.append((float(rng.uniform(0, 1)), lid))
    counters: dict[int, int] = {}
    for depth, lid in sorted(objs):
        size = int(2 + depth ** 2 * 40 + rng.integers(0, 6))  # 2 .. ~47 px: tiny to large objects
        oh, ow = (size * 2, max(1, size // 2 + 1)) if lid in (24, 25) else (size, size * 2)
        cy = int(rng.integers(horizon, h)) if rng.uniform() < 0.8 else int(rng.integers(0, h))
        cx = int(rng.integers(0, w))
        m = np.zeros((h, w), np.uint8)
        if rng.uniform() < 0.5:
            cv2.ellipse(m, (cx, cy), (max(1, ow // 2), max(1, oh // 2)), 0, 0, 360, 1, -1)
        else:
            m[max(0, cy - oh // 2):cy + oh // 2 + 1, max(0, cx - ow // 2):cx + ow // 2 + 1] = 1
        k = counters.get(lid, 0)
        counters[lid] = k + 1
        lab[m > 0] = lid
        inst[m > 0] = lid * 1000 + k
    for lid in GROUP_IDS:  # group regions: the class, no instance id
        if rng.uniform() < 0.8:
            y0, x0 = int(rng.integers(horizon, h - 8)), int(rng.integers(0, w - 20))
            gh, gw = int(rng.integers(4, 14)), int(rng.integers(8, 30))
            lab[y0:y0 + gh, x0:x0 + gw] = lid
            inst[y0:y0 + gh, x0:x0 + gw] = lid
    for lid in (0, 4, 5, 6):  # unlabeled / static / dynamic / ground blobs
        y0, x0 = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
        lab[y0:y0 + int(rng.integers(2, 8)), x0:x0 + int(rng.integers(2, 12))] = lid
    lab[h - int(rng.integers(6, 14)):] = 1  # ego vehicle
    lab[:, :2] = 2  # rectification border
    lab[:2] = 3  # out of roi
    void = np.isin(lab, VOID_IDS)
    inst[void] = lab[void]  # as in Cityscapes: non-instance pixels hold their labelId
    return _colour(lab, rng), lab, inst


def perturb(rng: np.random.Generator, label_ids: np.ndarray, inst: np.ndarray, strength: float) -> np.ndarray:
    """A label-id prediction of a scene: shifts, swaps, dropped instances, blobs and void label ids."""
    h, w = label_ids.shape
    pred = label_ids.copy()
    void = np.isin(pred, VOID_IDS + IGNORED_THING_IDS)
    pred[void] = rng.choice(STUFF_IDS + THING_IDS)  # a model predicts a class there
    dy, dx = (int(v) for v in rng.integers(-2, 3, 2))
    pred = np.roll(pred, (dy, dx), axis=(0, 1))  # boundaries off by a few px
    for iid in np.unique(inst[inst >= 1000]):
        r = rng.uniform()
        m = inst == iid
        if r < 0.25 * strength:
            pred[m] = 7  # missed object
        elif r < 0.45 * strength:
            pred[m] = rng.choice(THING_IDS)  # wrong thing class
        elif r < 0.6 * strength:
            pred[m & (rng.uniform(size=m.shape) < 0.5)] = 21  # half-found
    for _ in range(int(6 * strength)):  # blobs of a random class (false positives), some void label ids
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        cls = rng.choice(STUFF_IDS + THING_IDS + (0, 4, 9, 29))
        pred[y0:y0 + int(rng.integers(2, 16)), x0:x0 + int(rng.integers(2, 30))] = cls
    return pred.astype(np.uint8)


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    lut = np.full(256, 255, np.uint8)
    for k, v in LABEL_ID_TO_TRAIN_ID.items():
        lut[k] = v
    return lut[label_ids]


def sample_base(i: int) -> tuple[str, str]:
    city = CITIES[i % len(CITIES)]
    return city, f"{city}_{i // len(CITIES):06d}_{19 + i:06d}"


def write_cityscapes(root: Path, n: int = 12, seed: int = 0, size: tuple[int, int] = (128, 256),
                     strengths: tuple[float, ...] = (0.6, 1.4)) -> dict:
    """Scenes under ``root`` (split val) and label-id predictions per strength (numpy, not written)."""
    rng = np.random.default_rng(seed)
    preds: list[list[np.ndarray]] = [[] for _ in strengths]
    bases = []
    for i in range(n):
        img, lab, inst = make_scene(rng, *size)
        city, base = sample_base(i)
        d_img, d_gt = root / "leftImg8bit" / "val" / city, root / "gtFine" / "val" / city
        d_img.mkdir(parents=True, exist_ok=True)
        d_gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d_img / f"{base}_leftImg8bit.png")
        Image.fromarray(lab).save(d_gt / f"{base}_gtFine_labelIds.png")
        Image.fromarray(inst.astype(np.uint16)).save(d_gt / f"{base}_gtFine_instanceIds.png")
        for j, s in enumerate(strengths):
            preds[j].append(perturb(rng, lab, inst, s))
        bases.append((city, base))
    return {"bases": bases, "preds": preds}


def write_predictions(out: Path, bases: list[tuple[str, str]], preds: list[np.ndarray], *,
                      suffix: str = "_pred", train_ids: bool = False, city_dirs: bool = False) -> Path:
    """PNG files ``<base><suffix>.png`` (label ids, or train ids with 255 = void)."""
    for (city, base), p in zip(bases, preds):
        d = out / city if city_dirs else out
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_train_ids(p) if train_ids else p).save(d / f"{base}{suffix}.png")
    return out


def official(root: Path, pred_dir: Path) -> dict:
    """The official evaluator's result dict (``classScores``, ``classInstScores``, ``confMatrix``, ...)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    args = ev.args
    args.predictionPath, args.predictionWalk = str(pred_dir), None
    args.quiet, args.JSONOutput, args.evalInstLevelScore, args.evalPixelAccuracy = True, False, True, False
    gts = sorted(glob.glob(str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")))
    restore = getattr(np, "in1d", None)
    if restore is None:  # removed in numpy 2.4; the evaluator still calls it
        np.in1d = np.isin  # type: ignore[attr-defined]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            preds = [ev.getPrediction(args, g) for g in gts]
            return ev.evaluateImgLists(preds, gts, args)
    finally:
        if restore is None:
            del np.in1d
