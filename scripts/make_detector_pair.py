"""Write the Mask R-CNN and Faster R-CNN inside the bundled R18 Panoptic FPN pair as native checkpoints.

python scripts/make_detector_pair.py [OUT_DIR]     (default runs/detectors)

Same backbone, neck, RPN and ROI heads and weights as ``{fpn,fapn}_r18_panoptic``, without the semantic head (and,
for Faster R-CNN, without the mask head): their detections equal the Panoptic FPN's instances. Load them in the
app with *Upload checkpoint* (or *Local path*) to see the detector views with real trained models.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fapn_core.checkpoints import bundled_models, detector_from_panoptic, load_checkpoint, save_native  # noqa: E402


def main(out: Path) -> None:
    have = bundled_models()
    for neck in ("fpn", "fapn"):
        model, card = load_checkpoint(have[f"{neck}_r18_panoptic"])
        for head in ("maskrcnn", "fasterrcnn"):
            det, det_card = detector_from_panoptic(model, card, head)
            print(save_native(det, out / f"{neck}_r18_{head}.safetensors", det_card, half=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/detectors"))
