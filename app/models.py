"""Model handles: a checkpoint loaded once per content for all sessions, and what it can show.

A :class:`ModelHandle`'s capabilities (``has_semantic``, ``has_instances``, ``categories``)
are what the page :class:`~app.context.Context` reads to decide which sections a pair gets; a new model family adds
a capability here and a section in a page, without touching the sidebar's pickers.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from streamlit import config as st_config

import streamlit as st
from app import server_paths as sp
from app.keys import file_key, hash_bytes
from fapn_core.checkpoints import CheckpointError, bundled_models, load_checkpoint, semantic_classes
from fapn_core.metrics import detection_pair as dp

# the bundled models selected when a session starts (a server can default to e.g. the Panoptic FPN pair)
DEFAULT_A = os.environ.get("FAPN_DEFAULT_A", "fpn_r18_semfpn")
DEFAULT_B = os.environ.get("FAPN_DEFAULT_B", "fapn_r18_semfpn")
MAX_UPLOAD_MB = int(os.environ.get("FAPN_MAX_UPLOAD_MB", "300"))
CHECKPOINT_TYPES = (".safetensors", ".pth", ".pt", ".pkl")
PROJECT = Path(__file__).resolve().parents[1]


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

    @property
    def file_name(self) -> str:
        """The checkpoint's file name as the user chose it (the uploaded name, the bundled or local file's)."""
        return str(self.card.get("_file_name") or Path(self.card.get("_path", self.label)).name)

    @property
    def neck(self) -> str:
        return str(getattr(getattr(self.model, "config", None), "neck", ""))

    @property
    def kind(self) -> str:
        """What the model is, in words: ``Mask R-CNN · FaPN neck · R18``, ``MaskFormer · FaPN pixel decoder · Swin-L``."""
        cfg = getattr(self.model, "config", None)
        head = HEADS.get(getattr(cfg, "head", ""), self.task)
        neck = NECKS.get(self.neck, self.neck or "?")
        part = "pixel decoder" if getattr(cfg, "head", "") == "maskformer" else "neck"
        back = getattr(cfg, "backbone_name", "")
        back = ("Swin-" + back[4:].upper() if back.startswith("swin") and len(back) > 4 else
                back.upper() if back else "")
        return f"{head} · {neck} {part}" + (f" · {back}" if back else "")


HEADS = {"semfpn": "Semantic FPN", "pointrend": "PointRend (semantic)", "fasterrcnn": "Faster R-CNN",
         "maskrcnn": "Mask R-CNN", "panoptic": "Panoptic FPN", "maskformer": "MaskFormer",
         "pointrend_rcnn": "PointRend Mask R-CNN", "panopticfcn": "PanopticFCN"}
NECKS = {"fpn": "FPN", "fapn": "FaPN", "fpn_extra_conv": "FPN + extra conv", "fam": "FPN + FAM",
         "fam_se": "FPN + FAM + SE", "deconv_fsm": "FPN + deconv + FSM", "fam_noref_fsm": "FPN + FAM† + FSM"}


class LockedModel:
    """A shared model seen through its lock: safe to call from a long job while other sessions run pages."""

    def __init__(self, handle: ModelHandle) -> None:
        self._handle = handle

    @property
    def num_classes(self) -> int:
        return self._handle.num_classes

    def predict(self, image, *, amp: bool = False) -> torch.Tensor:
        with self._handle.lock:
            return self._handle.model.predict(image, amp=amp)

    def named_parameters(self):
        return self._handle.model.named_parameters()


# ------------------------------------------------------------------------------------------------ loading
MODEL_LOADS: dict[str, int] = {}  # checkpoint key → times actually loaded in this process (1 = shared)


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_handle(key: str, label: str, path: str, device: str) -> ModelHandle:
    """One checkpoint on one device, shared by all sessions (keyed by content/file key × device)."""
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
    return _load_handle(f"bundled:{file_key(path)}:{device}", name, str(path), device)


def load_uploaded(name: str, data: bytes, device: str) -> ModelHandle:
    """An uploaded checkpoint, written once per content to a temporary folder and loaded from there."""
    suffix = Path(name).suffix.lower()
    if suffix not in CHECKPOINT_TYPES:
        raise CheckpointError(f"unsupported checkpoint type {suffix!r}: upload .safetensors, .pth, .pt or .pkl")
    key = f"upload:{hash_bytes(data)}:{device}"
    folder = Path(tempfile.gettempdir()) / "fapn_lab_uploads"
    folder.mkdir(exist_ok=True)
    path = folder / f"{hash_bytes(data)}{suffix}"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    try:
        handle = _load_handle(key, Path(name).stem, str(path), device)
    except CheckpointError as e:  # say the user's file name, not the content-addressed copy's
        text = str(e).replace(str(path), Path(name).name).replace(path.name, Path(name).name)
        raise CheckpointError(text) from None
    if handle.card.get("_file_name") != Path(name).name:  # the same content uploaded under another name
        handle = dataclasses.replace(handle, card=dict(handle.card, _file_name=Path(name).name))
    return handle


def server_paths() -> sp.ServerPaths:
    """Whether this server reads checkpoint / dataset paths typed in the browser, and under which roots.

    Read on every call (environment and ``server.address``), so it always matches the running server.
    """
    return sp.from_settings(os.environ, st_config.get_option("server.address"), PROJECT, Path.cwd())


def load_local(path_text: str, device: str, policy: sp.ServerPaths | None = None) -> ModelHandle:
    """A checkpoint at a server path, confined to the allowed model roots (``PathRefused`` otherwise)."""
    path = (policy or server_paths()).checkpoint(path_text)
    return _load_handle(f"local:{file_key(path)}:{device}", path.stem, str(path), device)
