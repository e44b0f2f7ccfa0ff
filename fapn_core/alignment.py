"""Does the FAM align? Displacement between the upsampled and the lateral feature, before and after the FAM.

From the captures of one inference (no second forward):

- :func:`estimate_displacement` — a local correlation between ``feat_up`` (the upsampled coarse feature) and
  the lateral (FSM) feature of a level: for every cell, the cosine similarity of features standardised per channel
  (each map with its own statistics)
  over a ±``radius`` window, averaged over a ``patch``×``patch`` block of cells, the best integer shift, and a
  parabola through its neighbours for the sub-pixel part.
  The displacement ``d`` is where to **sample** ``feat_up`` so that it matches the lateral feature,
  ``feat_up(p + d) ≈ lateral(p)`` — the convention of the deformable conv's offsets, so the two compare directly.
  Flat regions have no defined displacement: a cell is *measurable* only where both maps have texture around it
  (local variance of the per-channel standardised features ≥ ``MIN_TEXTURE`` of the map's; a constant channel is
  flat whatever its value) and its search window lies on the map. Each cell's peak strength (the best cosine minus
  the window's median) is then judged against a **null**: the same statistic for the source rolled far beyond the
  search radius (two rolls), which no true displacement relates to the reference. A match is *confident* when its
  strength exceeds the null's ``1 − alpha`` quantile (and ``min_confidence``) and its best shift is not on the
  window's edge (a shift beyond the radius). A third, independent roll gives the null's own confident share,
  reported beside the real one, so a reader sees whether there is any signal at all: on unrelated fields the
  confident share stays at or below ``FALSE_POSITIVE_RATE`` (tested).
- :func:`agreement` — the learned offsets (mask-weighted mean over groups and kernel points, and the best-agreeing
  group) against that displacement: endpoint error and cosine of the angle, over confident cells, overall and split
  by distance to ground-truth boundaries.
- :func:`similarity` — cosine per cell between the lateral feature and the top-down feature the neck fuses with
  it, before alignment (``feat_up``) and after (``relu(DCN(feat_up))``, i.e. the FAM output minus the lateral).
  :func:`fpn_topdown` reconstructs an FPN's nearest-upsampled top-down features from its lateral convs' outputs, so
  an FPN model gets the same "before" numbers.

Everything is in feature pixels of the level (multiply by its stride for image pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .introspect import FAMCapture

DEFAULT_RADIUS = 3
DEFAULT_MIN_CONFIDENCE = 0.05  # an absolute floor under the null-calibrated threshold
DEFAULT_ALPHA = 0.025  # threshold = the calibration null's 97.5th percentile of peak strength
FALSE_POSITIVE_RATE = 0.05  # the stated rate: confident share on unrelated fields stays at or below it (tested)
MIN_TEXTURE = 0.05  # local variance / map variance below which a cell is flat (unmeasurable)
DEFAULT_CHANNELS = 32  # principal components the correlation runs on (bounds its cost for wide necks)
BAND_WIDTHS_PX = (8,)  # image pixels: "near a boundary" = within 8 px of a ground-truth label boundary


def _standardise_map(t: np.ndarray) -> torch.Tensor:
    """A (C, h, w) map standardised per channel with its own statistics; a flat channel (std within float
    rounding of its mean, whatever that value is) becomes zeros instead of amplified rounding noise."""
    x = torch.as_tensor(t, dtype=torch.float32)
    mean = x.mean(dim=(1, 2), keepdim=True)
    std = x.std(dim=(1, 2), keepdim=True)
    flat = std <= 1e-5 * mean.abs().clamp_min(1e-6)
    return torch.where(flat, torch.zeros_like(x), (x - mean) / std.clamp_min(1e-12))


def _standardise(a: np.ndarray, ref: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (C, h, w) map standardised per channel with its own statistics (the two come from different layers
    and scales), then unit-normalised per cell (flat cells stay zero vectors)."""
    return F.normalize(_standardise_map(a), dim=0), F.normalize(_standardise_map(ref), dim=0)


