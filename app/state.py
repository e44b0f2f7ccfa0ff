"""Shared sidebar state and cached loaders for every page.

Models load once per checkpoint content (``st.cache_resource``, shared by all sessions, read-only); each
(image, model, device, precision) inference runs once and every page reuses it. Capture hooks are attached to
a shared model object, so inference on one model is serialised by that model's lock: no session can see
another session's tensors.
"""

from __future__ import annotations

import dataclasses

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch
from streamlit import config as st_config

from app import server_paths as sp

from fapn_core.checkpoints import CheckpointError, assets_dir, bundled_models, load_checkpoint, semantic_classes
from fapn_core.models.rcnn.panoptic import panoptic_to_labels
from fapn_core.data.palettes import generic_palette
from fapn_core.introspect import Prediction, predict_with_captures
from fapn_core.io import (
    DEFAULT_MAX_PIXELS, IMAGE_TYPES, InputError, decode_image, decode_instances, decode_label, fit_size,
    read_image_file, resize_label,
)
from fapn_core.metrics import compare
from fapn_core.metrics import detection_pair as dp
from fapn_core.models import dcn_ext

# the bundled models selected when a session starts (a server can default to e.g. the Panoptic FPN pair)
DEFAULT_A = os.environ.get("FAPN_DEFAULT_A", "fpn_r18_semfpn")
DEFAULT_B = os.environ.get("FAPN_DEFAULT_B", "fapn_r18_semfpn")
MAX_UPLOAD_MB = int(os.environ.get("FAPN_MAX_UPLOAD_MB", "300"))
PROJECT = Path(__file__).resolve().parents[1]
CAPTURE = ("offsets", "attention", "fsm_inputs", "fam_features", "features")


