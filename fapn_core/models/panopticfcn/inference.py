"""One image's inference from the heads' outputs (official ``PanopticFCN.inference``): per-level selection →
merge across levels → thing kernel fusion → rescoring and instance masks → stuff fusion and ``sem_seg`` →
the Panoptic FPN combine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..rcnn.detector import DetectionResult
from ..rcnn.panoptic import combine_panoptic
from .captures import PanopticFCNMaps, image_maps, level_maps
from .generators import StuffGenerator, ThingFusion, ThingGenerator, fuse_stuff_kernels, fuse_thing_kernels
from .options import CENTER_POOL_SIZES, PanopticFCNOptions
from .postprocess import boxes_from_masks, keep_instances, rescore, semantic_output, to_output_size
from .selection import LevelSelection, select_level


@dataclass
class ImageHeads:
    """The heads' outputs for one image: per head level (p3..p7 order) centre logits (K, h, w), region logits
    (S+1, h, w) and kernels (C, h, w); ``encode_feat`` (E, H/4, W/4) of the padded input."""

    centres: list[torch.Tensor]
    regions: list[torch.Tensor]
    kernels: list[torch.Tensor]
    encode_feat: torch.Tensor


@dataclass
class Combine:
    """Panoptic combine settings (``MODEL.INFERENCE.COMBINE``)."""

    overlap_thresh: float = 0.5
    stuff_area_limit: int = 4096
    instances_score_thresh: float = 0.2


def select_levels(heads: ImageHeads, opts: PanopticFCNOptions) -> list[LevelSelection]:
    """Per-level thing and stuff candidates (pool sizes 3, 3, 3, 5, 5 for p3..p7)."""
    return [select_level(c, r, k, pool_size=CENTER_POOL_SIZES[i], center_thresh=opts.center_thresh,
                         stuff_thresh=opts.stuff_thresh, top_num=opts.center_top_num)
            for i, (c, r, k) in enumerate(zip(heads.centres, heads.regions, heads.kernels))]


def merge_things(sels: list[LevelSelection]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thing candidates of all levels in level order, sorted by descending score (stable) → (kernels (n, C),
    classes (n,), scores (n,), table (n, 5) rows ``(level, class, y, x, score)``)."""
    kernels = torch.cat([s.thing_kernels for s in sels])
    classes = torch.cat([s.thing_classes for s in sels])
    scores = torch.cat([s.thing_scores for s in sels])
    table = torch.cat([torch.stack([torch.full_like(s.thing_scores, i), s.thing_classes.to(s.thing_scores.dtype),
                                    torch.div(s.thing_cells, s.peaks.shape[-1], rounding_mode="floor").float(),
                                    (s.thing_cells % s.peaks.shape[-1]).float(), s.thing_scores], dim=1)
                       for i, s in enumerate(sels)])
    order = torch.sort(scores, descending=True, stable=True).indices
    return kernels[order], classes[order], scores[order], table[order]


def infer_image(
    heads: ImageHeads, thing_generator: ThingGenerator, stuff_generator: StuffGenerator, opts: PanopticFCNOptions,
    combine: Combine, *, num_stuff_channels: int, common_stride: int, image_size: tuple[int, int],
    output_size: tuple[int, int], strides: dict[str, int] | None = None, keep_maps: bool = False,
) -> tuple[DetectionResult, PanopticFCNMaps | None]:
    """Instances, ``sem_seg`` (probabilities) and panoptic segments at ``output_size`` for one image."""
    sels = select_levels(heads, opts)
    kernels, classes, scores, table = merge_things(sels)
    fusion: ThingFusion | None = None
    rescored = None
    h, w = output_size
    dev = heads.encode_feat.device
    boxes, out_scores = torch.zeros((0, 4), device=dev), torch.zeros(0, device=dev)
    out_classes = torch.zeros(0, dtype=torch.int64, device=dev)
    masks = torch.zeros((0, h, w), dtype=torch.bool, device=dev)
    if scores.numel():
        meta = thing_generator.embed(kernels)
        fusion = fuse_thing_kernels(meta, classes, scores, thresh=opts.similar_thresh,
                                    class_specific=opts.class_specific)
        logits = thing_generator.mask_logits(fusion.meta, heads.encode_feat)
        probs, _, _, rescored = rescore(logits, fusion.scores, opts.mask_thresh)
        keep = keep_instances(rescored, opts.center_top_num)
        masks = to_output_size(probs[keep], common_stride, image_size, output_size, threshold=opts.mask_thresh)
        boxes, out_scores, out_classes = boxes_from_masks(masks), rescored[keep], fusion.classes[keep].long()
    st_kernels = torch.cat([s.stuff_kernels for s in sels])
    if st_kernels.shape[0]:
        st_meta, st_classes, _ = fuse_stuff_kernels(
            stuff_generator.embed(st_kernels), torch.cat([s.stuff_classes for s in sels]),
            torch.cat([s.stuff_scores for s in sels]))
        st_probs = stuff_generator.mask_logits(st_meta, heads.encode_feat).sigmoid()
        sem = semantic_output(st_probs, st_classes, num_stuff_channels, common_stride, image_size, output_size)
    else:  # the official code fails here (an empty kernel list); every pixel is left to "things" / unassigned
        sem = heads.encode_feat.new_zeros((num_stuff_channels, h, w))
    panoptic, info = combine_panoptic(out_scores, out_classes, masks, sem.argmax(0),
                                      overlap_thresh=combine.overlap_thresh,
                                      stuff_area_limit=combine.stuff_area_limit,
                                      instances_score_thresh=combine.instances_score_thresh)
    result = DetectionResult(output_size, boxes, out_scores, out_classes, masks, None, sem, panoptic, info)
    maps = None
    if keep_maps:
        strides = strides or {}
        names = [f"p{3 + i}" for i in range(len(sels))]
        levels = {n: level_maps(n, strides.get(n, 2 ** int(n[1:])), s, image_size) for n, s in zip(names, sels)}
        maps = image_maps(levels, table, fusion, rescored)
    return result, maps
