"""PanopticFCN's positions on an image: centre heatmaps with the kept peaks and stuff region maps per level, the
peaks only one of two models keeps, and which candidates' kernels became which instances (numpy; no torch).

Everything here reads a :class:`~fapn_core.models.panopticfcn.captures.PanopticFCNMaps` (the ``positions``
capture): per level ``p3``..``p7`` the smoothed centre map ``(σ + avgpool σ) / 2`` (K thing classes), the kept
peaks ``(class, y, x, score)`` in cells, σ of the stuff region logits; across levels the score-sorted thing
candidates and kernel fusion's ``keep`` / ``assign`` decisions with the rescored scores.

A peak sits at the centre of its cell in the image: ``((x + 0.5) · stride, (y + 0.5) · stride)``. Two models'
peaks *match* when they have the same class and lie within ``cells`` cells of the coarser of their two levels
(``distance ≤ cells · max(stride_a, stride_b)`` image pixels), one to one, closest pairs first
(:func:`match_peaks`). A misaligned pyramid moves peaks (matched, but apart), splits them (an extra peak only one
model keeps) or merges them (a peak missing in one model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from ._common import apply_colormap, blend, check_rgb, greyed
from .detections import ONLY_A, ONLY_B, PAIRED

PEAK_OUTLINE = (255, 255, 255)
THRESHOLD_OUTLINE = (0, 220, 255)  # cells whose centre score passes the threshold
MATCH_LINE = PAIRED


# ------------------------------------------------------------------------------------------------------ peaks
@dataclass(frozen=True)
class Peak:
    """One kept centre peak: its level and stride, thing class (the model's class index), cell and score."""

    level: str
    stride: int
    class_id: int
    y: int
    x: int
    score: float

    @property
    def image_xy(self) -> tuple[float, float]:
        """The peak in input-image pixels (x, y): the centre of its cell."""
        return (self.x + 0.5) * self.stride, (self.y + 0.5) * self.stride


def _level_names(maps: Any, levels: Sequence[str] | None) -> list[str]:
    names = list(maps.levels)
    if levels is None:
        return names
    unknown = [n for n in levels if n not in maps.levels]
    if unknown:
        raise ValueError(f"no level(s) {unknown}; the maps have {names}")
    return [n for n in names if n in levels]


def kept_peaks(maps: Any, levels: Sequence[str] | None = None) -> list[Peak]:
    """The kept peaks of ``maps`` (all levels, or those named), level by level in the model's top-k order."""
    out = []
    for name in _level_names(maps, levels):
        lv = maps.levels[name]
        for c, y, x, s in np.asarray(lv.peaks, np.float64).reshape(-1, 4):
            out.append(Peak(name, int(lv.stride), int(c), int(y), int(x), float(s)))
    return out


@dataclass(frozen=True)
class PeakPair:
    """A peak of A and one of B taken for the same thing; ``distance`` in image pixels."""

    a: Peak
    b: Peak
    distance: float


@dataclass
class PeakMatch:
    """A's and B's kept peaks matched one to one (same class, within ``cells`` cells of the coarser level)."""

    matched: list[PeakPair] = field(default_factory=list)
    only_a: list[Peak] = field(default_factory=list)
    only_b: list[Peak] = field(default_factory=list)
    cells: float = 1.0

    @property
    def counts(self) -> dict[str, int]:
        """``{"matched", "only_a", "only_b"}`` counts."""
        return {"matched": len(self.matched), "only_a": len(self.only_a), "only_b": len(self.only_b)}

    def rule(self) -> str:
        """The matching rule in words."""
        cells = f"{self.cells:g} cell{'s' if self.cells != 1 else ''}"
        return (f"same class, at most {cells} of the coarser of the two peaks' levels apart (p3: "
                f"{self.cells * 8:g} px … p7: {self.cells * 128:g} px), one to one, closest pairs first")


def match_peaks(peaks_a: Sequence[Peak], peaks_b: Sequence[Peak], *, cells: float = 1.0) -> PeakMatch:
    """Match two models' peaks: same class and ``distance ≤ cells · max(stride_a, stride_b)`` image pixels; pairs
    are taken greedily by ascending distance (ties: higher summed score, then A's, then B's order)."""
    if cells < 0:
        raise ValueError(f"cells must be ≥ 0, got {cells}")
    pa, pb = list(peaks_a), list(peaks_b)
    pairs = []
    for i, a in enumerate(pa):
        ax, ay = a.image_xy
        for j, b in enumerate(pb):
            if a.class_id != b.class_id:
                continue
            bx, by = b.image_xy
            d = float(np.hypot(ax - bx, ay - by))
            if d <= cells * max(a.stride, b.stride):
                pairs.append((d, -(a.score + b.score), i, j))
    pairs.sort()
    used_a, used_b, matched = set(), set(), []
    for d, _, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        matched.append(PeakPair(pa[i], pb[j], d))
    return PeakMatch(matched, [p for i, p in enumerate(pa) if i not in used_a],
                     [p for j, p in enumerate(pb) if j not in used_b], float(cells))


# ------------------------------------------------------------------------------------------------ per level
@dataclass(frozen=True)
class LevelRow:
    """One level of one model: stride, cells (h, w), kept peaks, the highest smoothed centre score, kept stuff."""

    level: str
    stride: int
    cells: tuple[int, int]
    peaks: int
    best_score: float
    stuff: int


def level_rows(maps: Any) -> list[LevelRow]:
    """A :class:`LevelRow` per level, in level order."""
    rows = []
    for name, lv in maps.levels.items():
        c = np.asarray(lv.centres)
        rows.append(LevelRow(name, int(lv.stride), (int(c.shape[-2]), int(c.shape[-1])), int(len(lv.peaks)),
                             float(c.max()) if c.size else float("nan"), int(len(lv.stuff))))
    return rows


def peak_rule(options: Any, level: str | None = None) -> str:
    """How PanopticFCN picks its peaks, with the model's threshold and top-k (``options``: its
    :class:`~fapn_core.models.panopticfcn.options.PanopticFCNOptions`); ``level`` names its pooling size."""
    from ..models.panopticfcn.options import CENTER_POOL_SIZES, HEAD_LEVELS

    if level in HEAD_LEVELS:
        k = CENTER_POOL_SIZES[HEAD_LEVELS.index(level)]
        pool = f"{k}×{k}"
    else:
        pool = "3×3 (p3–p5) / 5×5 (p6, p7)"
    return (f"a peak is a cell whose centre score (σ + {pool} average of σ) / 2 is the maximum of its 3×3 "
            f"neighbourhood, among the level's top {options.center_top_num // 2}, with score > "
            f"{options.center_thresh:g} (the model's thing threshold)")


def stuff_rule(options: Any) -> str:
    """How PanopticFCN keeps a stuff region, with the model's threshold."""
    return (f"each cell goes to its most likely region channel (channel 0: things); a stuff class is kept at a "
            f"level when its mean σ over its cells > {options.stuff_thresh:g}")


# -------------------------------------------------------------------------------------------------- drawing
def _to_image(values: np.ndarray, stride: int, hw: tuple[int, int]) -> np.ndarray:
    """Cell values (h, w) as image-size blocks: cell (y, x) covers pixels ``[y·s, (y+1)·s) × [x·s, (x+1)·s)``."""
    up = np.repeat(np.repeat(values, stride, axis=0), stride, axis=1)[: hw[0], : hw[1]]
    if up.shape[:2] != tuple(hw):  # maps shorter than the image (should not happen): pad with the edge
        up = np.pad(up, ((0, hw[0] - up.shape[0]), (0, hw[1] - up.shape[1])) + ((0, 0),) * (up.ndim - 2),
                    mode="edge")
    return up


def marker_radius(stride: int) -> int:
    """Peak marker radius in image pixels: half a cell, 3 to 32 px (so the level reads from the size)."""
    return int(np.clip(stride // 2, 3, 32))


def _ring(out: np.ndarray, xy: tuple[float, float], radius: int, colour: Sequence[int],
          outline: Sequence[int] = PEAK_OUTLINE) -> None:
    centre = (int(round(xy[0] - 0.5)), int(round(xy[1] - 0.5)))
    cv2.circle(out, centre, radius + 1, tuple(int(v) for v in outline), 3, cv2.LINE_AA)
    cv2.circle(out, centre, radius, tuple(int(v) for v in colour), 2, cv2.LINE_AA)


def _class_colours(palette: np.ndarray | Sequence[Sequence[int]] | None, n: int) -> np.ndarray:
    if palette is not None and len(palette) >= n:
        return np.asarray(palette, np.uint8).reshape(-1, 3)
    from ..data.palettes import generic_palette

    return generic_palette(max(n, 1))


def centre_view(image: np.ndarray, level: Any, *, class_id: int | None = None,
                palette: np.ndarray | Sequence[Sequence[int]] | None = None, threshold: float | None = None,
                vmax: float = 1.0, cmap: str = "inferno", alpha: float = 0.7) -> np.ndarray:
    """One level's centre heatmap over the greyed image (colours linear in [0, ``vmax``]: give two models the
    same ``vmax`` to compare them), the kept peaks as rings in their class colour (``palette`` by class index)
    and, with ``threshold``, the outline of the cells whose score passes it. ``class_id``: one class's map and
    peaks (default: the maximum over classes and every peak)."""
    img = check_rgb(image)
    hw = img.shape[:2]
    centres = np.asarray(level.centres, np.float32)
    values = centres.max(0) if class_id is None else centres[int(class_id)]
    heat = apply_colormap(_to_image(values, int(level.stride), hw), 0.0, float(vmax), cmap)
    out = blend(greyed(img), heat, alpha)
    if threshold is not None:
        above = _to_image((values > threshold).astype(np.uint8), int(level.stride), hw)
        contours, _ = cv2.findContours(np.ascontiguousarray(above), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, THRESHOLD_OUTLINE, 1)
    colours = _class_colours(palette, centres.shape[0])
    r = marker_radius(int(level.stride))
    for c, y, x, _ in np.asarray(level.peaks, np.float64).reshape(-1, 4):
        if class_id is not None and int(c) != int(class_id):
            continue
        _ring(out, ((x + 0.5) * level.stride, (y + 0.5) * level.stride), r, colours[min(int(c), len(colours) - 1)])
    return out


def region_view(image: np.ndarray, level: Any, palette: np.ndarray | Sequence[Sequence[int]] | None = None, *,
                alpha: float = 0.6) -> np.ndarray:
    """One level's stuff region map over the greyed image: each cell in the colour of its most likely region
    channel (``palette`` by channel, channel 0 = things), more opaque where that channel is surer."""
    img = check_rgb(image)
    regions = np.asarray(level.regions, np.float32)
    labels = regions.argmax(0)
    colours = _class_colours(palette, regions.shape[0])
    tint = _to_image(colours[np.minimum(labels, len(colours) - 1)], int(level.stride), img.shape[:2])
    weight = _to_image(alpha * (0.35 + 0.65 * regions.max(0)), int(level.stride), img.shape[:2])
    return blend(greyed(img), tint, weight)


def peak_agreement_view(image: np.ndarray, match: PeakMatch) -> np.ndarray:
    """Every kept peak of A and B over the greyed image: matched pairs as grey rings joined by a line, peaks only
    A keeps in blue, only B in orange (ring size: half a cell of the peak's level)."""
    out = greyed(check_rgb(image), 0.5)
    for pair in match.matched:
        (ax, ay), (bx, by) = pair.a.image_xy, pair.b.image_xy
        cv2.line(out, (int(ax), int(ay)), (int(bx), int(by)), MATCH_LINE, 1, cv2.LINE_AA)
        _ring(out, pair.a.image_xy, marker_radius(pair.a.stride), MATCH_LINE, (40, 40, 40))
        _ring(out, pair.b.image_xy, marker_radius(pair.b.stride), MATCH_LINE, (40, 40, 40))
    for peaks, colour in ((match.only_a, ONLY_A), (match.only_b, ONLY_B)):
        for p in peaks:
            _ring(out, p.image_xy, marker_radius(p.stride), colour)
    return out


# ---------------------------------------------------------------------------------------------- kernel fusion
@dataclass(frozen=True)
class FusionRow:
    """One thing candidate (``candidate``: its index in score order over all levels) and what became of it.

    ``kernel``: the fused kernel it was averaged into (``None``: dropped, its first similar candidate was itself
    merged into another); ``kernel_candidate``: the candidate that kernel belongs to (its own index when it kept
    its kernel); ``kernel_size``: how many candidates that kernel averages. ``instance``: index of the model's
    output instance that kernel became (``None``: its rescored score fell below the floor or past the top-k);
    ``rescored``: the kernel's score after mask rescoring, with the kernel's class (``instance_class``), level
    (``instance_level``) and image position (``instance_xy``): those of its own candidate.
    """

    candidate: int
    level: str
    class_id: int
    class_name: str
    x: float
    y: float
    score: float
    kernel: int | None
    kernel_candidate: int | None
    kernel_size: int | None
    instance: int | None
    rescored: float | None
    instance_class: str | None
    instance_level: str | None
    instance_xy: tuple[float, float] | None

    @property
    def outcome(self) -> str:
        """What happened to the candidate, in words."""
        if self.kernel is None:
            return "dropped (its first similar kernel was merged away)"
        own = "own kernel" if self.kernel_candidate == self.candidate else f"fused into #{self.kernel_candidate}"
        if self.instance is None:
            return f"{own}; no instance (score after rescoring too low)"
        return f"{own} → instance {self.instance}"


def instance_order(rescored: np.ndarray, top_num: int = 100, floor: float = 0.05) -> np.ndarray:
    """Indices of the fused kernels that became instances, in the model's output order: descending rescored score
    (stable), ``score ≥ floor`` (PanopticFCN's hard-coded 0.05), at most ``top_num``."""
    s = np.asarray(rescored, np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    return order[s[order] >= floor][:top_num]


def fusion_table(maps: Any, class_names: Sequence[str] | None = None, *, top_num: int = 100,
                 floor: float = 0.05) -> list[FusionRow]:
    """A :class:`FusionRow` per thing candidate of ``maps``, in score order (``top_num``: the model's
    ``center_top_num``, which also caps its instances)."""
    cand = np.asarray(maps.candidates, np.float64).reshape(-1, 5)
    n = len(cand)
    if n == 0:
        return []
    names = list(maps.levels)
    strides = {k: int(v.stride) for k, v in maps.levels.items()}
    keep = np.asarray(maps.fusion_keep, bool).reshape(-1)
    assign = np.asarray(maps.fusion_assign, bool).reshape(-1, n) if np.size(maps.fusion_assign) else \
        np.zeros((0, n), bool)
    rescored = np.asarray(maps.rescored, np.float64).reshape(-1)
    if len(keep) != n or len(assign) != int(keep.sum()) or len(rescored) not in (0, len(assign)):
        raise ValueError(f"inconsistent fusion record: {n} candidates, keep {keep.shape}, assign {assign.shape}, "
                         f"rescored {rescored.shape}")
    kernel_candidates = np.flatnonzero(keep)
    sizes = assign.sum(1)
    inst = {int(k): i for i, k in enumerate(instance_order(rescored, top_num, floor))} if len(rescored) else {}

    def class_name(c: int) -> str:
        return str(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else f"class_{c}"

    def where(j: int) -> tuple[str, float, float]:
        lv, _, y, x, _ = cand[j]
        name = names[int(lv)] if int(lv) < len(names) else f"p{3 + int(lv)}"
        s = strides.get(name, 2 ** int(name[1:]))
        return name, (x + 0.5) * s, (y + 0.5) * s

    rows = []
    for j in range(n):
        name, x, y = where(j)
        c = int(cand[j, 1])
        hit = np.flatnonzero(assign[:, j])
        k = int(hit[0]) if hit.size else None
        own = int(kernel_candidates[k]) if k is not None else None
        kname, kx, ky = where(own) if own is not None else (None, None, None)
        rows.append(FusionRow(
            candidate=j, level=name, class_id=c,
            class_name=class_name(c),
            x=float(x), y=float(y), score=float(cand[j, 4]), kernel=k, kernel_candidate=own,
            kernel_size=None if k is None else int(sizes[k]), instance=None if k is None else inst.get(k),
            rescored=None if k is None or not len(rescored) else float(rescored[k]),
            instance_class=None if own is None else class_name(int(cand[own, 1])), instance_level=kname,
            instance_xy=None if own is None else (float(kx), float(ky))))
    return rows
