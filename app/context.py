"""The page context: what the sidebar selected, what both models can show, and why not.

Pages read one :class:`Context` per run (``app.sidebar.context()``). A section that needs something of both
models asks here (``semantic_pair``, ``instance_pair``) and shows ``why_not_semantic()`` /
``why_not_instances()`` otherwise; every computation it hands out comes from ``app.cache``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import streamlit as st
from app import cache
from app.keys import annotations_key, hash_array
from app.models import ModelHandle, cpu_fallback
from fapn_core.data.palettes import generic_palette
from fapn_core.introspect import Prediction
from fapn_core.metrics import detection_pair as dp


@dataclass
class Context:
    """What the sidebar selected, available to every page."""

    a: ModelHandle | None
    b: ModelHandle | None
    errors: dict[str, str]
    image: np.ndarray | None
    image_name: str
    image_key: str
    image_notes: list[str]
    gt: np.ndarray | None
    gt_error: str | None
    instances: np.ndarray | None
    device: str
    amp: bool
    max_side: int
    coco_gt: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None  # (annotations, categories)
    gt_classes: tuple[str, ...] | None = None  # class names of the label-map GT when known (gallery samples)
    image_origin: str = "upload"  # "synthetic sample" | "gallery photo" | "upload"
    image_error: str | None = None  # why the chosen image file cannot be used (the user's words)

    def gt_mismatch(self) -> str:
        """Why the label-map ground truth does not fit the models' classes (empty when it fits or is unknown)."""
        if self.gt is None or self.gt_classes is None or self._space is None:
            return ""
        if self.semantic_pair and tuple(self.class_names) != self.gt_classes:
            return (f"the sample's ground truth is in the synthetic benchmark's {len(self.gt_classes)} classes and "
                    f"the models predict {self.num_classes} others ({', '.join(self.class_names[:4])}, …): upload "
                    "ground truth in the models' classes")
        return ""

    def detection_gt_mismatch(self) -> str:
        """Why the label + instance maps cannot give ground-truth objects in the detectors' categories."""
        if self.coco_gt is not None or self.gt_classes is None or not self.instance_pair:
            return ""
        bad = [c for c in self.categories
               if c["id"] >= len(self.gt_classes) or self.gt_classes[c["id"]] != c["name"]]
        if not bad:
            return ""
        c = bad[0]
        have = self.gt_classes[c["id"]] if c["id"] < len(self.gt_classes) else "no class"
        return (f"the sample's ground truth is in the synthetic benchmark's classes, and the detectors' category "
                f"{c['id']} is {c['name']!r} (there: {have}; {len(bad)} categories differ): upload a COCO instances "
                "JSON (or class + instance PNGs) in the detectors' categories")

    @property
    def ready(self) -> bool:
        return self.a is not None and self.b is not None and self.image is not None

    @property
    def _space(self) -> ModelHandle | None:
        """The model whose label space the label-map views use (the first with semantic output)."""
        return next((h for h in (self.a, self.b) if h is not None and h.has_semantic), self.a or self.b)

    @property
    def num_classes(self) -> int:
        return self._space.num_classes if self._space else 0

    @property
    def class_names(self) -> list[str]:
        handle = self._space
        names = handle.semantic[0] if handle else []
        return list(names) if len(names) == self.num_classes else [f"class_{i}" for i in range(self.num_classes)]

    @property
    def palette(self) -> np.ndarray:
        handle = self._space
        pal = handle.semantic[1] if handle else None
        if pal is not None and len(pal) >= self.num_classes:
            return np.asarray(pal, np.uint8)
        return generic_palette(max(self.num_classes, 1))

    @property
    def semantic_only(self) -> bool:
        """Both models are semantic segmentors (pages that need the semantic model itself check this)."""
        return all(h is None or h.task == "semantic" for h in (self.a, self.b))

    @property
    def semantic_pair(self) -> bool:
        """Both models predict semantic label maps in the same classes (semantic views work)."""
        return (self.a is not None and self.b is not None and self.a.has_semantic and self.b.has_semantic
                and self.a.num_classes == self.b.num_classes)

    @property
    def instance_pair(self) -> bool:
        """Both models predict instances (object views work)."""
        return self.a is not None and self.b is not None and self.a.has_instances and self.b.has_instances

    def why_not_semantic(self) -> str:
        """Why the semantic views are hidden for this pair (empty when they are shown)."""
        if self.semantic_pair or self.a is None or self.b is None:
            return ""
        no = [f"{s} (`{h.display_name}`, {h.task})" for s, h in (("A", self.a), ("B", self.b)) if not h.has_semantic]
        if no:
            return (f"{' and '.join(no)} {'have' if len(no) == 2 else 'has'} no semantic output, so the label-map "
                    "views (semantic masks, band mIoU, pixel objects) are hidden")
        return (f"A predicts {self.a.num_classes} classes and B {self.b.num_classes}: label maps in different "
                "classes cannot be compared")

    def why_not_instances(self) -> str:
        if self.instance_pair or self.a is None or self.b is None:
            return ""
        no = [f"{s} (`{h.display_name}`)" for s, h in (("A", self.a), ("B", self.b)) if not h.has_instances]
        return (f"{' and '.join(no)} {'are semantic models' if len(no) == 2 else 'is a semantic model'} (no "
                "instances), so the object views (boxes, masks, COCO matching) are hidden")

    @property
    def categories(self) -> list[dict[str, Any]]:
        """The categories both detectors share (``ValueError`` when their ids clash)."""
        return dp.pair_categories(self.a.card, self.b.card)

    def detection_results(self, which: str) -> list[dict[str, Any]]:
        """Model ``which``'s detections on this image as COCO results (cached with the inference)."""
        handle = self.a if which == "a" else self.b
        det = self.prediction(which).detections
        return cache.results_cached(handle.key, self.image_key, self.amp, tuple(dp.detector_category_ids(handle.card)),
                                    det)

    def detection_gt(self) -> list[dict[str, Any]] | None:
        """Ground-truth objects as COCO annotations: the uploaded COCO JSON, else the label + instance maps
        (objects of the detectors' thing classes; thing pixels without an instance id are crowd regions)."""
        if self.coco_gt is not None:
            return self.coco_gt[0]
        if self.gt is None or self.instances is None:
            return None
        why = self.detection_gt_mismatch()
        if why:
            raise ValueError(why)
        things = sorted({c["id"] for c in self.categories})
        return cache.gt_annotations_cached(hash_array(self.gt), hash_array(self.instances), tuple(things), self.gt,
                                           self.instances)

    def detection_comparison(self) -> "dp.DetectionComparison | None":
        """COCO matching of A and B against the ground truth objects (None without ground truth)."""
        gt = self.detection_gt()
        if gt is None:
            return None
        cats = self.categories
        if self.coco_gt is not None:  # the JSON's names for its ids, the models' for the rest
            by_id = {c["id"]: c for c in cats}
            by_id.update({c["id"]: c for c in self.coco_gt[1]})
            cats = [by_id[i] for i in sorted(by_id)]
        return cache.detection_compare_cached(self.a.key, self.b.key, self.image_key, self.amp, annotations_key(gt),
                                              json.dumps(cats), gt, self.detection_results("a"),
                                              self.detection_results("b"), tuple(self.image.shape[:2]))

    def prediction(self, which: str) -> Prediction:
        handle = self.a if which == "a" else self.b
        if handle is None or self.image is None:
            raise RuntimeError("no model or image selected")
        try:
            return cache.predict_cached(handle.key, self.image_key, self.amp, handle, self.image)
        except torch.cuda.OutOfMemoryError:
            # Out of GPU memory: free what we can and run this image on a CPU copy of the same checkpoint.
            torch.cuda.empty_cache()
            cpu = cpu_fallback(handle)
            h, w = self.image.shape[:2]
            st.warning(f"{which.upper()}: CUDA ran out of memory at {w}×{h}; this image ran on the CPU instead "
                       "(lower 'Max input side' to stay on the GPU).")
            return cache.predict_cached(cpu.key, self.image_key, False, cpu, self.image)

    @property
    def thing_classes(self) -> list[int] | None:
        """Classes whose connected components count as objects (None: every class)."""
        card = self._space.card if self._space else {}
        if card.get("thing_classes") is not None:
            return list(card["thing_classes"])
        return known_thing_classes(self.class_names)

    @property
    def avg_instance_size(self) -> dict | None:
        """iIoU weights: the card's, or the official Cityscapes table for Cityscapes classes (None: image mean)."""
        from fapn_core.data.palettes import CITYSCAPES_CLASSES
        from fapn_core.metrics.objects import CITYSCAPES_AVG_INSTANCE_SIZE

        card = self._space.card if self._space else {}
        if card.get("avg_instance_size"):
            return dict(card["avg_instance_size"])
        return dict(CITYSCAPES_AVG_INSTANCE_SIZE) if tuple(self.class_names) == tuple(CITYSCAPES_CLASSES) else None

    def alignment(self, which: str, level: str, radius: int):
        """Alignment numbers of model ``which``'s FAM at ``level`` for the current image (cached)."""
        handle = self.a if which == "a" else self.b
        fam = self.prediction(which).captures.fam[level]
        gt_key = "none" if self.gt is None else hash_array(self.gt)
        return cache.alignment_cached(handle.key, self.image_key, self.amp, level, radius, gt_key, fam, self.gt)

    def comparison(self):
        """``fapn_core.metrics.compare`` of A and B against the ground truth (None without GT or without two
        semantic outputs)."""
        if self.gt is None or not self.semantic_pair or self.gt_mismatch():
            return None
        from fapn_core.data.cityscapes import official_instances
        from fapn_core.data.palettes import CITYSCAPES_CLASSES

        pa, pb = self.prediction("a"), self.prediction("b")
        things = self.thing_classes
        instances = self.instances
        if instances is not None and tuple(self.class_names) == tuple(CITYSCAPES_CLASSES):
            instances = official_instances(instances)  # group regions (ids < 1000) are not instances
        sizes = self.avg_instance_size
        return cache.compare_cached(self.a.key, self.b.key, self.image_key, hash_array(self.gt),
                                    self.num_classes, tuple(self.class_names),
                                    None if things is None else tuple(things),
                                    None if sizes is None else tuple(sorted(sizes.items(), key=str)),
                                    not self.semantic_only, self.gt, pa.labels, pb.labels, instances)


def known_thing_classes(class_names: list[str]) -> list[int] | None:
    """Thing classes of the label sets this project knows (synthetic benchmark, Cityscapes); else None."""
    from fapn_core.data.palettes import CITYSCAPES_CLASSES
    from fapn_core.data.synthetic import CLASS_NAMES, THING_CLASSES

    if tuple(class_names) == tuple(CLASS_NAMES):
        return list(THING_CLASSES)
    if tuple(class_names) == tuple(CITYSCAPES_CLASSES):
        return list(range(11, 19))  # person, rider, car, truck, bus, train, motorcycle, bicycle
    return None
