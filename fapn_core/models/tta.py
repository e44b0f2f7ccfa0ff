"""Multi-scale + flip test-time augmentation for semantic models, as detectron2's ``SemanticSegmentorWithTTA``
with ``DatasetMapperTTA`` (``TEST.AUG``; FaPN-full's MaskFormer Swin-L config enables it).

For each ``min_size`` the image is resized so its short side is ``min_size`` (long side capped at ``max_size``;
``ResizeShortestEdge`` rounding, PIL bilinear on uint8), then also flipped horizontally when ``flip``. Each view's
semantic output is resized back to the image size (bilinear, ``align_corners=False``), un-flipped, and the outputs
are averaged (sum over views / number of views, in the order: each size, then its flip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


@dataclass(frozen=True)
class TTASettings:
    """``TEST.AUG``: short-side sizes, the long-side cap and whether each size is also run flipped."""

    min_sizes: tuple[int, ...] = (320, 480, 640, 800, 960, 1120)
    max_size: int = 4480
    flip: bool = True


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2 ``ResizeShortestEdge.get_output_shape``: (new_h, new_w) rounded half up."""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def tta_views(h: int, w: int, settings: TTASettings) -> list[tuple[tuple[int, int], bool]]:
    """The augmented views in the order they are run and summed: ((new_h, new_w), flipped)."""
    views = []
    for short in settings.min_sizes:
        size = shortest_edge_size(h, w, short, settings.max_size)
        views.append((size, False))
        if settings.flip:
            views.append((size, True))
    return views


@torch.inference_mode()
def predict_tta(model: torch.nn.Module, image: np.ndarray, settings: TTASettings = TTASettings(), *,
                amp: bool = False) -> torch.Tensor:
    """The mean of ``model.predict`` over the views of :func:`tta_views`, (K, H, W) at the image size.

    ``image``: H×W×3 uint8 RGB. Works for any semantic model (logits or MaskFormer scores are averaged as is).
    """
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"predict_tta needs an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    total = None
    views = tta_views(h, w, settings)
    for (nh, nw), flipped in views:
        view = image if (nh, nw) == (h, w) else np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
        if flipped:
            view = np.ascontiguousarray(view[:, ::-1])
        out = model.predict(view, amp=amp)
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if flipped:
            out = out.flip(-1)
        total = out if total is None else total + out
    return total / len(views)
