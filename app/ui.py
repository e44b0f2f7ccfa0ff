"""Small UI helpers shared by pages (layout only; all computation comes from fapn_core)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from fapn_core.viz import class_legend, legend_figure, to_png_bytes


def legend(labels: list[np.ndarray], palette: np.ndarray, class_names: list[str], key: str = "legend") -> None:
    """The classes of every label map shown (predictions and ground truth), each with its share of their pixels."""
    entries = class_legend(labels, palette, class_names)
    if entries:
        st.plotly_chart(legend_figure(entries), config={"displayModeBar": False}, key=key)


def delta(value: float, digits: int = 2, unit: str = "") -> str | None:
    """A metric's change as ``+1.23`` (``None``, i.e. no arrow, when it rounds to zero)."""
    if not np.isfinite(value) or round(value, digits) == 0:
        return None
    return f"{value:+.{digits}f}{unit}"


def _number(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "—"
    text = f"{float(v):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def display_frame(df: pd.DataFrame, digits: int = 2) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``df`` as shown: a column with missing values gets "—" there (Streamlit draws a missing value as "None")
    and its numbers as text to ``digits`` places, right-aligned; other columns are unchanged. Also the
    ``column_config`` that aligns them."""
    out, config = df.copy(), {}
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_bool_dtype(col) or not col.isna().any():
            continue
        numeric = pd.api.types.is_numeric_dtype(col)
        out[c] = [_number(v, digits) if v is None or (isinstance(v, (int, float, np.number)) and not
                                                       isinstance(v, (bool, np.bool_))) else str(v) for v in col]
        if numeric or all(isinstance(v, (int, float, np.number)) for v in col.dropna()):
            config[c] = st.column_config.TextColumn(alignment="right")
    return out, config


def table(df: pd.DataFrame, digits: int = 2, **kwargs):
    """``st.dataframe`` of :func:`display_frame` (full width, no index unless asked): "—" for a missing value,
    never "None"; say what "—" means in a caption beside it."""
    frame, config = display_frame(df, digits)
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("width", "stretch")
    kwargs["column_config"] = {**config, **kwargs.get("column_config", {})}
    return st.dataframe(frame, **kwargs)


def a_task(task: str) -> str:
    """``a semantic model``, ``an instance model``."""
    return f"{'an' if task[:1] in 'aeiou' else 'a'} {task} model"


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


SIZE_PREFIXES = ("small", "medium", "large", "all")
#: the evaluation tables' column suffixes, in the words the app uses
SIZE_STATS = {"n": "objects", "found": "found (%)", "hit": "found (%)", "IoU": "mean IoU (%)"}


def fit_width(df: pd.DataFrame, max_columns: int = 9) -> list[pd.DataFrame]:
    """A wide table as tables that fit the page: ``<size>_<stat>`` columns (objects by size) become one row per
    (first column, size) with the other columns in a second table; other tables stay as they are."""
    if len(df.columns) <= max_columns:
        return [df]
    key = df.columns[0]
    sized = [c for c in df.columns if "_" in str(c) and str(c).split("_", 1)[0] in SIZE_PREFIXES]
    if sized:
        long = []
        for _, row in df.iterrows():
            for size in SIZE_PREFIXES:
                cols = [c for c in sized if str(c).startswith(size + "_")]
                if cols:
                    long.append({key: row[key], "size": size,
                                 **{SIZE_STATS.get(str(c).split("_", 1)[1], str(c).split("_", 1)[1]): row[c]
                                    for c in cols}})
        rest = [c for c in df.columns if c not in sized]
        return [pd.DataFrame(long)] + ([df[rest]] if len(rest) > 1 else [])
    return [df]


def full_width(image_hw: tuple[int, int], max_height: int = 760, page_width: int = 1100) -> int | str:
    """``st.image`` width for a full-width drawing: the page width, or narrower so a tall image stays under
    ``max_height`` px on screen."""
    h, w = image_hw
    fit = int(max_height * w / max(h, 1))
    return "stretch" if fit >= page_width else fit
