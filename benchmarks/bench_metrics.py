"""Benchmark of fapn_core.metrics on Cityscapes-sized (1024x2048, 19 classes) synthetic label maps.

Run:  python benchmarks/bench_metrics.py [--repeats 5] [--height 1024 --width 2048]
Single-threaded OpenCV, no torch. Prints the median wall-clock ms and the median process CPU ms
(robust to other processes competing for the cores) per component and for ``compare``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fapn_core.metrics as M  # noqa: E402

NUM_CLASSES = 19
THINGS = (11, 12, 13, 14, 15, 16, 17, 18)


def synthetic_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Street-like GT: sky, buildings, vegetation, road, sidewalk, poles, signs, cars, people, ego-car ignore."""
    rng = np.random.default_rng(seed)
    gt = np.full((h, w), 2, np.uint8)  # building
    xs = np.arange(w)
    sky = (0.25 * h + 0.08 * h * np.sin(xs / w * 9 + rng.uniform(0, 6))).astype(int)
    gt[np.arange(h)[:, None] < sky[None, :]] = 10
    for _ in range(6):  # vegetation blobs
        cv2.ellipse(gt, (int(rng.uniform(0, w)), int(rng.uniform(0.2, 0.5) * h)),
                    (int(rng.uniform(60, 220)), int(rng.uniform(40, 140))), 0, 0, 360, 8, -1)
    horizon = int(0.55 * h)
    road = np.array([[0, h], [w, h], [int(0.62 * w), horizon], [int(0.38 * w), horizon]], np.int32)
    gt[horizon:] = 1  # sidewalk
    cv2.fillPoly(gt, [road], 0)
    gt[horizon - 8 : horizon, :] = 9  # terrain strip
    for _ in range(25):  # poles with signs
        x = int(rng.uniform(0, w)); top = int(rng.uniform(0.2, 0.45) * h)
        cv2.rectangle(gt, (x, top), (x + int(rng.integers(3, 9)), horizon + int(rng.integers(0, 40))), 5, -1)
        if rng.random() < 0.5:
            cv2.rectangle(gt, (x - 12, top), (x + 18, top + 24), 7, -1)
    for _ in range(30):  # cars
        y = int(rng.uniform(horizon, 0.9 * h)); s = (y - horizon) / (0.45 * h) + 0.15
        x = int(rng.uniform(0, w)); cw, ch = int(260 * s), int(120 * s)
        cv2.rectangle(gt, (x, y - ch), (x + cw, y), 13, -1)
    for _ in range(40):  # people
        y = int(rng.uniform(horizon, 0.85 * h)); s = (y - horizon) / (0.45 * h) + 0.1
        cv2.ellipse(gt, (int(rng.uniform(0, w)), y), (max(2, int(18 * s)), max(4, int(55 * s))), 0, 0, 360, 11, -1)
    cv2.ellipse(gt, (w // 2, h + int(0.05 * h)), (int(0.45 * w), int(0.14 * h)), 0, 0, 360, 255, -1)  # ego car
    return gt


def perturb(gt: np.ndarray, amplitude: float, drop: float, seed: int) -> np.ndarray:
    """Prediction-like map: smooth boundary warp, dropped small objects, a few false blobs."""
    rng = np.random.default_rng(seed)
    h, w = gt.shape
    flow = [cv2.resize(rng.normal(0, amplitude, (h // 64, w // 64)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC) for _ in range(2)]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    pred = cv2.remap(gt, xx + flow[0], yy + flow[1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    n, lab, stats, _ = cv2.connectedComponentsWithStats((pred == 11).view(np.uint8), connectivity=8)
    for i in range(1, n):
        if rng.random() < drop:
            pred[lab == i] = 1
    for _ in range(20):
        cv2.circle(pred, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.integers(3, 25)),
                   int(rng.integers(0, NUM_CLASSES)), -1)
    pred[pred == 255] = 0  # models never predict ignore
    return pred


def median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) over ``repeats`` runs after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    h, w, c = args.height, args.width, NUM_CLASSES
    gt = synthetic_scene(h, w)
    a = perturb(gt, amplitude=4.0, drop=0.3, seed=1)  # "FPN"
    b = perturb(gt, amplitude=2.0, drop=0.1, seed=2)  # "FaPN"
    objs = M.extract_objects(gt, c)
    rows = [
        ("confusion matrix + IoU", lambda: M.segmentation_scores(gt, a, c)),
        ("trimap bands 3/5/8/12 (incl. GT distance transform)", lambda: M.trimap_scores(gt, a, c)),
        ("boundary IoU (d = 0.02 diag)", lambda: M.boundary_iou(gt, a, c)),
        ("boundary F-score (tol 3 px)", lambda: M.boundary_f_score(gt, a, c)),
        ("error vs distance", lambda: M.error_vs_distance(gt, a, c)),
        ("fix/break map (A vs B)", lambda: M.fix_break(gt, a, b, c)),
        ("objects: connected components, all classes", lambda: M.extract_objects(gt, c)),
        ("objects: score one prediction", lambda: M.score_objects(gt, a, c, objs)),
        ("compare(gt, A, B) all classes as objects", lambda: M.compare(gt, a, b, c)),
        ("compare(gt, A, B) thing classes 11-18", lambda: M.compare(gt, a, b, c, thing_classes=THINGS)),
    ]
    r = M.compare(gt, a, b, c)
    print(f"fapn_core.metrics benchmark: {h}x{w}, {c} classes, {len(objs)} GT objects "
          f"(all classes), cv2 threads={cv2.getNumThreads()}, median of {args.repeats}")
    print(f"{'component':<58}{'wall ms':>9}{'cpu ms':>9}")
    print("-" * 76)
    for name, fn in rows:
        wall, cpu = median_ms(fn, args.repeats)
        print(f"{name:<58}{wall:>9.1f}{cpu:>9.1f}")
    print("-" * 76)
    s = r.summary()
    print("sanity: mIoU A/B = {:.3f}/{:.3f}, band-3px mIoU A/B = {:.3f}/{:.3f}, fixed/broken = {}/{}".format(
        s["a"]["miou"], s["b"]["miou"], s["a"]["band_miou_3px"], s["b"]["band_miou_3px"],
        r.fix_break.fixed, r.fix_break.broken))
    print("torch imported:", "torch" in sys.modules)


if __name__ == "__main__":
    main()
