"""Cityscapes reader (fine annotations, 19 trainIds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import list_dir
from .datasets import SegmentationDataset, Transform, _load_pair, Sample
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

# Official labelId -> trainId table (cityscapesScripts labels.py); everything else -> 255.
LABEL_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
NUM_LABEL_IDS = 34  # labelIds 0..33 ("unlabeled" .. "bicycle")
_LUT = np.full(256, IGNORE_INDEX, np.int64)
for _k, _v in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_k] = _v


def label_ids_to_train_ids(label_ids: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Map a Cityscapes labelIds map to trainIds (0..18, 255 = ignore); 255 stays ignore."""
    bad = np.unique(label_ids[((label_ids < 0) | (label_ids >= NUM_LABEL_IDS)) & (label_ids != IGNORE_INDEX)])
    if bad.size:
        raise ValueError(f"label file {path} has values {bad[:20].tolist()} that are not Cityscapes labelIds (0..33)")
    return _LUT[label_ids]


class CityscapesDataset(SegmentationDataset):
    """``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``root/gtFine/<split>/<city>/`` labels.

    Uses ``*_gtFine_labelTrainIds.png`` when present, else converts ``*_gtFine_labelIds.png`` with the
    official table. Instances come from ``*_gtFine_instanceIds.png``: ids >= 1000 (``labelId * 1000 + k``)
    are kept, everything else (stuff, crowd regions, and pixels whose class is ignored) is 0.
    """

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

    def load(self, index: int) -> Sample:
        p = self.image_paths[index]
        fn = None if self.train_id_files[index] else label_ids_to_train_ids
        s = _load_pair(p, self.label_paths[index], self.instance_paths[index], self.num_classes,
                       p.name[: -len("_leftImg8bit.png")], fn)
        inst = s["instances"]
        s["instances"] = np.where((inst >= 1000) & (s["label"] != IGNORE_INDEX), inst, 0).astype(np.int32)
        return s
