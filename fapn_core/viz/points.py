"""PointRend's instance refinement, one object at a time: the points each subdivision step evaluated and the
pixels the refinement changed (numpy RGB images and counts; torch only inside the functions that paste masks).

A PointRend instance model (``<neck>_<backbone>_pointrend_rcnn``) first predicts each mask on a regular g×g grid
(g = ``grid_sides[0]``, 28 with detectron2's 784 points) and then, at every refinement step, doubles the map
(bilinear) and re-predicts only the most uncertain cells. Its ``DetectionResult.point_rend``
(:class:`~fapn_core.models.rcnn.point_rend.PointRendCapture`) keeps each step's points in image pixels and the
g×g logits before refinement. The *coarse* mask here is those initial logits pasted into the box exactly as the
final mask is (:func:`~fapn_core.models.rcnn.mask_head.paste_masks`, probability ≥ 0.5), so the two differ only
by what the refinement steps changed: pixels *added* (final only) and *removed* (coarse only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from ._common import RGB, NothingToShow, apply_colormap, blend, check_rgb, greyed

KEPT: RGB = (255, 255, 255)      # white fill: in the mask before and after refinement
ADDED: RGB = (20, 190, 90)       # green fill: the refinement added these pixels (final mask only)
REMOVED: RGB = (220, 20, 160)    # magenta fill: the refinement removed these pixels (coarse mask only)
COARSE_LINE: RGB = (0, 220, 255)  # cyan outline: the coarse mask (points view)
FINAL_FILL: RGB = (255, 255, 255)  # white tint: the final mask (points view)
GRID_POINTS: RGB = (190, 190, 190)  # step 0: the regular grid every object gets
#: what each colour of :func:`refinement_view` means: (colour, "outline" | "fill", text), for ``key_figure``
REFINEMENT_KEY: tuple[tuple[RGB, str, str], ...] = (
    (KEPT, "fill", "in both masks"), (ADDED, "fill", "added by refinement (final only)"),
    (REMOVED, "fill", "removed by refinement (coarse only)"))


def step_colour(step: int, n_steps: int) -> RGB:
    """The colour of step ``step``'s points: light grey for the initial grid (step 0), then the plasma ramp from
    purple (first refinement step) to yellow (last), so later means brighter."""
    if step == 0:
        return GRID_POINTS
    refine = max(1, n_steps - 1)
    t = 0.35 + 0.6 * (step - 1) / max(1, refine - 1)
    r, g, b = apply_colormap(np.array([[t]], np.float32), 0.0, 1.0, "plasma")[0, 0]
    return int(r), int(g), int(b)


def points_key(grid_sides: Sequence[int], steps: Sequence[int] | None = None) -> list[tuple[RGB, str, str]]:
    """The legend of :func:`points_view` for a model's ``grid_sides`` (``steps``: those drawn, default all)."""
    n = len(grid_sides)
    shown = range(n) if steps is None else steps
    items: list[tuple[RGB, str, str]] = [(COARSE_LINE, "outline", "coarse mask"), (FINAL_FILL, "fill", "final mask")]
    for s in shown:
        what = (f"step 0: the {grid_sides[0]}² grid" if s == 0 else
                f"step {s}: points re-predicted on the {grid_sides[s]}² map")
        items.append((step_colour(s, n), "fill", what))
    return items


@dataclass(frozen=True)
class Refinement:
    """One instance's refinement: its box, a crop around it, the coarse and final masks in that crop, the
    points of every step (image pixels) and the pixel counts (whole masks, not only the crop).

    ``crop`` (x0, y0, x1, y1) image pixels, end exclusive; ``coarse`` and ``final`` (y1 − y0, x1 − x0) bool;
    ``points[s]`` (P_s, 2) float32 (x, y), pixel j's centre at j + 0.5; ``grid_sides[s]`` the side of the map
    step s writes.
    """

    index: int
    box: tuple[float, float, float, float]
    crop: tuple[int, int, int, int]
    coarse: np.ndarray
    final: np.ndarray
    points: tuple[np.ndarray, ...]
    grid_sides: tuple[int, ...]
    coarse_area: int
    final_area: int
    added: int
    removed: int

    @property
    def points_per_step(self) -> tuple[int, ...]:
        return tuple(int(p.shape[0]) for p in self.points)

    @property
    def added_share(self) -> float:
        """Pixels added as a share of the final mask (0 for an empty final mask)."""
        return self.added / self.final_area if self.final_area else 0.0

    @property
    def removed_share(self) -> float:
        """Pixels removed as a share of the coarse mask (0 for an empty coarse mask)."""
        return self.removed / self.coarse_area if self.coarse_area else 0.0

    def cell_px(self, step: int) -> tuple[float, float]:
        """(width, height) in image pixels of one cell of step ``step``'s map over the box."""
        x0, y0, x1, y1 = self.box
        side = self.grid_sides[step]
        return (x1 - x0) / side, (y1 - y0) / side


