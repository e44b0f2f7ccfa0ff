"""Each family's parts as module paths: what the Models page lists with parameters, FLOPs and latency, and what
``fapn bench`` times per part. A part is a label and the submodules that make it (``backbone``,
``roi_heads.mask_head``, …); paths a model lacks are left out."""

from __future__ import annotations

from torch import nn


def _family_parts(model: nn.Module) -> dict[str, tuple[str, ...]]:
    if hasattr(model, "position_head"):  # PanopticFCN
        return {"backbone": ("backbone",), "neck": ("neck",), "P6/P7 top block": ("top_block",),
                "semantic FPN + feature encoder": ("semantic_fpn", "feature_encoder"),
                "position head (centres, regions)": ("position_head",), "kernel head": ("kernel_head",),
                # the generators' ``embed`` runs inside inference, not as a forward: their time and FLOPs fall in "rest"
                "kernel generators (thing, stuff)": ("thing_generator", "stuff_generator")}
    if getattr(model, "semantic_output", "logits") == "scores":  # MaskFormer
        return {"backbone": ("backbone",), "pixel decoder": ("neck", "neck.mask_features"),
                "transformer decoder + class/mask heads": ("head",)}
    if hasattr(model, "roi_heads"):  # the R-CNN family
        mask = getattr(model.roi_heads, "mask_head", None)
        mask_label = "mask head (PointRend: coarse + point head)" if hasattr(mask, "point_head") else "mask head"
        return {"backbone": ("backbone",), "neck": ("neck",), "RPN": ("proposal_generator",),
                "box head": ("roi_heads.box_pooler", "roi_heads.box_head", "roi_heads.box_predictor"),
                mask_label: ("roi_heads.mask_pooler", "roi_heads.mask_head"), "semantic head": ("head",)}
    head = getattr(model, "head", None)
    return {"backbone": ("backbone",), "neck": ("neck",),
            ("PointRend semantic head" if hasattr(head, "point_head") else "semantic head"): ("head",)}


def rest_label(model: nn.Module) -> str:
    """What runs outside the parts' modules, in words (the Models page's last row)."""
    if hasattr(model, "position_head"):
        return "rest (peak selection, kernel fusion, masks, panoptic combine)"
    if getattr(model, "semantic_output", "logits") == "scores":
        return "rest (pre-processing, semantic inference)"
    if hasattr(model, "roi_heads"):
        return "rest (box decoding, NMS, mask paste" + (", panoptic combine)" if hasattr(model, "head") else ")")
    return "rest (pre-processing, upsampling)"


def model_parts(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Label → module paths of ``model``'s parts, in forward order, only those it has."""
    out = {}
    for label, paths in _family_parts(model).items():
        present = tuple(p for p in paths if _has(model, p))
        if present:
            out[label] = present
    return out


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def part_parameters(model: nn.Module, paths: tuple[str, ...]) -> int:
    """Parameters of the modules at ``paths`` (each counted once)."""
    seen: dict[int, int] = {}
    for p in paths:
        for t in model.get_submodule(p).parameters():
            seen[id(t)] = t.numel()
    return sum(seen.values())
