"""Does the bundled FaPN's FAM align features or sample context? Per-level numbers over held-out scenes.

python scripts/fam_alignment.py [--n 20] [--radius 3] [--fapn fapn_r18_semfpn] [--fpn fpn_r18_semfpn]

For each FaPN level: share of cells with a confident displacement estimate, the estimated misalignment between
the upsampled and the lateral feature (median |d|, feature px), the learned mean offset (median |offset|), their
endpoint error and cosine (overall / within 8 px of a boundary / away), the best-agreeing group, and the cosine
similarity of the top-down feature to the lateral one before and after the FAM; for FPN, the similarity of its
nearest-upsampled top-down feature to its lateral conv output. Means over images (see fapn_core/alignment.py).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from tqdm import tqdm

from fapn_core.alignment import align_level, fpn_topdown, similarity, summarize
from fapn_core.checkpoints import resolve_model
from fapn_core.data import open_dataset
from fapn_core.introspect import predict_with_captures


def fpn_similarity(model, image: np.ndarray) -> dict[str, float]:
    """Mean cosine of an FPN's nearest-upsampled top-down feature to its lateral conv output, per level."""
    lats: dict[str, torch.Tensor] = {}
    hooks = [getattr(model.neck, f"lateral{lvl}").register_forward_hook(
        lambda m, i, o, lvl=lvl: lats.__setitem__(f"p{lvl}", o[0].detach().float().cpu())) for lvl in (2, 3, 4, 5)]
    try:
        model.predict(image)
    finally:
        for h in hooks:
            h.remove()
    td = fpn_topdown({k: v.numpy() for k, v in lats.items()})
    return {lvl: float(similarity(lats[lvl].numpy(), td[lvl]).mean()) for lvl in td}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--radius", type=int, default=3)
    ap.add_argument("--data", default="synthetic:n={n},seed=2")
    ap.add_argument("--fapn", default="fapn_r18_semfpn")
    ap.add_argument("--fpn", default="fpn_r18_semfpn")
    args = ap.parse_args()
    data = open_dataset(args.data.format(n=args.n))
    fapn, _ = resolve_model(args.fapn)
    fpn, _ = resolve_model(args.fpn)
    rows: dict[str, list[dict]] = {}
    fpn_rows: dict[str, list[float]] = {}
    for i in tqdm(range(len(data)), desc="alignment"):
        s = data[i]
        pred = predict_with_captures(fapn, s["image"], ("offsets", "attention", "fam_features"))
        levels = [align_level(f, gt=s["label"], radius=args.radius) for f in pred.captures.fam.values()]
        for row in summarize(levels):
            rows.setdefault(str(row["level"]), []).append(row)
        for lvl, v in fpn_similarity(fpn, s["image"]).items():
            fpn_rows.setdefault(lvl, []).append(v)
    keys = ["confident", "est_px", "learned_px", "epe", "cosine", "epe_near", "cosine_near", "epe_away",
            "cosine_away", "best_group_epe", "sim_before", "sim_after", "sim_before_near_boundary",
            "sim_after_near_boundary"]
    print(f"{args.fapn} vs {args.fpn}, {len(data)} scenes of {args.data.format(n=args.n)}, radius {args.radius}\n")
    print("| level | " + " | ".join(keys) + " | FPN sim_before |")
    print("|---|" + "---:|" * (len(keys) + 1))
    for lvl in sorted(rows, key=lambda k: int(k[1:])):
        vals = [np.nanmean([r.get(k, math.nan) for r in rows[lvl]]) for k in keys]
        fpn_sim = np.mean(fpn_rows.get(lvl, [math.nan]))
        print(f"| {lvl} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {fpn_sim:.2f} |")


if __name__ == "__main__":
    main()
