"""The sidebar: device, the two model pickers and the image picker; it builds the run's page :class:`Context`.

``app/main.py`` calls :func:`build_context` on every run before the page; pages call :func:`context`. The pickers
know nothing of tasks beyond asking each handle what it predicts (for the class count of uploaded ground truth and
whether to offer a COCO JSON): a new model family needs no change here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

import streamlit as st
from app import cache
from app import server_paths as sp
from app.context import Context
from app.keys import hash_array
from app.models import (
    DEFAULT_A, DEFAULT_B, MAX_UPLOAD_MB, ModelHandle, load_bundled, load_local, load_uploaded, server_paths,
)
from fapn_core.checkpoints import CheckpointError, bundled_models
from fapn_core.io import (
    DEFAULT_MAX_PIXELS, IMAGE_TYPES, InputError, decode_instances, decode_label, fit_size, resize_label,
)
from fapn_core.metrics import detection_pair as dp


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
    # the whole file name (the uploader's chip shortens it) and what the checkpoint holds, so two look different
    st.caption(f"{slot.upper()}: **{handle.file_name}** — {handle.kind}, model `{handle.display_name}`")
    with st.expander(f"{slot.upper()}: {handle.display_name} — model card"):
        card = handle.card
        st.caption(f"{card.get('num_params', 0) / 1e6:.2f} M parameters · trained on {card.get('training_data')}")
        metrics = card.get("metrics") or {}
        if metrics:
            st.json(metrics, expanded=False)
        st.json({k: v for k, v in card.items() if k != "palette" and not k.startswith("_")}, expanded=False)
    return handle


@dataclass
class _Picked:
    """What the image picker chose: the image (None when none or refused) and what comes with it."""

    image: np.ndarray | None = None
    name: str = ""
    notes: list[str] = field(default_factory=list)
    gt: np.ndarray | None = None
    inst: np.ndarray | None = None
    gt_error: str | None = None
    coco: tuple | None = None
    gt_classes: tuple[str, ...] | None = None
    origin: str = "upload"
    error: str | None = None


def plain_words(message: str) -> str:
    """An image-reading error in the user's words (no library names, no decoder internals)."""
    text = re.sub(r"^the image file ", "the file ", message)
    text = text.replace("not an image Pillow can read", "not an image file this app can read")
    text = re.sub(r"\(checked before decoding(; Pillow: .*)?\)", "(checked before reading its pixels)", text)
    plain = {"truncated or corrupt": "truncated or corrupt (only part of it arrived, or it is damaged)",
             "could not be opened": "could not be opened as an image", "could not be decoded": "could not be read"}
    return re.sub(r"(truncated or corrupt|could not be opened|could not be decoded): .*",
                  lambda m: plain[m.group(1)], text)


def _image_picker(max_side: int, max_pixels: int, expected_classes: int | None, want_coco: bool) -> _Picked:
    out = _Picked()
    entries = cache.samples()
    options = ["Sample gallery", "Upload image"]
    src = st.radio("Image", options, horizontal=True, key="img_src")
    if src == "Sample gallery" and entries:
        names = [e["name"] for e in entries]
        name = st.selectbox("Sample", names, key="sample_name")
        entry = next(e for e in entries if e["name"] == name)
        out.name, out.origin = name, "synthetic sample" if entry.get("dataset") == "synthetic" else "gallery photo"
        image, out.gt, out.inst = cache.read_sample(name)
        if out.gt is not None:
            out.notes.append("ground truth from the sample")
            if entry.get("dataset") == "synthetic":
                from fapn_core.data.synthetic import CLASS_NAMES

                out.gt_classes = tuple(CLASS_NAMES)
    else:
        up = st.file_uploader("Image", type=list(IMAGE_TYPES), key="img_upload")
        if up is None:
            return out
        out.name = up.name
        try:
            decoded = cache.decode_upload(up.getvalue(), max_pixels)
        except InputError as e:
            out.error = plain_words(str(e))
            st.error(f"{up.name}: {out.error}")
            return out
        image, out.notes = decoded.rgb, list(decoded.notes)
        gt_up = st.file_uploader("Ground truth (PNG of class ids, optional)", type=["png"], key="gt_upload")
        inst_up = st.file_uploader("Instance ids (PNG, optional)", type=["png"], key="inst_upload")
        if gt_up is not None:
            try:
                out.gt = decode_label(gt_up.getvalue(), expected_hw=image.shape[:2], num_classes=expected_classes)
            except InputError as e:
                out.gt_error = f"{gt_up.name}: {e}"
        if inst_up is not None and out.gt is not None:
            try:
                out.inst = decode_instances(inst_up.getvalue(), expected_hw=image.shape[:2])
            except InputError as e:
                out.gt_error = f"{inst_up.name}: {e}"
        elif inst_up is not None and out.gt_error is None:
            out.gt_error = (f"{inst_up.name}: an instance-id PNG needs the class-id PNG beside it (the classes of "
                            "its objects); or upload a COCO instances JSON instead")
        if want_coco:
            coco_up = st.file_uploader("Objects (COCO instances JSON, optional)", type=["json"], key="coco_upload",
                                       help="Ground truth for detectors: the JSON's image entry must have this "
                                            "image's size (and its file_name, when the JSON lists several images).")
            if coco_up is not None:
                try:
                    out.coco = cache.decode_coco(coco_up.getvalue(), coco_up.name, up.name, tuple(image.shape[:2]))
                except ValueError as e:
                    out.gt_error = str(e)
    resized, msg = fit_size(image, max_side, max_pixels)
    if msg:
        out.notes.append(msg)
        if out.gt is not None:
            out.gt = resize_label(out.gt, resized.shape[:2])
        if out.inst is not None:
            out.inst = resize_label(out.inst, resized.shape[:2])
        if out.coco is not None:
            out.coco = (dp.resize_annotations(out.coco[0], image.shape[:2], resized.shape[:2]), out.coco[1])
    if out.coco is not None:
        out.notes.append(f"{len(out.coco[0])} ground-truth objects from the COCO JSON")
    out.image = resized
    return out


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
        pick = _image_picker(int(max_side), DEFAULT_MAX_PIXELS, expected, want_coco)
        if pick.gt_error:
            st.error(pick.gt_error)
        for n in pick.notes:
            st.caption(f"ℹ️ {n}")
    key = hash_array(pick.image) if pick.image is not None else ""
    ctx = Context(a, b, errors, pick.image, pick.name, key, pick.notes, pick.gt, pick.gt_error, pick.inst, device,
                  amp, int(max_side), pick.coco, pick.gt_classes, pick.origin, pick.error)
    st.session_state["_fapn_ctx"] = ctx
    return ctx


def context() -> Context:
    """The selection made in the sidebar during this run (pages call this)."""
    ctx = st.session_state.get("_fapn_ctx")
    if ctx is None:  # a page script run on its own (e.g. in a test): draw the sidebar here
        ctx = build_context()
    return ctx
