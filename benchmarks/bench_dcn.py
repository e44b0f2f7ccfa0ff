"""DCN at FaPN's shapes: torchvision reference vs the fast path vs a dense 3×3 conv (medians, one process).

python benchmarks/bench_dcn.py [--device cuda] [--repeats 5]
"""

import sys

from fapn_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "dcn", *sys.argv[1:]]))
