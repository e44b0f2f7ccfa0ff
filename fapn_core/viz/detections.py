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


def text_scale(image_hw: tuple[int, int], display_width: int = 640) -> float:
    """An OpenCV font scale that reads at about 11 px when an image of this size is shown ``display_width`` px
    wide (0.4 at up to that width, growing with wider images)."""
    return 0.4 * max(1.0, image_hw[1] / display_width)


def _place_label(out: np.ndarray, text: str, box: tuple[int, int, int, int], colour: RGB, placed: list,
                 scale: float, weight: int) -> bool:
    """Draw ``text`` on a filled tag beside ``box`` where it overlaps no tag in ``placed`` (above the box, inside
    its top, below it, inside its bottom); False, drawing nothing, when every place is taken."""
    h, w = out.shape[:2]
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    tag_h, tag_w = th + base + 3, tw + 4
    x0, y0, _, y1 = box
    x = int(np.clip(x0, 0, max(0, w - tag_w)))
    for top in (y0 - tag_h, y0 + 1, y1 + 1, y1 - tag_h - 1):
        if top < 0 or top + tag_h > h:
            continue
        rect = (x, top, x + tag_w, top + tag_h)
        if any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed):
            continue
        placed.append(rect)
        cv2.rectangle(out, rect[:2], (rect[2] - 1, rect[3] - 1), colour, -1)
        dark = sum(colour) > 480  # light tags get dark text
        cv2.putText(out, text, (x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (20, 20, 20) if dark else (255, 255, 255), weight, cv2.LINE_AA)
        return True
    return False


def draw_detections(
    image: np.ndarray, boxes: Any, scores: Any, classes: Any, masks: Any = None, *,
    class_names: Sequence[str] | None = None, palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    score_thresh: float = 0.5, alpha: float = 0.45, thickness: int | None = None, labels: bool = True,
    show_scores: bool = True, font_scale: float | None = None,
) -> np.ndarray:
    """Masks blended in their class colour, box outlines and ``class score`` tags for detections with score
    ≥ ``score_thresh``; lowest score drawn first so the best sits on top. Tags never overlap: the best-scoring
    detections get theirs first and a tag with no free place beside its box is left out. ``font_scale`` and
    ``thickness`` default to sizes that stay readable on large images (:func:`text_scale`)."""
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
    scale = text_scale((h, w)) if font_scale is None else float(font_scale)
    weight = max(1, int(round(scale / 0.5)))
    line = max(1, int(round(2 * scale / 0.4))) if thickness is None else int(thickness)
    pal = np.asarray(palette, np.uint8) if palette is not None else None

    def colour_of(c: int) -> RGB:
        return tuple(int(v) for v in (pal[c % len(pal)] if pal is not None and len(pal) else
                                      ((c * 97) % 256, (c * 57 + 80) % 256, (c * 151 + 160) % 256)))

    shown = [i for i in np.argsort(scores, kind="stable") if scores[i] >= score_thresh]
    for i in shown:
        colour = colour_of(int(classes[i]))
        if masks is not None:
            m = masks[i]
            out[m] = (out[m] * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, line)
    if labels:
        placed: list = []
        for i in reversed(shown):
            c = int(classes[i])
            name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
            text = f"{name} {scores[i]:.2f}" if show_scores else str(name)
            box = tuple(int(round(v)) for v in boxes[i])
            _place_label(out, text, box, colour_of(c), placed, scale, weight)
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


ONLY_A: RGB = (0, 114, 178)     # blue outline: an object only A finds
ONLY_B: RGB = (213, 94, 0)      # orange outline: an object only B finds
MASK_A: RGB = (0, 200, 200)     # cyan fill: pixels only A's mask covers, of an object both find
MASK_B: RGB = (230, 0, 160)     # magenta fill: pixels only B's mask covers
PAIRED: RGB = (200, 200, 200)   # grey outline: an object both find
#: what each colour of :func:`agreement_view` means: (colour, "outline" | "fill", text)
AGREEMENT_KEY: tuple[tuple[RGB, str, str], ...] = (
    (ONLY_A, "outline", "object only A finds"), (ONLY_B, "outline", "object only B finds"),
    (PAIRED, "outline", "object both find"), (MASK_A, "fill", "both find it: pixels only A's mask covers"),
    (MASK_B, "fill", "both find it: pixels only B's mask covers"))


def _blend(out: np.ndarray, m: np.ndarray, colour: RGB, alpha: float) -> None:
    out[m] = (out[m] * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)


def _box(out: np.ndarray, box: Any, colour: RGB, thickness: int) -> None:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), colour, thickness)


def _contour(out: np.ndarray, m: np.ndarray, colour: RGB, thickness: int) -> None:
    contours, _ = cv2.findContours(np.asarray(m, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, thickness)


def agreement_view(image: np.ndarray, boxes_a: Any, masks_a: Any, boxes_b: Any, masks_b: Any,
                   matched: Sequence[tuple[int, int, float]], only_a: Sequence[int], only_b: Sequence[int], *,
                   alpha: float = 0.7, thickness: int | None = None,
                   tags_a: Sequence[str] | None = None, tags_b: Sequence[str] | None = None) -> np.ndarray:
    """Where two detectors disagree, two kinds of difference in two encodings (:data:`AGREEMENT_KEY`):
    objects only A (blue) or only B (orange) finds as outlines of their box and mask, and for objects both find
    (grey box) the pixels only A's mask covers (cyan fill) and only B's (magenta fill). ``tags_a``/``tags_b``:
    optional text per detection, drawn beside the one-model objects without overlapping."""
    out = _rgb(image).copy()
    grey = np.asarray(out, np.float32).mean(2, keepdims=True)
    out = (0.55 * out + 0.45 * grey).astype(np.uint8)  # dim the image so the colours read
    h, w = out.shape[:2]
    scale = text_scale((h, w))
    line = max(2, int(round(2 * scale / 0.4))) if thickness is None else int(thickness)
    ba, bb = np.asarray(boxes_a, np.float32).reshape(-1, 4), np.asarray(boxes_b, np.float32).reshape(-1, 4)
    ma = None if masks_a is None else np.asarray(masks_a, bool)
    mb = None if masks_b is None else np.asarray(masks_b, bool)
    for i, j, _ in matched:
        if ma is not None and mb is not None:
            _blend(out, ma[i] & ~mb[j], MASK_A, alpha)
            _blend(out, mb[j] & ~ma[i], MASK_B, alpha)
        _box(out, ba[i], PAIRED, max(1, line // 2))
    sides = ((only_a, ba, ma, ONLY_A, tags_a), (only_b, bb, mb, ONLY_B, tags_b))
    for idx, boxes, masks, colour, _ in sides:
        for i in idx:
            if masks is not None:
                _contour(out, masks[i], colour, max(1, line // 2))
            _box(out, boxes[i], colour, line)
    placed: list = []  # tags after every outline, so no line crosses a tag
    for idx, boxes, _, colour, tags in sides:
        for i in idx if tags is not None else ():
            _place_label(out, str(tags[i]), tuple(int(round(float(v))) for v in boxes[i]), colour, placed, scale,
                         max(1, int(round(scale / 0.5))))
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