def crop_around(boxes: Sequence[Sequence[float]], image_hw: tuple[int, int], *, pad: float = 0.25,
                min_pad: int = 8) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) covering every box (XYXY) plus ``pad`` × the larger side of their union (at least
    ``min_pad`` px, which keeps the paste window, box ± 1 px, inside), clamped to the image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) == 0:
        raise ValueError("crop_around needs at least one box")
    h, w = image_hw
    ux0, uy0, ux1, uy1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    p = max(int(min_pad), int(pad * max(ux1 - ux0, uy1 - uy0)))
    return (max(0, int(np.floor(ux0)) - p), max(0, int(np.floor(uy0)) - p),
            min(w, int(np.ceil(ux1)) + p), min(h, int(np.ceil(uy1)) + p))


def coarse_masks(det: Any, indices: Sequence[int] | None = None, threshold: float = 0.5) -> np.ndarray:
    """(k, H, W) bool: the initial g×g logits of the ``indices`` instances (default all) pasted into their boxes
    with the final masks' paste (:func:`~fapn_core.models.rcnn.mask_head.paste_masks`) at ``threshold``."""
    import torch

    from ..models.rcnn.mask_head import paste_masks

    cap = _capture(det)
    idx = torch.as_tensor(list(range(len(det)) if indices is None else indices), dtype=torch.int64)
    probs = cap.initial_logits[idx].float().sigmoid()[:, None]
    return paste_masks(probs, det.boxes[idx].float(), tuple(det.image_size), threshold).numpy()


def _capture(det: Any):
    cap = getattr(det, "point_rend", None)
    if cap is None:
        raise NothingToShow("these detections have no PointRend capture (not a PointRend instance model)")
    if det.masks is None:
        raise NothingToShow("these detections have no masks")
    return cap


def refinements(det: Any, indices: Sequence[int] | None = None, *, crops: Sequence[Sequence[int]] | None = None,
                pad: float = 0.25, min_pad: int = 8, chunk: int = 16) -> list[Refinement]:
    """The :class:`Refinement` of each instance in ``indices`` (default all; none for zero detections) of a
    PointRend ``DetectionResult``. ``crops``: one (x0, y0, x1, y1) per instance (default :func:`crop_around` its
    box); ``chunk``: coarse masks pasted at a time. Raises :class:`NothingToShow` for detections without a
    PointRend capture."""
    cap = _capture(det)
    idx = list(range(len(det)) if indices is None else (int(i) for i in indices))
    if crops is not None and len(crops) != len(idx):
        raise ValueError(f"{len(crops)} crops for {len(idx)} instances")
    if not idx:
        return []
    hw = tuple(int(v) for v in det.image_size)
    out = []
    for k, i in enumerate(idx):
        if k % chunk == 0:  # pasted a few at a time: k full-image masks at once would not scale to 100 on 2048²
            coarse = coarse_masks(det, idx[k:k + chunk])
        final = det.masks[i].numpy().astype(bool)
        box = tuple(float(v) for v in det.boxes[i].tolist())
        crop = tuple(int(v) for v in (crops[k] if crops is not None else crop_around([box], hw, pad=pad,
                                                                                      min_pad=min_pad)))
        x0, y0, x1, y1 = crop
        c = coarse[k % chunk]
        out.append(Refinement(
            index=i, box=box, crop=crop, coarse=c[y0:y1, x0:x1].copy(), final=final[y0:y1, x0:x1].copy(),
            points=tuple(p[i].numpy().astype(np.float32) for p in cap.points), grid_sides=tuple(cap.grid_sides),
            coarse_area=int(c.sum()), final_area=int(final.sum()), added=int((final & ~c).sum()),
            removed=int((c & ~final).sum())))
    return out


