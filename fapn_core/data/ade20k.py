"""ADE20K SceneParsing (ADEChallengeData2016) reader, 150 classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import list_dir
from .datasets import Sample, SegmentationDataset, Transform, _load_pair, paired_files
from .palettes import ADE20K_CLASSES, ADE20K_PALETTE, IGNORE_INDEX

SPLIT_ALIASES = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def reduce_zero_label(label: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """ADE20K annotation ids -> class ids: 0 ("other") -> 255, k -> k - 1 for k in 1..150."""
    bad = np.unique(label[(label < 0) | (label > len(ADE20K_CLASSES))])
    if bad.size:
        raise ValueError(f"label file {path} has values {bad[:20].tolist()} outside the ADE20K ids 0..150")
    return np.where(label == 0, IGNORE_INDEX, label - 1)


class ADE20KDataset(SegmentationDataset):
    """``ADEChallengeData2016/images/<split>/*.jpg`` + ``ADEChallengeData2016/annotations/<split>/<stem>.png``.

    ``root`` may be the ``ADEChallengeData2016`` folder or its parent; ``split`` is ``training`` /
    ``validation`` (``train`` / ``val`` accepted). No instance maps: ``instances`` is all zeros.
    """

    def __init__(self, root: str | Path, split: str = "validation", require_labels: bool = True,
                 transform: Transform | None = None) -> None:
        super().__init__(ADE20K_CLASSES, ADE20K_PALETTE, transform)
        if split not in SPLIT_ALIASES:
            raise ValueError(f"unknown ADE20K split {split!r}; expected one of {sorted(SPLIT_ALIASES)}")
        self.split = SPLIT_ALIASES[split]
        given = Path(root)
        base = given / "ADEChallengeData2016" if (given / "ADEChallengeData2016").is_dir() else given
        self.root = base
        img_dir, ann_dir = base / "images" / self.split, base / "annotations" / self.split
        expected = (f"expected ADEChallengeData2016/images/{self.split}/*.jpg and "
                    f"ADEChallengeData2016/annotations/{self.split}/<stem>.png")
        self.image_paths, self.label_paths = paired_files(
            img_dir, ann_dir, f"{expected}; found in {given}: {list_dir(given)}" if not img_dir.is_dir() else expected,
            require_labels=require_labels, what="ADE20K")

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, index: int) -> Sample:
        p = self.image_paths[index]
        return _load_pair(p, self.label_paths[index], None, self.num_classes, p.stem, reduce_zero_label)