@dataclass
class ModelHandle:
    """A loaded model shared by all sessions (never mutated after loading) and its inference lock."""

    key: str
    label: str
    model: torch.nn.Module
    card: dict[str, Any]
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def task(self) -> str:
        return self.card.get("task", "semantic")

    @property
    def has_semantic(self) -> bool:
        """Whether it predicts a semantic label map (a semantic model, or a Panoptic FPN with category ids)."""
        return semantic_classes(self.card) is not None

    @property
    def has_instances(self) -> bool:
        """Whether it predicts instances (Faster/Mask R-CNN, Panoptic FPN)."""
        return self.task != "semantic"

    @property
    def categories(self) -> list[dict[str, Any]]:
        """COCO categories of its thing classes (dataset category ids); [] for a semantic model."""
        return dp.detector_categories(self.card) if self.has_instances else []

    @property
    def semantic(self) -> tuple[list[str], list[list[int]] | None]:
        """Class names and palette of the label maps this model's predictions are shown in (for a detector
        without semantic output: its thing classes at their category ids)."""
        space = semantic_classes(self.card)
        if space is not None:
            return space
        names = dp.names_by_id(self.categories)
        colours = self.card.get("palette")
        if colours is None:
            return names, None
        pal = [[128, 128, 128] for _ in names]
        for c, col in zip(dp.detector_category_ids(self.card), colours):
            pal[c] = [int(v) for v in col]
        return names, pal

    @property
    def num_classes(self) -> int:
        if self.task == "semantic":
            return int(self.model.num_classes)
        return len(self.semantic[0])

    @property
    def display_name(self) -> str:
        return str(self.card.get("name", self.label))


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
    def _space(self) -> "ModelHandle | None":
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
        return results_cached(handle.key, self.image_key, self.amp, tuple(dp.detector_category_ids(handle.card)),
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
        return gt_annotations_cached(_hash_array(self.gt), _hash_array(self.instances), tuple(things), self.gt,
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
        return detection_compare_cached(self.a.key, self.b.key, self.image_key, self.amp, annotations_key(gt),
                                        json.dumps(cats), gt, self.detection_results("a"),
                                        self.detection_results("b"), tuple(self.image.shape[:2]))

    def prediction(self, which: str) -> Prediction:
        handle = self.a if which == "a" else self.b
        if handle is None or self.image is None:
            raise RuntimeError("no model or image selected")
        try:
            return predict_cached(handle.key, self.image_key, self.amp, handle, self.image)
        except torch.cuda.OutOfMemoryError:
            # Out of GPU memory: free what we can and run this image on a CPU copy of the same checkpoint.
            torch.cuda.empty_cache()
            cpu = cpu_fallback(handle)
            h, w = self.image.shape[:2]
            st.warning(f"{which.upper()}: CUDA ran out of memory at {w}×{h}; this image ran on the CPU instead "
                       "(lower 'Max input side' to stay on the GPU).")
            return predict_cached(cpu.key, self.image_key, False, cpu, self.image)

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
        gt_key = "none" if self.gt is None else _hash_array(self.gt)
        return alignment_cached(handle.key, self.image_key, self.amp, level, radius, gt_key, fam, self.gt)

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
        return compare_cached(self.a.key, self.b.key, self.image_key, _hash_array(self.gt),
                              self.num_classes, tuple(self.class_names), None if things is None else tuple(things),
                              None if sizes is None else tuple(sorted(sizes.items(), key=str)),
                              not self.semantic_only, self.gt, pa.labels, pb.labels, instances)


def _hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _hash_array(a: np.ndarray) -> str:
    return _hash_bytes(np.ascontiguousarray(a).tobytes() + str(a.shape).encode())


def annotations_key(anns: list[dict[str, Any]]) -> str:
    """A content key of COCO annotations (for caches keyed by ground truth)."""
    return _hash_bytes(json.dumps(anns, sort_keys=True, default=str).encode())


def _file_key(path: Path) -> str:
    st_ = path.stat()
    return f"{path.resolve()}:{st_.st_size}:{int(st_.st_mtime)}"


# -------------------------------------------------------------------------------------------- model cache
MODEL_LOADS: dict[str, int] = {}  # checkpoint key → times actually loaded in this process (1 = shared)


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_handle(key: str, label: str, path: str, device: str) -> ModelHandle:
    MODEL_LOADS[key] = MODEL_LOADS.get(key, 0) + 1
    model, card = load_checkpoint(path, device=device)
    task = getattr(model.config, "task", "semantic")
    if task == "panoptic" and semantic_classes(card) is None:
        raise CheckpointError(
            f"{label}: a Panoptic FPN ({model.config.name}) whose card has no thing/stuff category ids, so its "
            "semantic channels cannot be put in a dataset's classes; convert it with `fapn convert` (official "
            "COCO releases get the COCO ids) or add thing_category_ids/stuff_category_ids to its card")
    for p in model.parameters():
        p.requires_grad_(False)
    card = dict(card, _path=path)
    return ModelHandle(key, label, model, card, device)


def cpu_fallback(handle: ModelHandle) -> ModelHandle:
    """The same checkpoint loaded on the CPU (shared like any other handle)."""
    path = handle.card.get("_path")
    if path is None:
        raise RuntimeError("no checkpoint path recorded for the CPU fallback")
    return _load_handle(handle.key.rsplit(":", 1)[0] + ":cpu", handle.label, path, "cpu")


def load_bundled(name: str, device: str) -> ModelHandle:
    path = bundled_models()[name]
    return _load_handle(f"bundled:{_file_key(path)}:{device}", name, str(path), device)


def load_uploaded(name: str, data: bytes, device: str) -> ModelHandle:
    suffix = Path(name).suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt", ".pkl"):
        raise CheckpointError(f"unsupported checkpoint type {suffix!r}: upload .safetensors, .pth, .pt or .pkl")
    key = f"upload:{_hash_bytes(data)}:{device}"
    folder = Path(tempfile.gettempdir()) / "fapn_lab_uploads"
    folder.mkdir(exist_ok=True)
    path = folder / f"{_hash_bytes(data)}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return _load_handle(key, Path(name).stem, str(path), device)


def server_paths() -> sp.ServerPaths:
    """Whether this server reads checkpoint / dataset paths typed in the browser, and under which roots.

    Read on every call (environment and ``server.address``), so it always matches the running server.
    """
    return sp.from_settings(os.environ, st_config.get_option("server.address"), PROJECT, Path.cwd())


def load_local(path_text: str, device: str, policy: sp.ServerPaths | None = None) -> ModelHandle:
    """A checkpoint at a server path, confined to the allowed model roots (``PathRefused`` otherwise)."""
    path = (policy or server_paths()).checkpoint(path_text)
    return _load_handle(f"local:{_file_key(path)}:{device}", path.stem, str(path), device)


# ----------------------------------------------------------------------------------------- detection caches
@st.cache_data(max_entries=48, show_spinner=False)
def results_cached(handle_key: str, image_key: str, amp: bool, category_ids: tuple[int, ...], _det):
    from fapn_core.data.coco import detection_results

    cats = np.asarray(category_ids, np.int64)[_det.classes.numpy()] if len(_det) else np.zeros(0, np.int64)
    masks = _det.masks.numpy() if _det.masks is not None else None
    return detection_results(_det.boxes.numpy(), _det.scores.numpy(), cats, image_id=1, masks=masks)


@st.cache_data(max_entries=16, show_spinner=False)
def gt_annotations_cached(gt_key: str, inst_key: str, things: tuple[int, ...], _gt: np.ndarray,
                          _inst: np.ndarray) -> list[dict[str, Any]]:
    from fapn_core.data.coco import gt_annotations

    return gt_annotations(_gt, _inst, list(things), image_id=1)


@st.cache_data(max_entries=16, show_spinner=False)
def detection_compare_cached(key_a: str, key_b: str, image_key: str, amp: bool, gt_key: str, cats_json: str,
                             _gt, _ra, _rb, image_hw: tuple[int, int]):
    return dp.compare_detections(_gt, _ra, _rb, json.loads(cats_json), image_hw)


@st.cache_data(max_entries=32, show_spinner=False)
def agreement_cached(key_a: str, key_b: str, image_key: str, amp: bool, score_thresh: float, _ra, _rb):
    return dp.agree_detections(_ra, _rb, score_thresh=score_thresh)


# ----------------------------------------------------------------------------------------- inference cache
_COMPUTED: dict[str, int] = {}
_COMPUTED_LOCK = threading.Lock()


@st.cache_resource(max_entries=24, show_spinner=False)
def predict_cached(handle_key: str, image_key: str, amp: bool, _handle: ModelHandle, _image: np.ndarray) -> Prediction:
    """One inference of one model on one image, with FAM/FSM captures (shared; treat as read-only)."""
    with _handle.lock:
        pred = predict_with_captures(_handle.model, _image, CAPTURE, amp=amp)
    if pred.detections is not None and pred.detections.panoptic_seg is not None:
        # a Panoptic FPN is shown as a label map in the dataset's classes (things from its instances)
        det = pred.detections
        labels = panoptic_to_labels(det.panoptic_seg, det.segments_info, det.sem_seg.argmax(0),
                                    _handle.card["thing_category_ids"], _handle.card["stuff_category_ids"])
        pred = dataclasses.replace(pred, labels=labels.numpy().astype(np.uint8 if int(labels.max()) < 256 else np.int64))
    with _COMPUTED_LOCK:
        _COMPUTED[f"{handle_key}|{image_key}|{amp}"] = _COMPUTED.get(f"{handle_key}|{image_key}|{amp}", 0) + 1
    return pred


@st.cache_resource(max_entries=32, show_spinner=False)
def alignment_cached(handle_key: str, image_key: str, amp: bool, level: str, radius: int, gt_key: str,
                     _fam, _gt: np.ndarray | None):
    """``fapn_core.alignment.align_level`` of one captured FAM level (shared; read-only)."""
    from fapn_core.alignment import align_level

    return align_level(_fam, gt=_gt, radius=radius)


def inference_count(handle_key: str, image_key: str, amp: bool) -> int:
    """How often this (model, image) inference actually ran in this server process (1 = computed once)."""
    return _COMPUTED.get(f"{handle_key}|{image_key}|{amp}", 0)


@st.cache_data(max_entries=16, show_spinner=False)
def compare_cached(key_a: str, key_b: str, image_key: str, gt_key: str, num_classes: int,
                   class_names: tuple[str, ...], thing_classes: tuple[int, ...] | None,
                   avg_instance_size: tuple | None, allow_void: bool, _gt: np.ndarray, _pa: np.ndarray,
                   _pb: np.ndarray, _instances: np.ndarray | None):
    # allow_void: a Panoptic FPN leaves "thing" pixels that no instance covers void (255), counted as misses
    return compare(_gt, _pa, _pb, num_classes, instances=_instances, class_names=list(class_names),
                   thing_classes=None if thing_classes is None else list(thing_classes),
                   avg_instance_size=None if avg_instance_size is None else dict(avg_instance_size),
                   allow_void=allow_void)


def known_thing_classes(class_names: list[str]) -> list[int] | None:
    """Thing classes of the label sets this project knows (synthetic benchmark, Cityscapes); else None."""
    from fapn_core.data.palettes import CITYSCAPES_CLASSES
    from fapn_core.data.synthetic import CLASS_NAMES, THING_CLASSES

    if tuple(class_names) == tuple(CLASS_NAMES):
        return list(THING_CLASSES)
    if tuple(class_names) == tuple(CITYSCAPES_CLASSES):
        return list(range(11, 19))  # person, rider, car, truck, bus, train, motorcycle, bicycle
    return None


# ------------------------------------------------------------------------------------------------ samples
@st.cache_data(show_spinner=False)
def samples() -> list[dict[str, Any]]:
    path = assets_dir() / "samples" / "samples.json"
    return json.loads(path.read_text()) if path.is_file() else []


@st.cache_data(max_entries=32, show_spinner=False)
def _read_sample(name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    entry = next(e for e in samples() if e["name"] == name)
    folder = assets_dir() / "samples"
    image = read_image_file(folder / entry["image"]).rgb
    label = inst = None
    if entry.get("label"):
        label = decode_label((folder / entry["label"]).read_bytes(), expected_hw=image.shape[:2])
    if entry.get("instances"):
        inst = decode_instances((folder / entry["instances"]).read_bytes(), expected_hw=image.shape[:2])
    return image, label, inst


@st.cache_data(max_entries=16, show_spinner=False)
def _decode_upload(data: bytes, max_pixels: int):
    return decode_image(data, max_pixels=max_pixels)


# -------------------------------------------------------------------------------------------------- sidebar
def _model_picker(slot: str, default: str, device: str, errors: dict[str, str],
                  paths: sp.ServerPaths) -> ModelHandle | None:
    bundled = sorted(bundled_models())
    sources = ["Bundled", "Upload checkpoint"] + (["Local path"] if paths.enabled else [])
    src = st.radio(f"Model {slot.upper()}", sources, horizontal=True, key=f"src_{slot}")
    try:
        if src == "Bundled":
            if not bundled:
                raise CheckpointError("no bundled models in assets/models (run scripts/train_bundled.sh)")
            index = bundled.index(default) if default in bundled else 0
            name = st.selectbox(f"{slot.upper()}: bundled model", bundled, index=index, key=f"bundled_{slot}")
            handle = load_bundled(name, device)
        elif src == "Upload checkpoint":
            up = st.file_uploader(f"{slot.upper()}: checkpoint (.safetensors, .pth, .pkl)",
                                  type=["safetensors", "pth", "pt", "pkl"], key=f"upload_{slot}")
            if up is None:
                return None
            data = up.getvalue()
            if len(data) > MAX_UPLOAD_MB * 2 ** 20:
                raise CheckpointError(f"{up.name} is {len(data) / 2**20:.0f} MiB, over the {MAX_UPLOAD_MB} MiB limit")
            with st.spinner(f"Loading {up.name} …"):
                handle = load_uploaded(up.name, data, device)
        else:
            roots = ", ".join(str(r) for r in paths.model_roots)
            text = st.text_input(f"{slot.upper()}: checkpoint path", key=f"path_{slot}",
                                 help=f"A .safetensors/.pth/.pt/.pkl file under: {roots} (absolute, or relative "
                                      "to one of these folders).")
            if not text:
                return None
            handle = load_local(text, device, paths)
    except (CheckpointError, InputError, ValueError, OSError) as e:
        errors[slot] = str(e)
        st.error(f"Model {slot.upper()}: {e}")
        return None
    with st.expander(f"{slot.upper()}: {handle.card.get('name', handle.label)} — model card"):
        card = handle.card
        st.caption(f"{card.get('num_params', 0) / 1e6:.2f} M parameters · trained on {card.get('training_data')}")
        metrics = card.get("metrics") or {}
        if metrics:
            st.json(metrics, expanded=False)
        st.json({k: v for k, v in card.items() if k != "palette" and not k.startswith("_")}, expanded=False)
    return handle


def _image_picker(max_side: int, max_pixels: int, expected_classes: int | None, want_coco: bool):
    notes: list[str] = []
    gt = inst = coco = gt_classes = None
    gt_error = None
    entries = samples()
    options = ["Sample gallery", "Upload image"]
    src = st.radio("Image", options, horizontal=True, key="img_src")
    if src == "Sample gallery" and entries:
        names = [e["name"] for e in entries]
        name = st.selectbox("Sample", names, key="sample_name")
        image, gt, inst = _read_sample(name)
        if gt is not None:
            notes.append("ground truth from the sample")
            entry = next(e for e in entries if e["name"] == name)
            if entry.get("dataset") == "synthetic":
                from fapn_core.data.synthetic import CLASS_NAMES

                gt_classes = tuple(CLASS_NAMES)
    else:
        up = st.file_uploader("Image", type=list(IMAGE_TYPES), key="img_upload")
        if up is None:
            return None, "", [], None, None, None, None, None
        name = up.name
        try:
            decoded = _decode_upload(up.getvalue(), max_pixels)
        except InputError as e:
            st.error(f"{name}: {e}")
            return None, name, [], None, None, None, None, None
        image, notes = decoded.rgb, list(decoded.notes)
        gt_up = st.file_uploader("Ground truth (PNG of class ids, optional)", type=["png"], key="gt_upload")
        inst_up = st.file_uploader("Instance ids (PNG, optional)", type=["png"], key="inst_upload")
        if gt_up is not None:
            try:
                gt = decode_label(gt_up.getvalue(), expected_hw=image.shape[:2], num_classes=expected_classes)
            except InputError as e:
                gt_error = f"{gt_up.name}: {e}"
        if inst_up is not None and gt is not None:
            try:
                inst = decode_instances(inst_up.getvalue(), expected_hw=image.shape[:2])
            except InputError as e:
                gt_error = f"{inst_up.name}: {e}"
        elif inst_up is not None and gt_error is None:
            gt_error = (f"{inst_up.name}: an instance-id PNG needs the class-id PNG beside it (the classes of its "
                        "objects); or upload a COCO instances JSON instead")
        if want_coco:
            coco_up = st.file_uploader("Objects (COCO instances JSON, optional)", type=["json"], key="coco_upload",
                                       help="Ground truth for detectors: the JSON's image entry must have this "
                                            "image's size (and its file_name, when the JSON lists several images).")
            if coco_up is not None:
                try:
                    coco = _decode_coco(coco_up.getvalue(), coco_up.name, name, tuple(image.shape[:2]))
                except ValueError as e:
                    gt_error = str(e)
    resized, msg = fit_size(image, max_side, max_pixels)
    if msg:
        notes.append(msg)
        if gt is not None:
            gt = resize_label(gt, resized.shape[:2])
        if inst is not None:
            inst = resize_label(inst, resized.shape[:2])
        if coco is not None:
            coco = (dp.resize_annotations(coco[0], image.shape[:2], resized.shape[:2]), coco[1])
    if coco is not None:
        notes.append(f"{len(coco[0])} ground-truth objects from the COCO JSON")
    return resized, name, notes, gt, inst, gt_error, coco, gt_classes


@st.cache_data(max_entries=8, show_spinner=False)
def _decode_coco(raw: bytes, src: str, image_name: str, image_hw: tuple[int, int]):
    data = dp.parse_json_bytes(raw, src)
    return dp.image_ground_truth(data, image_hw, image_name, src=src)


def build_context() -> Context:
    """Draw the shared sidebar (``app/main.py`` calls this on every run, before the page) and store it."""
    with st.sidebar:
        st.markdown("### FaPN Lab")
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        dev_choice = st.selectbox("Device", devices, key="device")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if dev_choice == "auto" else dev_choice
        amp = False
        if device == "cuda":
            amp = st.selectbox("Precision", ["fp32", "AMP (bf16/fp16)"], key="precision") != "fp32"
        max_side = st.number_input("Max input side (px)", 64, 4096, 1024, step=64, key="max_side")
        errors: dict[str, str] = {}
        paths = server_paths()
        a = _model_picker("a", DEFAULT_A, device, errors, paths)
        b = _model_picker("b", DEFAULT_B, device, errors, paths)
        if (a is not None and b is not None and a.has_semantic and b.has_semantic
                and a.num_classes != b.num_classes):
            st.warning(f"A predicts {a.num_classes} classes and B {b.num_classes}: comparisons need the same classes")
        if a is not None and b is not None and a.has_instances and b.has_instances:
            try:
                dp.pair_categories(a.card, b.card)
            except ValueError as e:
                st.warning(str(e))
        st.divider()
        semantic = [h for h in (a, b) if h is not None and h.has_semantic]
        expected = semantic[0].num_classes if semantic else None
        want_coco = any(h is not None and h.has_instances for h in (a, b))
        image, name, notes, gt, inst, gt_error, coco, gt_classes = _image_picker(
            int(max_side), DEFAULT_MAX_PIXELS, expected, want_coco)
        if gt_error:
            st.error(gt_error)
        for n in notes:
            st.caption(f"ℹ️ {n}")
    key = _hash_array(image) if image is not None else ""
    ctx = Context(a, b, errors, image, name, key, notes, gt, gt_error, inst, device, amp, int(max_side), coco,
                  gt_classes)
    st.session_state["_fapn_ctx"] = ctx
    return ctx


def context() -> Context:
    """The selection made in the sidebar during this run (pages call this)."""
    ctx = st.session_state.get("_fapn_ctx")
    if ctx is None:  # a page script run on its own (e.g. in a test): draw the sidebar here
        ctx = build_context()
    return ctx


def status_line(ctx: Context) -> None:
    """Device, each model's latency and whether its inference came from the cache."""
    if not ctx.ready:
        return
    parts = [f"device **{ctx.device}**" + (" · AMP" if ctx.amp else "")]
    if str(ctx.device).startswith("cpu"):
        parts.append("deformable conv: " + ("compiled CPU kernel" if dcn_ext.load() is not None
                                            else "PyTorch path (run `fapn build-ext` for the faster compiled one)"))
    for slot, handle in (("A", ctx.a), ("B", ctx.b)):
        pred = ctx.prediction(slot.lower())
        n = inference_count(handle.key, ctx.image_key, ctx.amp)
        parts.append(f"{slot} `{handle.card.get('name', handle.label)}` {pred.latency_ms:.0f} ms"
                     f" ({'computed once' if n <= 1 else f'computed {n}×'}, cached for all pages)")
    st.caption(" · ".join(parts))


def require_ready(ctx: Context) -> bool:
    """Show what is missing (and why) instead of the page; True when models and image are there."""
    if ctx.ready:
        return True
    if ctx.a is None or ctx.b is None:
        st.info("Choose models A and B in the sidebar." + (" " + "; ".join(ctx.errors.values()) if ctx.errors else ""))
    if ctx.image is None:
        st.info("Pick a sample or upload an image in the sidebar.")
    return False


def require_comparison(ctx: Context, what: str):
    """``ctx.comparison()``, or an explanation and ``st.stop()`` when there is no ground truth."""
    if not ctx.semantic_pair:
        st.info(f"{what}: {ctx.why_not_semantic()}.")
        st.stop()
    res = ctx.comparison()
    if res is None:
        st.info(f"{what}: {ctx.gt_mismatch()}." if ctx.gt_mismatch() else
                f"{what} need ground truth: pick a synthetic sample or upload a label PNG in the sidebar.")
        st.stop()
    return res


def object_and_label_map_sections(ctx: Context, objects, label_maps) -> None:
    """Run a page's object section (two detectors) and its label-map section (two semantic outputs), each when
    the pair has it; say why when it has neither. Sections are called as ``fn(ctx, name_a, name_b, ...)``."""
    name_a, name_b = ctx.a.display_name, ctx.b.display_name
    if ctx.instance_pair:
        objects(ctx, name_a, name_b)
    if ctx.semantic_pair:
        label_maps(ctx, name_a, name_b, titled=ctx.instance_pair)
    if not ctx.instance_pair and not ctx.semantic_pair:
        st.info(f"{ctx.why_not_semantic()}; {ctx.why_not_instances()}.")


def detection_comparison_or_reason(ctx: Context):
    """(``ctx.detection_comparison()``, None) or (None, why there is none)."""
    if not ctx.instance_pair:
        return None, ctx.why_not_instances()
    try:
        res = ctx.detection_comparison()
    except ValueError as e:
        return None, str(e)
    if res is None:
        return None, ("Object metrics need ground-truth objects: pick a synthetic sample, or upload a class-id PNG "
                      "with an instance-id PNG, or a COCO instances JSON, in the sidebar")
    return res, None


class LockedModel:
    """A shared model seen through its lock: safe to call from a long job while other sessions run pages."""

    def __init__(self, handle: ModelHandle) -> None:
        self._handle = handle

    @property
    def num_classes(self) -> int:
        return self._handle.num_classes

    def predict(self, image: np.ndarray, *, amp: bool = False) -> torch.Tensor:
        with self._handle.lock:
            return self._handle.model.predict(image, amp=amp)

    def named_parameters(self):
        return self._handle.model.named_parameters()
