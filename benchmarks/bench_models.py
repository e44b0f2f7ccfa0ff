"""Whole models, FPN vs FaPN (R18 and R50 Semantic FPN) at 512×1024 and 1024×2048: latency, peak memory,
params, FLOPs (deformable conv included), and the FaPN/FPN latency ratio beside the FLOPs ratio.

python benchmarks/bench_models.py [--device cuda --amp] [--repeats 3]
"""

import sys

from fapn_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "models", *sys.argv[1:]]))
