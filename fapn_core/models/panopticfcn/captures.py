"""What a PanopticFCN shows besides its outputs: centre heatmaps with the kept peaks and stuff region maps per
level, the thing candidates across levels and the kernel-fusion decisions (one :class:`PanopticFCNMaps` per image).

Collected with :meth:`~fapn_core.models.panopticfcn.model.PanopticFCN.capture_maps`; maps are cropped to the
image's valid cells (``ceil(H / stride)`` × ``ceil(W / stride)``) and held as CPU numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .generators import ThingFusion
from .selection import LevelSelection


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


@dataclass
class LevelMaps:
    """One level (``p3``..``p7``) of one image.

    ``centres`` (K, h, w): smoothed centre heatmap ``(σ + avgpool σ) / 2`` per thing class; ``nms`` (K, h, w): the
    map after max-pool NMS (what top-k reads); ``peaks`` (n, 4): kept peaks as rows ``(class, y, x, score)`` in
    cells (score > threshold); ``regions`` (S+1, h, w): σ of the stuff region logits (channel 0 = things);
    ``stuff`` (m, 2): kept stuff candidates ``(class, score)``.
    """

    level: str
    stride: int
    centres: np.ndarray
    nms: np.ndarray
    peaks: np.ndarray
    regions: np.ndarray
    stuff: np.ndarray

    def peaks_image_xy(self) -> np.ndarray:
        """(n, 2) peak positions in input-image pixels: the centre of each cell, ``(cell + 0.5) · stride``."""
        return (self.peaks[:, [2, 1]] + 0.5) * self.stride

    @property
    def region_labels(self) -> np.ndarray:
        """(h, w) argmax of ``regions`` (first channel on ties), as the stuff selection reads it."""
        return self.regions.argmax(0)


@dataclass
class PanopticFCNMaps:
    """One image: ``levels`` by name; ``candidates`` (n, 5) thing candidates after the score sort, rows
    ``(level index, class, y, x, score)``; ``fusion_keep`` (n,) bool and ``fusion_assign`` (m, n) bool: kernel
    fusion's decisions (row = kept candidate, columns = candidates averaged into it); ``rescored`` (m,): scores
    after mask rescoring, in fused order."""

    levels: dict[str, LevelMaps] = field(default_factory=dict)
    candidates: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    fusion_keep: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    fusion_assign: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    rescored: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def level_maps(name: str, stride: int, sel: LevelSelection, image_size: tuple[int, int]) -> LevelMaps:
    """A :class:`LevelMaps` from one level's selection, cropped to the valid cells of ``image_size``."""
    h, w = math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)
    width = sel.centres.shape[-1]
    ys = torch.div(sel.thing_cells, width, rounding_mode="floor")
    peaks = torch.stack([sel.thing_classes.float(), ys.float(), (sel.thing_cells % width).float(),
                         sel.thing_scores.float()], dim=1) if sel.thing_cells.numel() else torch.zeros((0, 4))
    stuff = torch.stack([sel.stuff_classes.float(), sel.stuff_scores.float()], dim=1) \
        if sel.stuff_classes.numel() else torch.zeros((0, 2))
    return LevelMaps(name, stride, _np(sel.centres[:, :h, :w]), _np(sel.peaks[:, :h, :w]), _np(peaks),
                     _np(sel.regions[:, :h, :w]), _np(stuff))


def image_maps(levels: dict[str, LevelMaps], candidates: torch.Tensor, fusion: ThingFusion | None,
               rescored: torch.Tensor | None) -> PanopticFCNMaps:
    out = PanopticFCNMaps(levels=levels, candidates=_np(candidates))
    if fusion is not None:
        out.fusion_keep, out.fusion_assign = _np(fusion.keep), _np(fusion.assign)
    if rescored is not None:
        out.rescored = _np(rescored)
    return out