def _texture(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(h, w) local variance around each cell (``patch``×``patch``, mean over channels) of a standardised map, as a
    fraction of the map's (1 for a textured channel): 0 on flat regions whatever their level."""
    k = max(patch, 3)
    pool = lambda t: F.avg_pool2d(t[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]  # noqa: E731
    var = (pool(x * x) - pool(x) ** 2).clamp_min(0)
    live = (x.abs().amax(dim=(1, 2)) > 0).sum().clamp_min(1)
    return var.sum(0) / live


def _shared_projection(a: torch.Tensor, b: torch.Tensor, k: int, max_cells: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Both (C, h, w) maps projected on the top-``k`` principal directions of their cells together, unit-normalised."""
    c = a.shape[0]
    cells = torch.cat([a.reshape(c, -1), b.reshape(c, -1)], 1)
    if cells.shape[1] > max_cells:  # a deterministic subsample fits the basis; every cell is projected
        cells = cells[:, torch.linspace(0, cells.shape[1] - 1, max_cells).long()]
    cov = cells @ cells.T / cells.shape[1]
    basis = torch.linalg.eigh(cov).eigenvectors[:, -k:]  # (C, k), largest eigenvalues last
    def proj(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.einsum("ck,chw->khw", basis, x), dim=0)
    return proj(a), proj(b)


@dataclass
class Displacement:
    """Estimated displacement of one level: ``field`` (2, h, w) = (dy, dx) in feature pixels, ``confidence``
    (h, w) peak strength, ``valid`` (h, w) bool (confident: above the null's threshold, measurable, not on the
    window's edge), ``measurable`` (h, w) bool (textured in both maps, window on the map), the search ``radius``,
    the null-calibrated ``threshold`` and ``null_share``: the confident share of an independent null (unrelated
    features), to read ``confident_share`` against."""

    field: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    radius: int
    measurable: np.ndarray | None = None
    threshold: float = math.nan
    null_share: float = math.nan

    @property
    def magnitude(self) -> np.ndarray:
        return np.hypot(self.field[0], self.field[1])

    @property
    def confident_share(self) -> float:
        """Confident cells / measurable cells (0 when nothing is measurable)."""
        m = self.measurable if self.measurable is not None else np.ones_like(self.valid)
        return float(self.valid.sum() / m.sum()) if m.any() else 0.0

    @property
    def has_signal(self) -> bool:
        """Whether the real pair matches clearly more often than unrelated features do (≥ 2× the null's share and
        5 points above it)."""
        return self.confident_share >= max(2 * self.null_share, self.null_share + 0.05)


def _peaks(src: torch.Tensor, ref: torch.Tensor, radius: int, patch: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correlation volume (k, k, h, w) of unit-normalised maps (patch-averaged), best score, its index, strength."""
    c, h, w = src.shape
    k = 2 * radius + 1
    padded = F.pad(src, (radius, radius, radius, radius))  # outside the map: zero vectors → cosine 0
    cost = torch.empty((k, k, h, w))
    with torch.inference_mode():
        for i in range(k):
            for j in range(k):
                cost[i, j] = (padded[:, i:i + h, j:j + w] * ref).sum(0)
    if patch > 1:  # aggregate over a patch of cells: a steadier, more symmetric peak (as block matching does)
        cost = F.avg_pool2d(cost.view(k * k, 1, h, w), patch, stride=1, padding=patch // 2,
                            count_include_pad=False).view(k, k, h, w)
    flat = cost.view(k * k, h, w)
    best, idx = flat.max(0)
    return cost, best, idx, best - flat.median(0).values


def _null_strength(src: torch.Tensor, ref: torch.Tensor, src_texture: torch.Tensor, shift: tuple[int, int],
                   radius: int, patch: int, base: torch.Tensor, min_texture: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak strength and measurable cells when the source is rolled by ``shift`` (beyond the search radius)."""
    rolled = torch.roll(src, shift, dims=(1, 2))
    _, _, idx, strength = _peaks(rolled, ref, radius, patch)
    k = 2 * radius + 1
    iy, ix = idx // k, idx % k
    edge = (iy == 0) | (iy == k - 1) | (ix == 0) | (ix == k - 1)
    measurable = base & (torch.roll(src_texture, shift, dims=(0, 1)) >= min_texture)
    return strength, measurable & ~edge, measurable


def _null_shifts(h: int, w: int, radius: int) -> list[tuple[int, int]]:
    """Three rolls of the source that move every cell by more than ``radius`` in at least one axis (two to
    calibrate, one to report), spread over the map."""
    out = []
    for fy, fx in ((1 / 3, 1 / 3), (2 / 3, 2 / 3), (1 / 2, 1 / 2)):
        sy, sx = int(round(h * fy)), int(round(w * fx))
        if min(sy, h - sy) <= radius and min(sx, w - sx) <= radius:  # too small a map: move along the larger axis
            sx = w // 2 if w >= h else 0
            sy = h // 2 if h > w else 0
        out.append((sy, sx))
    return out


def estimate_displacement(
    source: np.ndarray, reference: np.ndarray, *, radius: int = DEFAULT_RADIUS,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE, patch: int = 3, channels: int | None = DEFAULT_CHANNELS,
    alpha: float = DEFAULT_ALPHA, min_texture: float = MIN_TEXTURE,
) -> Displacement:
    """Displacement ``d`` with ``source(p + d) ≈ reference(p)`` for (C, h, w) maps (see the module docstring).

    ``channels``: correlate on the top principal components of both maps together (one shared projection, as the
    PCA views use) when C is larger — the cost is (2r+1)² dot products of ``channels`` values per cell, bounded
    whatever the neck width (at r = 3 and 32 components, 1,568 multiply-adds per cell), four times over (the real
    pair and three nulls).
    """
    if source.shape != reference.shape or source.ndim != 3:
        raise ValueError(f"source {source.shape} and reference {reference.shape} must be the same (C, h, w)")
    if not 1 <= radius <= 16:
        raise ValueError(f"radius must be 1..16 feature pixels, got {radius}")
    src_std, ref_std = _standardise_map(source), _standardise_map(reference)
    # the source must be textured over the whole search window (a partly flat window inflates any peak), the
    # reference around the cell
    src_tex = -F.max_pool2d(-_texture(src_std, patch)[None], 2 * radius + 1, stride=1, padding=radius)[0]
    ref_tex = _texture(ref_std, patch)
    src, ref = F.normalize(src_std, dim=0), F.normalize(ref_std, dim=0)
    if channels and src.shape[0] > channels:
        src, ref = _shared_projection(src, ref, channels)
    c, h, w = src.shape
    k = 2 * radius + 1
    cost, best, idx, conf = _peaks(src, ref, radius, patch)
    iy, ix = idx // k, idx % k

    def subpixel(lo: torch.Tensor, mid: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        denom = lo - 2 * mid + hi
        return torch.where(denom < -1e-9, (lo - hi) / (2 * denom.clamp(max=-1e-9)), torch.zeros_like(mid)).clamp(-0.5, 0.5)

    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    edge = (iy == 0) | (iy == k - 1) | (ix == 0) | (ix == k - 1)
    iyc, ixc = iy.clamp(1, k - 2), ix.clamp(1, k - 2)
    dy = iy.float() - radius + subpixel(cost[iyc - 1, ix, yy, xx], best, cost[iyc + 1, ix, yy, xx]) * (~edge)
    dx = ix.float() - radius + subpixel(cost[iy, ixc - 1, yy, xx], best, cost[iy, ixc + 1, yy, xx]) * (~edge)
    inside = torch.zeros((h, w), dtype=torch.bool)
    inside[radius:h - radius, radius:w - radius] = True  # the whole search window lies on the map
    base = inside & (ref_tex >= min_texture)
    measurable = base & (src_tex >= min_texture)
    *calib, report = _null_shifts(h, w, radius)
    null_strengths = []
    for shift in calib:
        strength, _, null_measurable = _null_strength(src, ref, src_tex, shift, radius, patch, base, min_texture)
        null_strengths.append(strength[null_measurable])
    pooled = torch.cat(null_strengths)
    threshold = max(float(torch.quantile(pooled, 1 - alpha)) if pooled.numel() else math.inf, min_confidence)
    strength, null_ok, null_measurable = _null_strength(src, ref, src_tex, report, radius, patch, base, min_texture)
    n_null = int(null_measurable.sum())
    null_share = float((null_ok & (strength >= threshold)).sum() / n_null) if n_null else 0.0
    valid = measurable & ~edge & (conf >= threshold)
    return Displacement(torch.stack([dy, dx]).numpy(), conf.numpy(), valid.numpy(), radius, measurable.numpy(),
                        threshold, null_share)


def _cosine_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x, y = _standardise(a, b)
    return (x * y).sum(0).numpy()


def _level_bands(gt: np.ndarray | None, shape: tuple[int, int], stride: int, width_px: int) -> np.ndarray | None:
    """Cells whose centre lies within ``width_px`` image pixels of a ground-truth boundary."""
    if gt is None:
        return None
    from .metrics.boundary import distance_to_boundary

    dist = distance_to_boundary(np.asarray(gt))
    h, w = shape
    ys = np.minimum((np.arange(h) * stride + stride // 2), gt.shape[0] - 1)
    xs = np.minimum((np.arange(w) * stride + stride // 2), gt.shape[1] - 1)
    return dist[np.ix_(ys, xs)] <= width_px


def _epe_cos(learned: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    if not mask.any():
        return {"cells": 0, "epe": math.nan, "cosine": math.nan}
    lv, tv = learned[:, mask], target[:, mask]
    epe = float(np.hypot(*(lv - tv)).mean())
    ln, tn = np.hypot(*lv), np.hypot(*tv)
    moving = (ln > 1e-3) & (tn > 1e-3)
    cos = float(((lv * tv).sum(0)[moving] / (ln[moving] * tn[moving])).mean()) if moving.any() else math.nan
    return {"cells": int(mask.sum()), "epe": epe, "cosine": cos}


@dataclass
class LevelAlignment:
    """Alignment numbers of one FaPN level (feature pixels; ``stride`` converts to image pixels)."""

    level: str
    stride: int
    displacement: Displacement
    learned: np.ndarray  # (2, h, w) mask-weighted mean offset
    overall: dict[str, float]
    near_boundary: dict[str, float] | None
    away: dict[str, float] | None
    best_group: int
    best_group_stats: dict[str, float]
    similarity_before: np.ndarray  # (h, w) cosine lateral vs feat_up
    similarity_after: np.ndarray | None  # (h, w) cosine lateral vs relu(DCN(feat_up))
    mean_similarity: dict[str, float] = field(default_factory=dict)

    def verdict(self) -> str:
        """One line on what the numbers say for this level ("no measurable signal" when the real pair matches no
        more often than unrelated features do)."""
        d = self.displacement
        est = float(np.median(d.magnitude[d.valid])) if d.valid.any() else math.nan
        learned = float(np.median(np.hypot(*self.learned)))
        sim = self.mean_similarity
        gain = sim.get("after", math.nan) - sim.get("before", math.nan)
        share = (f"{d.confident_share:.0%} of measurable cells match confidently (unrelated features: "
                 f"{d.null_share:.0%})")
        if not d.has_signal:
            parts = [f"{self.level}: no measurable signal — {share}, so there is no misalignment to compare the "
                     f"learned offsets with (median {learned:.2f} feature px)"]
        else:
            parts = [f"{self.level}: {share}; estimated misalignment median {est:.2f} feature px, learned mean "
                     f"offset median {learned:.2f} px"]
            epe, cos = self.overall["epe"], self.overall["cosine"]
            if not math.isnan(epe):
                agrees = cos > 0.5 and epe < max(0.5, est)
                parts.append(f"offsets {'follow' if agrees else 'do not follow'} the misalignment "
                             f"(EPE {epe:.2f} px, cosine {cos:.2f})")
        if not math.isnan(gain):
            change = "rises" if gain > 0.02 else "falls" if gain < -0.02 else "is unchanged"
            parts.append(f"similarity to the lateral feature {change} after the FAM ({sim['before']:.2f} → "
                         f"{sim['after']:.2f})")
        if d.has_signal and not math.isnan(est) and learned > 2 * max(est, 0.25):
            parts.append("the offsets are much larger than the misalignment: the DCN samples context rather than "
                         "correcting a shift")
        return "; ".join(parts) + "."


def align_level(fam: FAMCapture, *, gt: np.ndarray | None = None, radius: int = DEFAULT_RADIUS,
                min_confidence: float = DEFAULT_MIN_CONFIDENCE, band_px: int = BAND_WIDTHS_PX[0]) -> LevelAlignment:
    """All alignment numbers of one captured FAM level (needs ``fam_features`` captured)."""
    if fam.feat_up is None or fam.lateral is None:
        raise ValueError(f"{fam.level}: capture 'fam_features' to measure alignment (feat_up and lateral missing)")
    disp = estimate_displacement(fam.feat_up, fam.lateral, radius=radius, min_confidence=min_confidence)
    learned = fam.field(weighted=True, image_px=False)
    stats = _epe_cos(learned, disp.field, disp.valid)
    near = away = None
    band = _level_bands(gt, disp.valid.shape, fam.stride, band_px)
    if band is not None:
        near = _epe_cos(learned, disp.field, disp.valid & band)
        away = _epe_cos(learned, disp.field, disp.valid & ~band)
    groups = [_epe_cos(fam.field(group=g, weighted=True, image_px=False), disp.field, disp.valid)
              for g in range(fam.groups)]
    best = int(np.nanargmin([g["epe"] for g in groups])) if disp.valid.any() else 0
    before = _cosine_map(fam.feat_up, fam.lateral)
    after = None
    sims = {"before": float(before.mean())}
    if fam.aligned is not None:
        after = _cosine_map(fam.aligned - fam.lateral, fam.lateral)
        sims["after"] = float(after.mean())
    if band is not None:
        sims["before_near_boundary"] = float(before[band].mean()) if band.any() else math.nan
        if after is not None:
            sims["after_near_boundary"] = float(after[band].mean()) if band.any() else math.nan
    return LevelAlignment(fam.level, fam.stride, disp, learned, stats, near, away, best, groups[best], before, after,
                          sims)


def fpn_topdown(laterals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An FPN's top-down input at each level: ``nearest×2(prev)`` with ``prev_L = lateral_L + nearest×2(prev_{L+1})``
    (detectron2's FPN), from its lateral convs' outputs ``{"p2": (C, h, w), …}``; keys are the receiving levels."""
    levels = sorted(laterals, key=lambda k: int(k[1:]), reverse=True)
    prev = torch.as_tensor(laterals[levels[0]])[None]
    out = {}
    for lvl in levels[1:]:
        lat = torch.as_tensor(laterals[lvl])[None]
        up = F.interpolate(prev, scale_factor=2.0, mode="nearest")[..., : lat.shape[-2], : lat.shape[-1]]
        out[lvl] = up[0].numpy()
        prev = lat + up
    return out


def similarity(lateral: np.ndarray, topdown: np.ndarray) -> np.ndarray:
    """Cosine per cell of features standardised per channel (each map with its own statistics), (h, w)."""
    return _cosine_map(topdown, lateral)


def summarize(levels: Iterable[LevelAlignment]) -> list[dict[str, float | str]]:
    """One row per level for tables: measurable share, confident share of measurable cells beside the null's
    (unrelated features), EPE/cosine (overall, near/away from boundaries), magnitudes (feature px) and mean
    similarity before/after."""
    rows = []
    for la in levels:
        d = la.displacement
        measurable = d.measurable if d.measurable is not None else np.ones_like(d.valid)
        row: dict[str, float | str] = {
            "level": la.level, "stride": la.stride, "measurable": float(measurable.mean()),
            "confident": d.confident_share, "null_confident": d.null_share,
            "est_px": float(np.median(d.magnitude[d.valid])) if d.valid.any() else math.nan,
            "learned_px": float(np.median(np.hypot(*la.learned))),
            "epe": la.overall["epe"], "cosine": la.overall["cosine"],
            "best_group": la.best_group, "best_group_epe": la.best_group_stats["epe"],
        }
        for name, part in (("near", la.near_boundary), ("away", la.away)):
            if part is not None:
                row[f"epe_{name}"], row[f"cosine_{name}"] = part["epe"], part["cosine"]
        row.update({f"sim_{k}": v for k, v in la.mean_similarity.items()})
        rows.append(row)
    return rows


class AlignmentAccumulator:
    """Per-level means of :func:`summarize` rows over a dataset (NaNs skipped), resumable and mergeable."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, levels: Iterable[LevelAlignment]) -> None:
        for row in summarize(levels):
            lvl = str(row["level"])
            s, c = self.sums.setdefault(lvl, {}), self.counts.setdefault(lvl, {})
            for k, v in row.items():
                if k in ("level", "best_group") or not isinstance(v, (int, float)) or math.isnan(float(v)):
                    continue
                s[k] = s.get(k, 0.0) + float(v)
                c[k] = c.get(k, 0) + 1

    def merge(self, other: "AlignmentAccumulator") -> None:
        for lvl in other.sums:
            for k, v in other.sums[lvl].items():
                self.sums.setdefault(lvl, {})[k] = self.sums.get(lvl, {}).get(k, 0.0) + v
                self.counts.setdefault(lvl, {})[k] = self.counts.get(lvl, {}).get(k, 0) + other.counts[lvl][k]

    def state_dict(self) -> dict:
        return {"sums": self.sums, "counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {k: dict(v) for k, v in state["sums"].items()}
        self.counts = {k: {kk: int(vv) for kk, vv in v.items()} for k, v in state["counts"].items()}

    def rows(self) -> list[dict[str, float | str]]:
        """One row per level: the mean of every number over the images where it was defined."""
        out = []
        for lvl in sorted(self.sums, key=lambda k: int(k[1:])):
            row: dict[str, float | str] = {"level": lvl}
            for k, v in self.sums[lvl].items():
                row[k] = round(v / self.counts[lvl][k], 4)
            row["images"] = max(self.counts[lvl].values(), default=0)
            out.append(row)
        return out
