"""Small UI helpers shared by pages (layout only; all computation comes from fapn_core)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from fapn_core.viz import class_legend, legend_figure, to_png_bytes


def legend(labels: list[np.ndarray], palette: np.ndarray, class_names: list[str]) -> None:
    entries = class_legend(labels, palette, class_names)
    if entries:
        st.plotly_chart(legend_figure(entries), config={"displayModeBar": False}, key=f"legend_{id(labels)}")


@st.cache_data(max_entries=64, show_spinner=False)
def _drawn(key: str, _draw) -> tuple[bytes, Any]:
    out = _draw()
    image, extra = out if isinstance(out, tuple) else (out, None)
    return to_png_bytes(image), extra


def drawn(key: str, draw: Callable[[], Any]) -> tuple[bytes, Any]:
    """PNG bytes of ``draw()`` (an RGB array, or ``(array, extra)``) and its extra, drawn and encoded once per
    ``key`` for every session. The key must name everything the drawing depends on (models, image, settings)."""
    return _drawn(key, draw)


def download_png(label: str, rgb: np.ndarray, file_name: str, key: str) -> None:
    st.download_button(label, to_png_bytes(rgb), file_name=file_name, mime="image/png", key=key)


def label_png(labels: np.ndarray) -> bytes:
    """Class ids as a single-channel PNG (what users feed back as ground truth)."""
    import cv2

    ok, buf = cv2.imencode(".png", labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))
    return buf.tobytes()


def per_class_table(class_names: list[str], iou_a: np.ndarray, iou_b: np.ndarray, label_a: str,
                    label_b: str) -> pd.DataFrame:
    df = pd.DataFrame({"class": class_names, f"IoU {label_a} (%)": 100 * np.asarray(iou_a, float),
                       f"IoU {label_b} (%)": 100 * np.asarray(iou_b, float)})
    df["Δ (B−A)"] = df.iloc[:, 2] - df.iloc[:, 1]
    return df.round(2)


def palette_array(palette, n: int) -> np.ndarray:
    """``palette`` as a uint8 (n, 3) array when it covers n classes, else the generic one."""
    from fapn_core.data.palettes import generic_palette

    if palette is not None and len(palette) >= n:
        return np.asarray(palette, np.uint8)
    return generic_palette(max(n, 1))


def names(ctx) -> tuple[str, str]:
    return ctx.a.card.get("name", ctx.a.label), ctx.b.card.get("name", ctx.b.label)


def diverging(m: np.ndarray) -> np.ndarray:
    """Map values in [-1, 1] to blue (negative) – white (0) – red (positive), RGB uint8."""
    m = np.clip(np.asarray(m, np.float32), -1.0, 1.0)[..., None]
    white = np.array([255, 255, 255], np.float32)
    red, blue = np.array([200, 30, 30], np.float32), np.array([30, 70, 200], np.float32)
    out = np.where(m >= 0, white + (red - white) * m, white + (blue - white) * (-m))
    return out.astype(np.uint8)


def trained_on_synthetic(handle) -> bool:
    """Whether a model knows only this project's synthetic street scenes: its card's training data says so, or
    (card silent) it came from the bundled models."""
    data = (handle.card or {}).get("training_data")
    if data:
        return "synth" in str(data).lower()
    return str(handle.key).startswith("bundled:")


def image_is_upload() -> bool:
    """Whether the sidebar's image is an upload rather than a sample from the gallery."""
    from app import cache

    return st.session_state.get("img_src", "Sample gallery") != "Sample gallery" or not cache.samples()


def synthetic_domain_note(ctx) -> None:
    """On an uploaded image, warn that A/B trained on synthetic scenes only and point to official checkpoints."""
    if not ctx.ready or not image_is_upload():
        return
    synthetic = [(slot, h) for slot, h in (("A", ctx.a), ("B", ctx.b)) if trained_on_synthetic(h)]
    if not synthetic:
        return
    who = " and ".join(f"{slot} (`{h.card.get('name', h.label)}`)" for slot, h in synthetic)
    classes = synthetic[0][1].card.get("classes") or []
    known = f" ({len(classes)} classes: {', '.join(classes)})" if classes else ""
    they = "they" if len(synthetic) == 2 else "it"
    st.warning(
        f"**{who} {'were' if len(synthetic) == 2 else 'was'} trained on synthetic street scenes only**{known}. "
        f"On an uploaded photo {they} still give{'' if len(synthetic) == 2 else 's'} every pixel one of these "
        "classes, so the labels say little about what the photo shows. For real images load an official checkpoint "
        "(e.g. a FaPN-full or detectron2 PointRend semantic release for Cityscapes) with *Upload checkpoint* in the "
        "sidebar; the **About** page lists the releases that load and the command that converts each.",
        icon=":material/warning:")
