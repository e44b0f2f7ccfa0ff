"""Cityscapes reader (fine annotations, 19 trainIds) and the official evaluation conventions.

The evaluation conventions are those of cityscapesScripts' ``evalPixelLevelSemanticLabeling.py``:
thing classes person..bicycle, its average instance sizes for iIoU, instances = ids >= 1000 only
(group regions such as ``26`` = a group of cars are not instances), void label ids in predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..metrics.objects import CITYSCAPES_AVG_INSTANCE_SIZE
from ._io import list_dir
from .datasets import SegmentationDataset, Transform, _load_pair, Sample
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

# Official labelId -> trainId table (cityscapesScripts labels.py); everything else -> 255.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
TRAIN_ID_TO_LABEL_ID: dict[int, int] = {v: k for k, v in LABEL_ID_TO_TRAIN_ID.items()}
NUM_LABEL_IDS = 34  # labelIds 0..33 ("unlabeled" .. "bicycle")
#: trainIds of the classes with instances that the official script evaluates (hasInstances and not
#: ignoreInEval): person, rider, car, truck, bus, train, motorcycle, bicycle
THING_CLASSES: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)
#: instance ids are ``labelId * 1000 + k``; smaller non-zero ids are a class id (stuff, or a group region)
INSTANCE_ID_OFFSET = 1000
_LUT = np.full(256, IGNORE_INDEX, np.int64)
for _k, _v in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_k] = _v


def label_ids_to_train_ids(label_ids: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Map a Cityscapes labelIds map to trainIds (0..18, 255 = ignore); 255 stays ignore."""
    bad = np.unique(label_ids[((label_ids < 0) | (label_ids >= NUM_LABEL_IDS)) & (label_ids != IGNORE_INDEX)])
    if bad.size:
        raise ValueError(f"label file {path} has values {bad[:20].tolist()} that are not Cityscapes labelIds (0..33)")
    return _LUT[label_ids]


def prediction_label_ids_to_train_ids(pred: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Map a prediction in labelIds (0..33, as the official script reads) to trainIds; void ids -> 255.

    Void label ids (unlabeled, parking, caravan, ...) become 255: with ``compare(..., allow_void=True)``
    they count as false negatives of the GT class at labelled pixels, as in the official script.
    """
    bad = np.unique(pred[(pred < 0) | (pred >= NUM_LABEL_IDS)])
    if bad.size:
        raise ValueError(f"prediction {path} has values {bad[:20].tolist()} that are not Cityscapes labelIds (0..33)")
    return _LUT[pred]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """trainIds (0..18) -> labelIds (uint8), the official results format; 255 -> 0 (unlabeled)."""
    lut = np.zeros(256, np.uint8)
    for t, lid in TRAIN_ID_TO_LABEL_ID.items():
        lut[t] = lid
    ids = np.asarray(train_ids)
    bad = np.unique(ids[((ids < 0) | (ids > 18)) & (ids != IGNORE_INDEX)])
    if bad.size:
        raise ValueError(f"values {bad[:20].tolist()} are not Cityscapes trainIds (0..18, 255)")
    return lut[ids]


def official_instances(instance_ids: np.ndarray) -> np.ndarray:
    """Instance map of a raw ``*_gtFine_instanceIds.png`` as the official evaluator uses it.

    Only ids >= 1000 (``labelId * 1000 + k``) are instances. Smaller ids are the plain labelId of
    stuff pixels or of a *group region* (e.g. 26 = a group of cars, 24 = a crowd): the official
    script never scores them as instances, so they become 0 here. Pass the result as ``instances=``
    to ``fapn_core.metrics.compare``.
    """
    ids = np.asarray(instance_ids)
    return np.where(ids >= INSTANCE_ID_OFFSET, ids, 0).astype(np.int32)


def cityscapes_card_fields() -> dict[str, Any]:
    """Model-card fields of a Cityscapes model: classes, palette, thing classes and the official
    average instance sizes (so per-image iIoU and object tables follow the official evaluator)."""
    return {"classes": list(CITYSCAPES_CLASSES), "palette": CITYSCAPES_PALETTE.tolist(),
            "thing_classes": list(THING_CLASSES), "avg_instance_size": dict(CITYSCAPES_AVG_INSTANCE_SIZE)}


class CityscapesDataset(SegmentationDataset):
    """``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``root/gtFine/<split>/<city>/`` labels.

    Uses ``*_gtFine_labelTrainIds.png`` when present, else converts ``*_gtFine_labelIds.png`` with the
    official table. Instances come from ``*_gtFine_instanceIds.png``: ids >= 1000 (``labelId * 1000 + k``)
    are kept, everything else (stuff, group regions, and pixels whose class is ignored) is 0.
    ``thing_classes`` and ``avg_instance_size`` are the official evaluator's.
    """

    thing_classes = THING_CLASSES
    avg_instance_size = CITYSCAPES_AVG_INSTANCE_SIZE
    label_id_to_class = LABEL_ID_TO_TRAIN_ID

    def __init__(self, root: str | Path, split: str = "val", require_labels: bool = True,
                 transform: Transform | None = None) -> None:
        super().__init__(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, transform)
        self.root, self.split = Path(root), split
        img_dir = self.root / "leftImg8bit" / split
        expected = (f"expected {self.root}/leftImg8bit/{split}/<city>/*_leftImg8bit.png and "
                    f"{self.root}/gtFine/{split}/<city>/*_gtFine_labelIds.png")
        if not img_dir.is_dir():
            raise FileNotFoundError(f"Cityscapes images not found: {expected}; found in {self.root}: "
                                    f"{list_dir(self.root)}")
        images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
        if not images:
            raise FileNotFoundError(f"no *_leftImg8bit.png files under {img_dir}/<city>/ ({expected}); "
                                    f"found: {list_dir(img_dir)}")
        self.image_paths: list[Path] = images
        self.label_paths: list[Path | None] = []
        self.train_id_files: list[bool] = []
        self.instance_paths: list[Path | None] = []
        for p in images:
            base = p.name[: -len("_leftImg8bit.png")]
            gt = self.root / "gtFine" / split / p.parent.name
            train, ids = gt / f"{base}_gtFine_labelTrainIds.png", gt / f"{base}_gtFine_labelIds.png"
            lp = train if train.is_file() else ids if ids.is_file() else None
            if lp is None and require_labels:
                raise FileNotFoundError(f"missing label file {ids} (or {train.name}) for image {p} ({expected})")
            self.label_paths.append(lp)
            self.train_id_files.append(lp == train)
            ip = gt / f"{base}_gtFine_instanceIds.png"
            self.instance_paths.append(ip if ip.is_file() else None)

    def __len__(self) -> int:
        return len(self.image_paths)

    def sample_name(self, index: int) -> str:
        return self.image_paths[index].name[: -len("_leftImg8bit.png")]

    def load(self, index: int) -> Sample:
        p = self.image_paths[index]
        fn = None if self.train_id_files[index] else label_ids_to_train_ids
        s = _load_pair(p, self.label_paths[index], self.instance_paths[index], self.num_classes,
                       self.sample_name(index), fn)
        inst = official_instances(s["instances"])
        s["instances"] = np.where(s["label"] != IGNORE_INDEX, inst, 0).astype(np.int32)
        return s
