"""Torch datasets with one output format: dicts of numpy arrays.

Every dataset returns ``{"image": HxWx3 uint8 RGB, "label": HxW int64 (255 = ignore),
"instances": HxW int32 (0 = none), "name": str}`` and exposes ``class_names``, ``palette``
((K, 3) uint8), ``num_classes``, ``ignore_index`` (255), ``thing_classes`` (the classes whose
instances are objects and enter iIoU; None = every class) and ``avg_instance_size`` (iIoU weights
where a standard defines them; None = the evaluated data's own mean). ``transform``, if given, is
called on that dict and its result returned instead.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ._io import IMAGE_EXTENSIONS, check_label_values, check_same_size, list_dir, read_image, read_index_map
from .palettes import IGNORE_INDEX, generic_palette
from .synthetic import CLASS_NAMES, DEFAULT_SIZE, PALETTE, THING_CLASSES, make_sample

Sample = dict[str, Any]
Transform = Callable[[Sample], Any]


class SegmentationDataset(Dataset, ABC):
    """Base class: class metadata, index checking and the optional transform."""

    ignore_index: int = IGNORE_INDEX
    #: classes whose instances (or connected components) are objects and enter iIoU; None = every class
    thing_classes: tuple[int, ...] | None = None
    #: average instance size per class (name or id -> px) weighting iIoU; None = the data's own mean
    avg_instance_size: Mapping[Any, float] | None = None
    #: raw label id -> class id, for datasets whose files use another id space (Cityscapes labelIds)
    label_id_to_class: Mapping[int, int] | None = None

    def __init__(self, class_names: Sequence[str], palette: np.ndarray | Sequence[Sequence[int]] | None,
                 transform: Transform | None = None) -> None:
        self.class_names: tuple[str, ...] = tuple(str(c) for c in class_names)
        pal = generic_palette(len(self.class_names)) if palette is None else np.asarray(palette, np.uint8)
        if pal.shape != (len(self.class_names), 3):
            raise ValueError(f"palette has shape {pal.shape}, expected ({len(self.class_names)}, 3)")
        self.palette: np.ndarray = pal
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> Sample:
        """The untransformed sample dict for ``0 <= index < len(self)``."""

    def sample_name(self, index: int) -> str:
        """The ``name`` of sample ``index`` without decoding it (saved predictions are matched by it)."""
        paths = getattr(self, "image_paths", None)
        return Path(paths[index]).stem if paths is not None else str(self.load(index)["name"])

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        sample = self.load(index % n)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, num_classes={self.num_classes})"


class SyntheticDataset(SegmentationDataset):
    """The synthetic street benchmark generated on the fly (deterministic per ``(seed, index)``)."""

    thing_classes: tuple[int, ...] = THING_CLASSES

    def __init__(self, n: int, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE,
                 transform: Transform | None = None) -> None:
        super().__init__(CLASS_NAMES, PALETTE, transform)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.seed, self.size = int(n), int(seed), (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return self.n

    def sample_name(self, index: int) -> str:
        return f"synthetic_s{self.seed}_{index:06d}"

    def load(self, index: int) -> Sample:
        s = make_sample(index, self.seed, self.size)
        return {"image": s.image, "label": s.label.astype(np.int64), "instances": s.instances,
                "name": self.sample_name(index)}


def _load_pair(image_path: Path, label_path: Path | None, instance_path: Path | None, num_classes: int,
               name: str, label_fn: Callable[[np.ndarray, Path], np.ndarray] | None = None) -> Sample:
    """Read image (+ label, + instances) and validate sizes; ``label_fn`` maps raw ids to class ids."""
    image = read_image(image_path)
    h, w = image.shape[:2]
    if label_path is None:
        label = np.full((h, w), IGNORE_INDEX, np.int64)
    else:
        label = read_index_map(label_path, "label")
        check_same_size(image, label, image_path, label_path)
        label = label_fn(label, label_path) if label_fn is not None else label
        check_label_values(label, num_classes, label_path)
    if instance_path is None:
        instances = np.zeros((h, w), np.int32)
    else:
        instances = read_index_map(instance_path, "instance").astype(np.int32)
        check_same_size(image, instances, image_path, instance_path)
    return {"image": image, "label": label.astype(np.int64, copy=False), "instances": instances, "name": name}


def paired_files(img_dir: Path, ann_dir: Path, expected: str, *, require_labels: bool, what: str
                 ) -> tuple[list[Path], list[Path | None]]:
    """Images in ``img_dir`` (sorted) and the ``<stem>.png`` label beside each in ``ann_dir`` (``None`` where missing
    and labels are optional); ``FileNotFoundError`` naming the layout (``expected``) otherwise."""
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{what} images not found at {img_dir}: {expected}")
    images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise FileNotFoundError(f"no image files in {img_dir} ({expected}); found: {list_dir(img_dir)}")
    labels: list[Path | None] = []
    for p in images:
        lp = ann_dir / f"{p.stem}.png"
        if not lp.is_file():
            if require_labels:
                raise FileNotFoundError(f"missing label file {lp} for image {p} ({expected})")
            lp = None
        labels.append(lp)
    return images, labels


class FolderDataset(SegmentationDataset):
    """Plain folder layout::

        root/images/<stem>.{png,jpg,jpeg,webp,bmp,tif}
        root/labels/<stem>.png        class ids (single channel), 255 = ignore
        root/instances/<stem>.png     optional instance ids (8/16-bit), 0 = none
        root/dataset.json             optional {"class_names": [...], "palette": [[r, g, b], ...],
                                               "thing_classes": [ids], "avg_instance_size": {name: px}}

    Without ``dataset.json`` (and without ``num_classes``) the labels are scanned once to find
    the number of classes; classes are then named ``class_0``, ``class_1``, ...
    """

    def __init__(self, root: str | Path, require_labels: bool = True, num_classes: int | None = None,
                 transform: Transform | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        img_dir = self.root / "images"
        expected = "expected <root>/images/*.{png,jpg,jpeg,webp,bmp,tif} and <root>/labels/<stem>.png"
        if not img_dir.is_dir():
            raise FileNotFoundError(f"{img_dir} is not a folder: {expected}; found in {self.root}: {list_dir(self.root)}")
        images = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise FileNotFoundError(f"no image files in {img_dir} ({expected}); found: {list_dir(img_dir)}")
        stems: dict[str, Path] = {}
        for p in images:
            if p.stem in stems:
                raise ValueError(f"two images with the same stem {p.stem!r}: {stems[p.stem]} and {p}")
            stems[p.stem] = p
        self.image_paths: list[Path] = images
        self.label_paths: list[Path | None] = []
        for p in images:
            lp = self.root / "labels" / f"{p.stem}.png"
            if not lp.is_file():
                if require_labels:
                    raise FileNotFoundError(f"missing label file {lp} for image {p} ({expected})")
                lp = None
            self.label_paths.append(lp)
        inst = [self.root / "instances" / f"{p.stem}.png" for p in images]
        self.instance_paths: list[Path | None] = [q if q.is_file() else None for q in inst]
        names, palette = self._class_info(num_classes)
        super().__init__(names, palette, transform)
        self.thing_classes, self.avg_instance_size = self._object_info()

    def _object_info(self) -> tuple[tuple[int, ...] | None, dict[Any, float] | None]:
        """Optional ``thing_classes`` / ``avg_instance_size`` of ``dataset.json``, checked."""
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            return None, None
        meta = json.loads(meta_path.read_text())
        things, avg = meta.get("thing_classes"), meta.get("avg_instance_size")
        if things is not None:
            ok = isinstance(things, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in things)
            if not ok or any(not 0 <= t < self.num_classes for t in things):
                raise ValueError(f"invalid {meta_path}: thing_classes must be a list of class ids "
                                 f"0..{self.num_classes - 1}, got {things!r}")
            things = tuple(sorted(set(things)))
        if avg is not None:
            ok = isinstance(avg, dict) and all(
                (k in self.class_names or (k.isdigit() and int(k) < self.num_classes))
                and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for k, v in avg.items())
            if not ok:
                raise ValueError(f"invalid {meta_path}: avg_instance_size must map class names (or ids) to "
                                 f"positive pixel counts, got {avg!r}")
            avg = {(k if k in self.class_names else int(k)): float(v) for k, v in avg.items()}
        return things, avg

    def _class_info(self, num_classes: int | None) -> tuple[list[str], np.ndarray | None]:
        meta_path = self.root / "dataset.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                names = [str(c) for c in meta["class_names"]]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"invalid {meta_path}: expected a JSON object with 'class_names' ({e})") from None
            if num_classes is not None and num_classes != len(names):
                raise ValueError(f"num_classes={num_classes} but {meta_path} lists {len(names)} classes")
            pal = meta.get("palette")
            if pal is not None and np.asarray(pal).shape != (len(names), 3):
                raise ValueError(f"invalid {meta_path}: palette must be {len(names)} [r, g, b] triples")
            return names, (None if pal is None else np.asarray(pal, np.uint8))
        if num_classes is None:
            top = -1
            for lp in self.label_paths:
                if lp is not None:
                    v = read_index_map(lp, "label")
                    v = v[v != IGNORE_INDEX]
                    top = max(top, int(v.max()) if v.size else -1)
            if top < 0:
                raise ValueError(f"cannot infer the classes of {self.root}: no dataset.json, no num_classes and "
                                 "no labelled pixels")
            num_classes = top + 1
        return [f"class_{i}" for i in range(num_classes)], None

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, index: int) -> Sample:
        p = self.image_paths[index]
        return _load_pair(p, self.label_paths[index], self.instance_paths[index], self.num_classes, p.stem)
