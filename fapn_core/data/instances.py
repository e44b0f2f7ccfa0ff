"""Ground-truth objects from a dataset sample's maps: one object per instance id of a thing class.

A sample carries ``label`` (H, W class ids, 255 = ignore) and ``instances`` (H, W ids, 0 = none). Each
non-zero instance id whose pixels are labelled with a thing class becomes an object with that class (the most
frequent thing label under it), its mask and its box. Boxes are XYXY in pixel-edge coordinates, as COCO's
``[x, y, w, h]`` of the mask: ``x2 = last column + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Objects:
    """``M`` ground-truth objects of one image: ``ids`` (M,) instance ids, ``classes`` (M,) dataset class ids,
    ``masks`` (M, H, W) bool, ``boxes`` (M, 4) float32 XYXY, ``areas`` (M,) pixel counts."""

    ids: np.ndarray
    classes: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def objects_from_maps(label: np.ndarray, instances: np.ndarray, thing_classes: Sequence[int],
                      min_area: int = 1) -> Objects:
    """The thing objects of one sample (see the module docstring); instance ids on stuff or ignore are dropped."""
    label, instances = np.asarray(label), np.asarray(instances)
    if label.shape != instances.shape:
        raise ValueError(f"label map {label.shape} and instance map {instances.shape} differ in size")
    h, w = label.shape
    things = np.asarray(sorted(set(int(c) for c in thing_classes)), np.int64)
    ids_out, classes, masks, boxes, areas = [], [], [], [], []
    is_thing = np.isin(label, things)
    for inst in np.unique(instances[(instances > 0) & is_thing]):
        mask = (instances == inst) & is_thing
        area = int(mask.sum())
        if area < min_area:
            continue
        labels, counts = np.unique(label[mask], return_counts=True)
        ys, xs = np.nonzero(mask)
        ids_out.append(int(inst))
        classes.append(int(labels[np.argmax(counts)]))
        masks.append(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        areas.append(area)
    return Objects(
        np.asarray(ids_out, np.int64), np.asarray(classes, np.int64),
        np.stack(masks) if masks else np.zeros((0, h, w), bool),
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(areas, np.int64),
    )


def panoptic_semantic_target(label: np.ndarray, thing_classes: Sequence[int], stuff_classes: Sequence[int],
                             ignore_index: int = 255) -> np.ndarray:
    """Panoptic FPN's semantic target: every thing pixel → 0, stuff class ``stuff_classes[i]`` → ``i + 1``,
    everything else (ignore, unknown ids) → ``ignore_index``."""
    lut = np.full(256 if label.max(initial=0) < 256 else int(label.max()) + 1, ignore_index, np.int64)
    for c in thing_classes:
        lut[int(c)] = 0
    for i, c in enumerate(stuff_classes):
        lut[int(c)] = i + 1
    return lut[np.asarray(label).astype(np.int64)]
