"""COCO-Stuff-10K reader, 171 classes, in the layout MaskFormer's preparation script writes.

``prepare_coco_stuff_10k_v1.0_sem_seg.py`` (MaskFormer's ``datasets/``) turns the release's ``annotations/*.mat``
into ``annotations_detectron2/{train,test}/<stem>.png`` with contiguous class ids 0..170 (80 things then 91 stuff,
in COCO id order; unlabeled → 255) beside ``images_detectron2/{train,test}/<stem>.jpg``. That layout is read here;
a folder with only the raw ``.mat`` annotations is refused with the preparation step named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._io import list_dir
from .coco_meta import coco_stuff_171
from .datasets import Sample, SegmentationDataset, Transform, _load_pair, paired_files

SPLITS = ("train", "test")


class CocoStuff10KDataset(SegmentationDataset):
    """``<root>/images_detectron2/<split>/*.jpg`` + ``<root>/annotations_detectron2/<split>/<stem>.png``.

    ``root`` is the ``coco_stuff_10k`` folder or a folder holding ``coco/coco_stuff_10k`` (detectron2's
    ``DETECTRON2_DATASETS``); ``split`` is ``train`` or ``test`` (9,000 / 1,000 images). No instance maps.
    """

    def __init__(self, root: str | Path, split: str = "test", require_labels: bool = True,
                 transform: Transform | None = None) -> None:
        names, colours = coco_stuff_171()
        super().__init__(names, np.asarray(colours, np.uint8), transform)
        if split not in SPLITS:
            raise ValueError(f"unknown COCO-Stuff-10K split {split!r}; expected one of {list(SPLITS)}")
        given = Path(root)
        base = given / "coco" / "coco_stuff_10k" if (given / "coco" / "coco_stuff_10k").is_dir() else given
        self.root, self.split = base, split
        img_dir, ann_dir = base / "images_detectron2" / split, base / "annotations_detectron2" / split
        expected = (f"expected images_detectron2/{split}/*.jpg and annotations_detectron2/{split}/<stem>.png "
                    "(MaskFormer's datasets/prepare_coco_stuff_10k_v1.0_sem_seg.py writes them)")
        if not img_dir.is_dir():
            raw = (base / "annotations").is_dir()
            hint = "; this folder has the raw release (annotations/*.mat): run the preparation script first" if raw \
                else ""
            expected = f"{expected}{hint}; found in {given}: {list_dir(given)}"
        self.image_paths, self.label_paths = paired_files(img_dir, ann_dir, expected, require_labels=require_labels,
                                                          what="COCO-Stuff-10K")

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, index: int) -> Sample:
        p = self.image_paths[index]
        return _load_pair(p, self.label_paths[index], None, self.num_classes, p.stem)
