"""R-CNN family, FPN vs FaPN (default: Mask R-CNN R50 at 800×1333, 1000 fixed COCO-like proposals, 100
detections): latency, FLOPs (deformable conv and heads included), peak memory, the FaPN/FPN latency ratio beside the
FLOPs ratio, time per stage with the mask paste's share, and ``predict(image)`` end to end against the sum of its
stages run one by one.

python benchmarks/bench_rcnn.py [--rcnn-size 800x1333] [--rcnn-models fpn_r50_maskrcnn fapn_r50_maskrcnn] [--repeats 3]
"""

import sys

from fapn_core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "rcnn", *sys.argv[1:]]))
