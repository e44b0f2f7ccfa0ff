"""Model cards: what travels with every checkpoint (config, classes, palette, normalisation, training data,
metrics, counts), the class names of official releases, and the label space a model's predictions are read in."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..models.zoo import ModelConfig, count_parameters

FORMAT_VERSION = 1

def make_card(model: torch.nn.Module, **fields: Any) -> dict[str, Any]:
    """A model card: config, classes, palette, normalisation, training data, metrics and counts."""
    cfg: ModelConfig = model.config
    card: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "config": cfg.to_dict(),
        "num_params": count_parameters(model),
        "normalization": {"input_format": cfg.input_format, "pixel_mean": list(cfg.pixel_mean),
                          "pixel_std": list(cfg.pixel_std)},
        "task": cfg.task,
        "classes": [f"class_{i}" for i in range(cfg.num_classes)],
        "palette": None,
        "training_data": None,
        "metrics": {},
    }
    if cfg.task != "semantic":
        # thing classes are ``classes`` (ROI class ids 0..K-1); dataset category ids where known (COCO JSON)
        card["thing_category_ids"] = None
    if cfg.task == "panoptic":
        card["stuff_classes"] = ["things"] + [f"stuff_{i}" for i in range(1, cfg.sem_seg_num_classes)]
        card["stuff_category_ids"] = None
    card.update(fields)
    if len(card["classes"]) != cfg.num_classes:
        raise ValueError(f"card lists {len(card['classes'])} classes, model has {cfg.num_classes}")
    if cfg.task == "panoptic" and len(card["stuff_classes"]) != cfg.sem_seg_num_classes:
        raise ValueError(f"card lists {len(card['stuff_classes'])} semantic classes (channel 0 = things), "
                         f"the semantic head has {cfg.sem_seg_num_classes}")
    for key, n in (("thing_category_ids", cfg.num_classes), ("stuff_category_ids", cfg.sem_seg_num_classes)):
        ids = card.get(key)
        if ids is not None and len(ids) != n:
            raise ValueError(f"card's {key} has {len(ids)} entries, expected {n}")
    return card


def semantic_classes(card: Mapping[str, Any]) -> tuple[list[str], list[list[int]] | None] | None:
    """The semantic label space a model's predictions can be read in: its classes and palette for a semantic
    model; for Panoptic FPN the dataset classes its thing and stuff category ids point to (names and colours at
    those ids); ``None`` for detectors without a semantic output or without category ids."""
    task = card.get("task", "semantic")
    if task == "semantic":
        return list(card.get("classes") or []), card.get("palette")
    things, stuff = card.get("thing_category_ids"), card.get("stuff_category_ids")
    if task != "panoptic" or not things or not stuff or any(i is None for i in stuff[1:]):
        return None
    ids = [int(i) for i in things] + [int(i) for i in stuff[1:]]
    if min(ids) < 0 or len(set(ids)) != len(ids) or max(ids) >= 4096:
        return None
    names = [f"class_{i}" for i in range(max(ids) + 1)]
    pal: list[list[int]] | None = [[128, 128, 128] for _ in names]
    for i, name in zip(things, card.get("classes", [])):
        names[int(i)] = str(name)
    for i, name in zip(stuff[1:], card.get("stuff_classes", [])[1:]):
        names[int(i)] = str(name)
    for ids_, key, skip in ((things, "palette", 0), (stuff, "stuff_palette", 1)):
        colours = card.get(key)
        if colours is None:
            pal = None
            break
        for i, c in zip(ids_[skip:], colours[skip:]):
            pal[int(i)] = [int(v) for v in c]
    return names, pal


def official_class_fields(cfg: ModelConfig) -> dict[str, Any]:
    """Class names (and ids, palettes) of an official release, from its class counts: COCO 2017 for 80 thing
    classes (and 54 Panoptic FPN channels); for semantic models Cityscapes (19), ADE20K SceneParsing (150) or
    COCO-Stuff (171, MaskFormer's contiguous ids); ``{}`` otherwise."""
    from ..data.cityscapes import cityscapes_card_fields
    from ..data.coco_meta import coco_card_fields, coco_stuff_171
    from ..data.palettes import ADE20K_CLASSES, ADE20K_PALETTE

    if cfg.task != "semantic":
        return coco_card_fields(cfg.task, cfg.num_classes, cfg.sem_seg_num_classes)
    if cfg.num_classes == 19:
        return {**cityscapes_card_fields(), "training_data": "Cityscapes (assumed from the 19 classes)"}
    if cfg.num_classes == len(ADE20K_CLASSES):
        return {"classes": list(ADE20K_CLASSES), "palette": np.asarray(ADE20K_PALETTE).tolist(),
                "training_data": "ADE20K SceneParsing (assumed from the 150 classes)"}
    if cfg.num_classes == 171:
        names, colours = coco_stuff_171()
        return {"classes": names, "palette": colours,
                "training_data": "COCO-Stuff (assumed from the 171 classes; FaPN-full's R101 release: COCO-Stuff-10K)"}
    return {}
