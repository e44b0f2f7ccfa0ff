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
from fapn_core.models import dcn_ext

DEFAULT_A, DEFAULT_B = "fpn_r18_semfpn", "fapn_r18_semfpn"
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
    def semantic(self) -> tuple[list[str], list[list[int]] | None]:
        """Class names and palette of the label maps this model's predictions are shown in."""
        space = semantic_classes(self.card)
        if space is None:  # refused at load time; kept total for safety
            return [f"class_{i}" for i in range(int(self.model.num_classes))], None
        return space

    @property
    def num_classes(self) -> int:
        if self.task == "semantic":
            return int(self.model.num_classes)
        return len(self.semantic[0])


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

    @property
    def ready(self) -> bool:
        return self.a is not None and self.b is not None and self.image is not None

    @property
    def num_classes(self) -> int:
        return self.a.num_classes if self.a else (self.b.num_classes if self.b else 0)

    @property
    def class_names(self) -> list[str]:
        handle = self.a or self.b
        names = handle.semantic[0] if handle else []
        return list(names) if len(names) == self.num_classes else [f"class_{i}" for i in range(self.num_classes)]

    @property
    def palette(self) -> np.ndarray:
        handle = self.a or self.b
        pal = handle.semantic[1] if handle else None
        if pal is not None and len(pal) >= self.num_classes:
            return np.asarray(pal, np.uint8)
        return generic_palette(max(self.num_classes, 1))

    @property
    def semantic_only(self) -> bool:
        """Both models are semantic segmentors (pages that need the semantic model itself check this)."""
        return all(h is None or h.task == "semantic" for h in (self.a, self.b))

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
        card = (self.a or self.b).card if (self.a or self.b) else {}
        if card.get("thing_classes") is not None:
            return list(card["thing_classes"])
        return known_thing_classes(self.class_names)

    @property
    def avg_instance_size(self) -> dict | None:
        """iIoU weights: the card's, or the official Cityscapes table for Cityscapes classes (None: image mean)."""
        from fapn_core.data.palettes import CITYSCAPES_CLASSES
        from fapn_core.metrics.objects import CITYSCAPES_AVG_INSTANCE_SIZE

        card = (self.a or self.b).card if (self.a or self.b) else {}
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
        """``fapn_core.metrics.compare`` of A and B against the ground truth (None without GT)."""
        if self.gt is None:
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
    if task != "semantic" and semantic_classes(card) is None:
        why = ("its card has no thing/stuff category ids to map its classes onto a dataset's"
               if task == "panoptic" else "it has no semantic output")
        raise CheckpointError(
            f"{label}: a {task} model ({model.config.name}) — it loads in the library (fapn_core: "
            "load_checkpoint, predict_with_captures, fapn evaluate), but the app shows semantic segmentation and "
            f"Panoptic FPN models only so far, and {why}; pick another checkpoint here")
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


def _image_picker(max_side: int, max_pixels: int, expected_classes: int | None):
    notes: list[str] = []
    gt = inst = None
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
    else:
        up = st.file_uploader("Image", type=list(IMAGE_TYPES), key="img_upload")
        if up is None:
            return None, "", [], None, None, None
        name = up.name
        try:
            decoded = _decode_upload(up.getvalue(), max_pixels)
        except InputError as e:
            st.error(f"{name}: {e}")
            return None, name, [], None, None, None
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
    resized, msg = fit_size(image, max_side, max_pixels)
    if msg:
        notes.append(msg)
        if gt is not None:
            gt = resize_label(gt, resized.shape[:2])
        if inst is not None:
            inst = resize_label(inst, resized.shape[:2])
    return resized, name, notes, gt, inst, gt_error


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
        if a is not None and b is not None and a.num_classes != b.num_classes:
            st.warning(f"A predicts {a.num_classes} classes and B {b.num_classes}: comparisons need the same classes")
        st.divider()
        expected = a.num_classes if a is not None else None
        image, name, notes, gt, inst, gt_error = _image_picker(int(max_side), DEFAULT_MAX_PIXELS, expected)
        if gt_error:
            st.error(gt_error)
        for n in notes:
            st.caption(f"ℹ️ {n}")
    key = _hash_array(image) if image is not None else ""
    ctx = Context(a, b, errors, image, name, key, notes, gt, gt_error, inst, device, amp, int(max_side))
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
    res = ctx.comparison()
    if res is None:
        st.info(f"{what} need ground truth: pick a synthetic sample or upload a label PNG in the sidebar.")
        st.stop()
    return res


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
