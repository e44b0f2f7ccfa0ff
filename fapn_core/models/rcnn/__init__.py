"""detectron2's R-CNN family (Faster R-CNN, Mask R-CNN, Panoptic FPN) in plain PyTorch on torchvision ops.

One small module per concern, as torchvision's ``models/detection``: ``anchors``, ``boxes`` (coder, clipping),
``sampling`` (matcher, sampler), ``rpn``, ``poolers``, ``box_head``, ``mask_head`` (with the paste), ``roi_heads``,
``panoptic`` (combine) and ``detector`` (the meta-architecture that wires them).
"""

from .detector import DetectionResult, Detector

__all__ = ["DetectionResult", "Detector"]
