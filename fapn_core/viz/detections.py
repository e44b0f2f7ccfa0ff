"""Detections and panoptic segments over an image (numpy RGB, for the app and exports).

Inputs are arrays (a ``DetectionResult``'s CPU tensors work as they are): boxes (N, 4) XYXY, scores (N,),
classes (N,) ROI class ids, masks (N, H, W) bool or None; panoptic ids (H, W) with detectron2's ``segments_info``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ._common import RGB


def _rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be H×W×3 uint8 RGB; got {img.shape} {img.dtype}")
    return img


def draw_detections(
    image: np.ndarray, boxes: Any, scores: Any, classes: Any, masks: Any = None, *,
    class_names: Sequence[str] | None = None, palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    score_thresh: float = 0.5, alpha: float = 0.45, thickness: int = 2, labels: bool = True,
) -> np.ndarray:
    """Masks blended in their class colour, box outlines and ``class score`` captions for detections with score
    ≥ ``score_thresh``; lowest score drawn first so the best sits on top."""
    out = _rgb(image).copy()
    h, w = out.shape[:2]
    boxes, scores, classes = (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32).ravel(),
                              np.asarray(classes, np.int64).ravel())
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes")
    if masks is not None:
        masks = np.asarray(masks, bool)
        if masks.shape != (len(boxes), h, w):
            raise ValueError(f"masks {masks.shape} do not match {len(boxes)} detections on a {h}×{w} image")
    pal = np.asarray(palette, np.uint8) if palette is not None else None
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_thresh:
            continue
        c = int(classes[i])
        colour = tuple(int(v) for v in (pal[c % len(pal)] if pal is not None and len(pal) else
                                        ((c * 97) % 256, (c * 57 + 80) % 256, (c * 151 + 160) % 256)))
        if masks is not None:
            m = masks[i]
            out[m] = (out[m] * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)
        if labels:
            name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
            text = f"{name} {scores[i]:.2f}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            ty = y0 - 3 if y0 - th - 4 >= 0 else min(h - 1, y0 + th + 3)
            cv2.rectangle(out, (x0, ty - th - 2), (min(w - 1, x0 + tw + 2), ty + base - 1), colour, -1)
            cv2.putText(out, text, (x0 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def draw_panoptic(
    image: np.ndarray, panoptic_seg: Any, segments_info: Sequence[Mapping[str, Any]], *,
    thing_palette: np.ndarray | Sequence[Sequence[int]], stuff_palette: np.ndarray | Sequence[Sequence[int]],
    alpha: float = 0.6, border: RGB = (255, 255, 255),
) -> np.ndarray:
    """Segments coloured by class (things by ROI class, stuff by semantic channel), a white border around every
    segment (so touching instances of one class stay apart); unassigned pixels keep the image."""
    out = _rgb(image).copy()
    ids = np.asarray(panoptic_seg)
    if ids.shape != out.shape[:2]:
        raise ValueError(f"panoptic map {ids.shape} does not match the {out.shape[0]}×{out.shape[1]} image")
    tp, sp = np.asarray(thing_palette, np.uint8), np.asarray(stuff_palette, np.uint8)
    colour = np.zeros(out.shape, np.float32)
    painted = np.zeros(ids.shape, bool)
    for s in segments_info:
        m = ids == int(s["id"])
        pal = tp if s.get("isthing") else sp
        colour[m] = pal[int(s["category_id"]) % len(pal)]
        painted |= m
    out[painted] = (out[painted] * (1 - alpha) + colour[painted] * alpha).astype(np.uint8)
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    out[edge & (painted | np.roll(painted, 1, 0) | np.roll(painted, 1, 1))] = border
    return out
