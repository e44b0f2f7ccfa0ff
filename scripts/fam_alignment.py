"""Does the bundled FaPN's FAM align features or sample context? Per-level numbers over held-out scenes.

python scripts/fam_alignment.py [--n 20] [--radius 3] [--fapn fapn_r18_semfpn] [--fpn fpn_r18_semfpn]

For each FaPN level: share of measurable cells with a confident displacement estimate beside two nulls (the
measure's own: the source rolled beyond the search radius; and the upsampled feature paired with the lateral feature
of the next scene), the estimated misalignment between
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

from fapn_core.alignment import align_level, estimate_displacement, fpn_topdown, similarity, summarize
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
        other = data[(i + 1) % len(data)]  # null: this scene's upsampled feature vs the next scene's lateral one
        other_fams = predict_with_captures(fapn, other["image"], ("offsets", "fam_features")).captures.fam
        for lvl, f in pred.captures.fam.items():
            d = estimate_displacement(f.feat_up, other_fams[lvl].lateral, radius=args.radius)
            rows[lvl][-1]["other_scene_confident"] = d.confident_share
        for lvl, v in fpn_similarity(fpn, s["image"]).items():
            fpn_rows.setdefault(lvl, []).append(v)
    keys = ["measurable", "confident", "null_confident", "other_scene_confident", "est_px", "learned_px", "epe", "cosine", "epe_near", "cosine_near", "epe_away",
            "cosine_away", "best_group_epe", "sim_before", "sim_after", "sim_before_near_boundary",
            "sim_after_near_boundary"]
    print(f"{args.fapn} vs {args.fpn}, {len(data)} scenes of {args.data.format(n=args.n)}, radius {args.radius}\n")
    print("| level | " + " | ".join(keys) + " | FPN sim_before |")
    print("|---|" + "---:|" * (len(keys) + 1))
    shares = {"measurable", "confident", "null_confident", "other_scene_confident"}
    for lvl in sorted(rows, key=lambda k: int(k[1:])):
        cells = []
        for k in keys:
            v = [r[k] for r in rows[lvl] if k in r and not math.isnan(float(r[k]))]
            cells.append("—" if not v else f"{100 * np.mean(v):.1f} %" if k in shares else f"{np.mean(v):.2f}")
        fpn_sim = np.mean(fpn_rows.get(lvl, [math.nan]))
        print(f"| {lvl} | " + " | ".join(cells) + f" | {fpn_sim:.2f} |")


if __name__ == "__main__":
    main()