def match_instance(mask: np.ndarray, masks: np.ndarray, candidates: Sequence[int] | None = None
                   ) -> tuple[int | None, float]:
    """The instance of ``masks`` (N, H, W) among ``candidates`` (default all) with the highest mask IoU with
    ``mask`` (H, W), and that IoU; (None, 0.0) when none overlaps it (ties: the first candidate, i.e. the
    higher-scoring detection)."""
    m = np.asarray(mask, bool)
    cand = list(range(len(masks)) if candidates is None else candidates)
    best, best_iou = None, 0.0
    area = int(m.sum())
    for j in cand:
        other = np.asarray(masks[j], bool)
        inter = int((m & other).sum())
        if inter == 0:
            continue
        iou = inter / (area + int(other.sum()) - inter)
        if iou > best_iou:
            best, best_iou = int(j), float(iou)
    return best, best_iou


def _magnified(image: np.ndarray, crop: tuple[int, int, int, int], size: int, brightness: float
               ) -> tuple[np.ndarray, int]:
    x0, y0, x1, y1 = crop
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop {crop}")
    scale = max(1, int(size / max(y1 - y0, x1 - x0)))
    part = greyed(check_rgb(image)[y0:y1, x0:x1], brightness)
    return np.kron(part, np.ones((scale, scale, 1), np.uint8)), scale


def _up(mask: np.ndarray, scale: int) -> np.ndarray:
    return np.kron(np.asarray(mask, np.uint8), np.ones((scale, scale), np.uint8)).astype(bool)


def _outline(out: np.ndarray, mask: np.ndarray, colour: RGB, thickness: int) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, thickness)


def refinement_view(image: np.ndarray, r: Refinement, *, size: int = 480, alpha: float = 0.7,
                    brightness: float = 0.55) -> np.ndarray:
    """The crop of ``r`` (greyed, magnified by a whole factor to about ``size`` px) with the pixels in both masks
    white, those the refinement added green and those it removed magenta (:data:`REFINEMENT_KEY`)."""
    out, s = _magnified(image, r.crop, size, brightness)
    colours = np.zeros(r.final.shape + (3,), np.uint8)
    kept, added, removed = r.coarse & r.final, r.final & ~r.coarse, r.coarse & ~r.final
    colours[kept], colours[added], colours[removed] = KEPT, ADDED, REMOVED
    a = np.where(kept, np.float32(alpha * 0.6), np.where(added | removed, np.float32(alpha), np.float32(0.0)))
    return blend(out, np.kron(colours, np.ones((s, s, 1), np.uint8)), np.kron(a, np.ones((s, s), np.float32)))


def points_view(image: np.ndarray, r: Refinement, steps: Sequence[int] | None = None, *, size: int = 480,
                brightness: float = 0.55, alpha: float = 0.35) -> np.ndarray:
    """The crop of ``r`` (greyed, magnified as :func:`refinement_view`) with the final mask tinted white, the
    points of ``steps`` (default all; steps the model does not have are skipped) as dots in :func:`step_colour`
    (later steps on top; the grid of step 0 as 1 px dots, a refinement step's dot radius following its cell size
    on screen, 1–3 px) and the coarse mask's outline (cyan) over them."""
    out, s = _magnified(image, r.crop, size, brightness)
    final = _up(r.final, s)
    out = blend(out, np.broadcast_to(np.asarray(FINAL_FILL, np.uint8), out.shape),
                np.where(final, np.float32(alpha), np.float32(0.0)))
    n = len(r.points)
    x0, y0 = r.crop[:2]
    h, w = out.shape[:2]
    for step in sorted(s_ for s_ in (range(n) if steps is None else steps) if 0 <= s_ < n):
        pts = r.points[step]
        if len(pts) == 0:
            continue
        cw, ch = r.cell_px(step)
        radius = 1 if step == 0 else int(np.clip(round(0.2 * s * min(cw, ch)), 1, 3))
        u = np.floor((pts[:, 0] - x0) * s).astype(np.int64)
        v = np.floor((pts[:, 1] - y0) * s).astype(np.int64)
        colour = step_colour(step, n)
        for x, y in zip(u[(u >= 0) & (u < w) & (v >= 0) & (v < h)], v[(u >= 0) & (u < w) & (v >= 0) & (v < h)]):
            cv2.circle(out, (int(x), int(y)), radius, colour, -1)
    _outline(out, _up(r.coarse, s), COARSE_LINE, max(1, s // 3))
    return out
