"""One training step (forward, backward, AdamW) of FPN-R18 vs FaPN-R18 at batch 8, 256×256 crops.

python benchmarks/bench_train.py [--device cuda]
"""

import sys

from fapn_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "train", *sys.argv[1:]]))
