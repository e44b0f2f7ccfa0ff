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
    show_scores: bool = True,
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
            text = f"{name} {scores[i]:.2f}" if show_scores else str(name)
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


ONLY_A: RGB = (30, 90, 230)   # blue: A alone
ONLY_B: RGB = (230, 40, 40)   # red: B alone


def _blend(out: np.ndarray, m: np.ndarray, colour: RGB, alpha: float) -> None:
    out[m] = (out[m] * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)


def _box(out: np.ndarray, box: Any, colour: RGB, thickness: int) -> None:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)


def agreement_view(image: np.ndarray, boxes_a: Any, masks_a: Any, boxes_b: Any, masks_b: Any,
                   matched: Sequence[tuple[int, int, float]], only_a: Sequence[int], only_b: Sequence[int], *,
                   alpha: float = 0.55, thickness: int = 2) -> np.ndarray:
    """Where two detectors disagree: objects only A finds (blue) and only B finds (red), filled when masks are
    given; for paired objects the pixels only A's mask covers (blue) and only B's (red), the rest untouched."""
    out = _rgb(image).copy()
    grey = np.asarray(out, np.float32).mean(2, keepdims=True)
    out = (0.55 * out + 0.45 * grey).astype(np.uint8)  # dim the image so the colours read
    ba, bb = np.asarray(boxes_a, np.float32).reshape(-1, 4), np.asarray(boxes_b, np.float32).reshape(-1, 4)
    ma = None if masks_a is None else np.asarray(masks_a, bool)
    mb = None if masks_b is None else np.asarray(masks_b, bool)
    for i, j, _ in matched:
        if ma is not None and mb is not None:
            _blend(out, ma[i] & ~mb[j], ONLY_A, alpha)
            _blend(out, mb[j] & ~ma[i], ONLY_B, alpha)
        _box(out, ba[i], (200, 200, 200), 1)
    for idx, boxes, masks, colour in ((only_a, ba, ma, ONLY_A), (only_b, bb, mb, ONLY_B)):
        for i in idx:
            if masks is not None:
                _blend(out, masks[i], colour, alpha)
            _box(out, boxes[i], colour, thickness)
    return out


def object_zoom(image: np.ndarray, bbox_xywh: Sequence[float], masks: Sequence[tuple[Any, RGB]], *,
                pad: float = 0.5, min_pad: int = 8, size: int = 256, alpha: float = 0.5,
                outline: bool = True) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A crop around one object (box ``x, y, w, h`` plus ``pad`` × its side) with each given mask drawn as a
    translucent fill and its contour, magnified (nearest) to about ``size`` px; also the crop (x0, y0, x1, y1)."""
    img = _rgb(image)
    h, w = img.shape[:2]
    x, y, bw, bh = (float(v) for v in bbox_xywh)
    p = max(min_pad, int(pad * max(bw, bh)))
    x0, y0 = max(0, int(x) - p), max(0, int(y) - p)
    x1, y1 = min(w, int(np.ceil(x + bw)) + p), min(h, int(np.ceil(y + bh)) + p)
    crop = img[y0:y1, x0:x1].copy()
    for m, colour in masks:
        if m is None:
            continue
        mc = np.asarray(m, bool)[y0:y1, x0:x1]
        _blend(crop, mc, colour, alpha)
        if outline:
            contours, _ = cv2.findContours(mc.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(crop, contours, -1, colour, 1)
    scale = max(1, int(size / max(1, max(y1 - y0, x1 - x0))))
    return np.kron(crop, np.ones((scale, scale, 1), np.uint8)), (x0, y0, x1, y1)
