"""Official (detectron2 / FaPN-full / MaskFormer / PanopticFCN) state-dict key names ↔ native names."""

from __future__ import annotations

import re

import torch

from ..models.d2_names import PYRAMID_RULES, lateral_to_official
from ..models.maskformer import convert as maskformer_convert
from ..models.panopticfcn import convert as panopticfcn_convert

_D2_RULES: list[tuple[re.Pattern[str], str]] = [
    *panopticfcn_convert.D2_RULES,  # PanopticFCN: top_block, position/kernel heads, feature encoder
    *PYRAMID_RULES,  # backbone and FPN/FaPN neck
    # PointRend instance checkpoints saved before detectron2 renamed the heads (what PointRendROIHeads and
    # ConvFCHead convert when a checkpoint has no version metadata); no-ops on current checkpoints
    (re.compile(r"^roi_heads\.(?:mask_coarse_head|mask_head\.coarse_head)\.coarse_mask_fc(\d+)\."),
     r"roi_heads.mask_head.coarse_head.fc\1."),
    (re.compile(r"^roi_heads\.mask_coarse_head\."), "roi_heads.mask_head.coarse_head."),
    (re.compile(r"^roi_heads\.mask_point_head\."), "roi_heads.mask_head.point_head."),
    (re.compile(r"^sem_seg_head\.coarse_sem_seg_head\."), "head.coarse_sem_seg_head."),
    (re.compile(r"^sem_seg_head\.point_head\."), "head.point_head."),
    *maskformer_convert.D2_RULES,  # MaskFormer: pixel decoder → neck., transformer predictor → head.
    (re.compile(r"^sem_seg_head\."), "head."),
]
_NATIVE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^neck\.align(\d)\.lateral\."), r"backbone.fan_align\1.lateral_conv."),
    (re.compile(r"^neck\.align(\d)\.offset\."), r"backbone.fan_align\1.offset."),
    (re.compile(r"^neck\.align(\d)\.dcn\."), r"backbone.fan_align\1.dcpack_L2."),
    (re.compile(r"^neck\.output(\d)\."), r"backbone.fpn_output\1."),
    (re.compile(r"^head\.coarse_sem_seg_head\."), "sem_seg_head.coarse_sem_seg_head."),
    (re.compile(r"^head\.point_head\."), "sem_seg_head.point_head."),
    (re.compile(r"^head\."), "sem_seg_head."),
    (re.compile(r"^backbone\."), "backbone.bottom_up."),
]
_IGNORED_D2_KEYS = {"pixel_mean", "pixel_std"}


def detectron2_to_native(key: str) -> str | None:
    """Native parameter name for a detectron2/FaPN-full state-dict key (``None`` for keys with no meaning here)."""
    if key in _IGNORED_D2_KEYS:
        return None
    for pattern, repl in _D2_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def native_to_detectron2(key: str, neck: str, head: str = "") -> str:
    """Inverse of :func:`detectron2_to_native` (``neck`` decides how ``neck.lateralL`` is spelled; ``head`` =
    ``"maskformer"`` for MaskFormer keys, whose backbone has no ``bottom_up``)."""
    if head == "maskformer":
        return maskformer_convert.native_to_official(key)
    if head == "panopticfcn":
        return panopticfcn_convert.native_to_official(key, neck)
    lateral = lateral_to_official(key, neck)
    if lateral is not None:
        return lateral
    for pattern, repl in _NATIVE_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def export_detectron2_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Native state dict renamed to detectron2/FaPN-full keys (for round-trip tests and interop)."""
    neck, head = model.config.neck, model.config.head
    return {native_to_detectron2(k, neck, head): v for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}
