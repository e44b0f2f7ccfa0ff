"""PanopticFCN (fully convolutional panoptic segmentation) on an FPN or FaPN pyramid, faithful to the official code.

One small module per concern: ``options`` (settings beyond the shared model config) · ``encoder`` (P6/P7 from p5,
semantic FPN, coord-conv, feature encoder) · ``position_head`` (centres and stuff regions, deformable convs through
the project's DCN paths) · ``kernel_head`` · ``selection`` (per-level peaks and stuff candidates) · ``generators``
(kernel embedding and fusion) · ``postprocess`` (rescoring, masks, boxes, ``sem_seg``) · ``inference`` (one image,
ending in the Panoptic FPN combine) · ``captures`` (heatmaps, peaks, region maps) · ``targets`` and ``losses``
(training) · ``model`` (the meta-architecture and its builder) · ``convert`` (official keys and configs).
"""

from .captures import LevelMaps, PanopticFCNMaps
from .model import OFFICIAL_PIXEL_MEAN, PanopticFCN, build_panopticfcn, panopticfcn_config
from .options import PanopticFCNOptions

__all__ = ["LevelMaps", "OFFICIAL_PIXEL_MEAN", "PanopticFCN", "PanopticFCNMaps", "PanopticFCNOptions",
           "build_panopticfcn", "panopticfcn_config"]
