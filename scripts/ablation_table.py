"""The seven-neck ablation table from ``fapn evaluate`` runs (one per training seed), beside the paper's Table 1.

Usage: python scripts/ablation_table.py runs/ablation   (reads runs/ablation/seed*/eval/summary.json)
Prints Markdown: per neck the parameters, mIoU, boundary band mean, Boundary IoU, small-object IoU and iIoU as the
mean over seeds (with the per-seed values when there are several), and the paper's R50 Cityscapes mIoU for the row.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# (neck, the paper's row, paper R50 Cityscapes val mIoU)
ROWS = [
    ("fpn", "FPN", 77.4),
    ("fpn_extra_conv", "FPN + extra 3×3 conv", 77.5),
    ("fam", "FPN + FAM", 79.7),
    ("fam_se", "FPN + FAM + SE", 78.8),
    ("fapn", "FPN + FAM + FSM (FaPN)", 80.0),
    ("deconv_fsm", "FPN + deconv + FSM", 76.7),
    ("fam_noref_fsm", "FPN + FAM (no reference) + FSM", 79.3),
]
METRICS = [("mIoU", "ablation", "mIoU"), ("band mean", "boundary", "mean"), ("band 3px", "boundary", "3px"),
           ("Boundary IoU", "ablation", "boundary_IoU"), ("small IoU", "small_objects", "small_IoU"),
           ("iIoU", "ablation", "iIoU")]


def load(root: Path) -> dict[str, list[dict]]:
    runs = {}
    for summary in sorted(root.glob("seed*/eval/summary.json")):
        tables = json.loads(summary.read_text())["tables"]
        runs[summary.parent.parent.name] = tables
    if not runs:
        raise SystemExit(f"no evaluated seeds under {root} (run scripts/evaluate_ablation.sh)")
    return runs


def row_for(tables: dict, table: str, neck: str) -> dict:
    for row in tables[table]:
        name = Path(row["method"]).name.removesuffix(".safetensors")
        if name == f"{neck}_r18_semfpn":
            return row
    raise KeyError(f"{neck} missing from the {table} table")


def main(root: Path) -> str:
    runs = load(root)
    seeds = list(runs)
    fpn = {m: statistics.mean(row_for(t, tbl, "fpn")[col] for t in runs.values()) for m, tbl, col in METRICS}
    head = ("| # | neck (paper's row) | params M | " + " | ".join(m for m, _, _ in METRICS)
            + " | Δ mIoU vs FPN | paper mIoU (R50, Cityscapes) |")
    lines = [f"Seeds: {', '.join(seeds)} (mean; per-seed values in brackets when more than one).", "", head,
             "|---|---|---:|" + "---:|" * len(METRICS) + "---:|---:|"]
    for i, (neck, label, paper) in enumerate(ROWS, 1):
        cells = []
        means = {}
        for m, tbl, col in METRICS:
            vals = [row_for(t, tbl, neck)[col] for t in runs.values()]
            means[m] = statistics.mean(vals)
            per_seed = " [" + " / ".join(f"{v:.1f}" for v in vals) + "]" if len(vals) > 1 else ""
            cells.append(f"{means[m]:.2f}{per_seed}")
        params = row_for(next(iter(runs.values())), "ablation", neck)["params_M"]
        delta = means["mIoU"] - fpn["mIoU"]
        lines.append(f"| {i} | `{neck}` ({label}) | {params:.2f} | " + " | ".join(cells)
                     + f" | {delta:+.2f} | {paper:.1f} |")
    if len(seeds) > 1:
        # how far apart two seeds of the same neck land: the noise floor for reading the rows above
        spread = []
        for m, tbl, col in METRICS:
            diffs = []
            for neck, _, _ in ROWS:
                vals = [row_for(t, tbl, neck)[col] for t in runs.values()]
                diffs.append(max(vals) - min(vals))
            spread.append(f"{statistics.mean(diffs):.2f} (max {max(diffs):.2f})")
        lines.append("| | seed-to-seed spread of one neck, mean over necks | | " + " | ".join(spread) + " | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/ablation")))
