"""Panoptic FPN's combine step (detectron2 ``combine_semantic_and_instance_outputs``)."""

from __future__ import annotations

from typing import Any

import torch


def combine_panoptic(
    scores: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor, semantic: torch.Tensor, *,
    overlap_thresh: float = 0.5, stuff_area_limit: int = 4096, instances_score_thresh: float = 0.5,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Segment ids (H, W) int32 (0 = unassigned) and ``segments_info``.

    Instances in descending score until the first below ``instances_score_thresh``; empty masks skipped;
    an instance whose mask overlaps already-assigned pixels by more than ``overlap_thresh`` of its area is
    skipped, otherwise it takes its unassigned pixels. Then each semantic label present, ascending, except 0
    (the merged "things" class), takes its unassigned pixels if they number at least ``stuff_area_limit``.
    Thing ``category_id`` is the ROI class; stuff ``category_id`` the semantic channel.
    """
    panoptic = torch.zeros_like(semantic, dtype=torch.int32)
    info: list[dict[str, Any]] = []
    seg_id = 0
    masks = masks.to(dtype=torch.bool, device=panoptic.device)
    for inst in torch.argsort(-scores).tolist():
        score = float(scores[inst])
        if score < instances_score_thresh:
            break
        mask = masks[inst]
        area = int(mask.sum())
        if area == 0:
            continue
        taken = mask & (panoptic > 0)
        overlap = int(taken.sum())
        if overlap / area > overlap_thresh:
            continue
        if overlap:
            mask = mask & (panoptic == 0)
        seg_id += 1
        panoptic[mask] = seg_id
        info.append({"id": seg_id, "isthing": True, "score": score, "category_id": int(classes[inst]),
                     "instance_id": inst})
    for label in torch.unique(semantic).tolist():
        if label == 0:
            continue
        mask = (semantic == label) & (panoptic == 0)
        area = int(mask.sum())
        if area < stuff_area_limit:
            continue
        seg_id += 1
        panoptic[mask] = seg_id
        info.append({"id": seg_id, "isthing": False, "category_id": int(label), "area": area})
    return panoptic, info


def panoptic_to_labels(panoptic_seg: torch.Tensor, segments_info: list[dict[str, Any]], semantic: torch.Tensor,
                       thing_ids: list[int], stuff_ids: list[int | None], ignore_index: int = 255) -> torch.Tensor:
    """A Panoptic FPN result as a semantic label map in the dataset's class ids (H, W) int64.

    Stuff pixels come from the semantic head (``semantic``: its argmax; channel ``c`` → ``stuff_ids[c]``, even where
    the combine dropped a small region), thing pixels from the panoptic segments (ROI class ``k`` →
    ``thing_ids[k]``); pixels the semantic head calls "thing" that no kept instance covers are ``ignore_index``
    (a thing of unknown class: void, not a guess).
    """
    lut = torch.full((len(stuff_ids),), ignore_index, dtype=torch.int64)
    for c, cid in enumerate(stuff_ids):
        if c > 0 and cid is not None:
            lut[c] = int(cid)
    labels = lut[semantic.to(torch.int64).cpu()]
    seg = panoptic_seg.cpu()
    for s in segments_info:
        if s["isthing"]:
            labels[seg == int(s["id"])] = int(thing_ids[int(s["category_id"])])
    return labels
