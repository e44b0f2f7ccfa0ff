"""R-CNN family, FPN vs FaPN (default: Mask R-CNN R50 at 800×1333): latency, FLOPs (deformable conv and heads
included), peak memory, the FaPN/FPN latency ratio beside the FLOPs ratio, and time per stage.

python benchmarks/bench_rcnn.py [--rcnn-size 800x1333] [--rcnn-models fpn_r50_maskrcnn fapn_r50_maskrcnn] [--repeats 3]
"""

import sys

from fapn_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "rcnn", *sys.argv[1:]]))
