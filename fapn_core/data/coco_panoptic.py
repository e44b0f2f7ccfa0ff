"""COCO panoptic as a dataset of the lab's format: ``label`` from each segment's category, ``instances`` from thing
segments — what training (``fapn train``) and ``fapn evaluate`` read.

Layout (COCO 2017): ``ROOT/<split>/*.jpg``, ``ROOT/annotations/panoptic_<split>.json`` and its PNGs in
``ROOT/annotations/panoptic_<split>/``. Categories, sorted by id, become class ids 0..K−1 (things and stuff
together; ``category_ids`` keeps the mapping); void (segment id 0) is 255; a crowd segment (``iscrowd`` 1) keeps
its class in ``label`` but no instance id, so it is neither an object to detect nor a false positive's excuse.
The JSON is validated when the dataset opens; each PNG when its sample is loaded (only ``json`` parses anything).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._io import list_dir, read_image
from .coco import CocoFormatError, _check_categories, _check_images, _is_int, _list_of_dicts, _short, read_json
from .coco import read_panoptic_png
from .datasets import SegmentationDataset, Transform
from .palettes import IGNORE_INDEX


class CocoPanopticDataset(SegmentationDataset):
    """COCO panoptic segmentation (see the module docstring); ``split`` e.g. ``val2017``."""

    def __init__(self, root: str | Path, split: str = "val2017", transform: Transform | None = None, *,
                 json_path: str | Path | None = None, png_dir: str | Path | None = None,
                 image_dir: str | Path | None = None) -> None:
        root = Path(root)
        jp = Path(json_path) if json_path else root / "annotations" / f"panoptic_{split}.json"
        self.png_dir = Path(png_dir) if png_dir else jp.with_suffix("")
        self.image_dir = Path(image_dir) if image_dir else root / split
        if not jp.is_file():
            raise FileNotFoundError(f"COCO panoptic annotations not found: expected {jp} "
                                    f"(found in {jp.parent}: {list_dir(jp.parent)})")
        data = read_json(jp)
        src = str(jp)
        if not isinstance(data, dict):
            raise CocoFormatError(f"{src}: expected a JSON object with images, annotations, categories")
        imgs, cats = _check_images(data, src), _check_categories(data, src)
        order = sorted(cats)
        self.category_ids: tuple[int, ...] = tuple(order)
        self._class_of = {c: i for i, c in enumerate(order)}
        palette = None
        if all(isinstance(cats[c].get("color"), list) and len(cats[c]["color"]) == 3 for c in order):
            palette = np.asarray([cats[c]["color"] for c in order], np.uint8)
        super().__init__([cats[c]["name"] for c in order], palette, transform)
        self.thing_classes = tuple(i for i, c in enumerate(order) if int(cats[c].get("isthing", 1)) == 1)
        self.items: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for k, a in enumerate(_list_of_dicts(data, "annotations", src)):
            where = f"{src}: annotations[{k}]"
            iid = a.get("image_id")
            if not _is_int(iid) or iid not in imgs:
                raise CocoFormatError(f"{where} refers to image {_short(iid)}, which does not exist")
            fn, segs = a.get("file_name"), a.get("segments_info")
            if not isinstance(fn, str) or not fn or Path(fn).name != fn:
                raise CocoFormatError(f"{where}: file_name must be a plain file name, got {_short(fn)}")
            if not isinstance(segs, list) or not all(isinstance(s, dict) for s in segs):
                raise CocoFormatError(f"{where}: segments_info must be a list of objects")
            for s in segs:
                if not _is_int(s.get("id")) or not 0 < s["id"] < 256 ** 3:
                    raise CocoFormatError(f"{where}: segment id {_short(s.get('id'))} is not an integer 1..256^3-1")
                if s.get("category_id") not in cats:
                    raise CocoFormatError(f"{where}: segment {s['id']} refers to category "
                                          f"{_short(s.get('category_id'))}, which does not exist")
            im = imgs[iid]
            name = im.get("file_name")
            if not isinstance(name, str) or Path(name).name != name:
                raise CocoFormatError(f"{src}: image {iid} needs a plain file_name for its picture")
            self.items.append((im, a))
        if not self.items:
            raise CocoFormatError(f"{src}: no annotations")

    def __len__(self) -> int:
        return len(self.items)

    def sample_name(self, index: int) -> str:
        return Path(self.items[index][0]["file_name"]).stem

    def load(self, index: int) -> dict[str, Any]:
        im, ann = self.items[index]
        h, w = im["height"], im["width"]
        image = read_image(self.image_dir / im["file_name"])
        if image.shape[:2] != (h, w):
            raise CocoFormatError(f"{im['file_name']}: image is {image.shape[0]}x{image.shape[1]}, "
                                  f"the annotations say {h}x{w}")
        ids = read_panoptic_png(self.png_dir / ann["file_name"], (h, w))
        label = np.full((h, w), IGNORE_INDEX, np.int64)
        instances = np.zeros((h, w), np.int32)
        listed = set()
        for s in ann["segments_info"]:
            mask = ids == s["id"]
            listed.add(s["id"])
            cls = self._class_of[s["category_id"]]
            label[mask] = cls
            if cls in self.thing_classes and not s.get("iscrowd", 0):
                instances[mask] = s["id"]
        unknown = set(np.unique(ids).tolist()) - listed - {0}
        if unknown:
            raise CocoFormatError(f"{ann['file_name']}: segment ids {sorted(unknown)[:10]} are not in segments_info")
        return {"image": image, "label": label, "instances": instances, "name": self.sample_name(index)}
