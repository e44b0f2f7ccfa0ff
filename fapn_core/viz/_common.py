"""Shared helpers: input checks, greyed images, colormaps, PNG/JPEG encoding, image axes for plotly."""

from __future__ import annotations

import base64
from typing import Sequence

import cv2
import numpy as np

RGB = tuple[int, int, int]

_CV2_MAPS = {
    "viridis": cv2.COLORMAP_VIRIDIS, "inferno": cv2.COLORMAP_INFERNO, "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA, "cividis": cv2.COLORMAP_CIVIDIS, "turbo": cv2.COLORMAP_TURBO,
    "jet": cv2.COLORMAP_JET, "hot": cv2.COLORMAP_HOT, "twilight": cv2.COLORMAP_TWILIGHT,
}
COLORMAPS: tuple[str, ...] = tuple(_CV2_MAPS)


class NothingToShow(ValueError):
    """The model or the capture has nothing for this view (e.g. FPN has no FAM); the message says why."""


def check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An H×W×3 uint8 array (H×W grey is expanded to three channels)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name} must be H×W×3 uint8 RGB; got shape {a.shape} {a.dtype}")
    return a


def check_same_hw(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"{what}: sizes differ, {a.shape[:2]} vs {b.shape[:2]}")


def greyed(image: np.ndarray, brightness: float = 0.6) -> np.ndarray:
    """Luminance of ``image`` as RGB, scaled by ``brightness`` (a muted backdrop for coloured marks)."""
    img = check_rgb(image)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) * float(brightness)
    g = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(g[:, :, None], 3, axis=2)


def blend(base: np.ndarray, color: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """``(1 - alpha)·base + alpha·color`` rounded to uint8; ``alpha`` scalar or H×W."""
    a = np.asarray(alpha, np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    out = base.astype(np.float32) * (1.0 - a) + color.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def apply_colormap(
    values: np.ndarray, vmin: float | None = None, vmax: float | None = None, cmap: str = "inferno",
    nan_color: RGB = (0, 0, 0),
) -> np.ndarray:
    """H×W floats → H×W×3 uint8 RGB through a perceptual colormap (:data:`COLORMAPS`), linear in [vmin, vmax].

    ``vmin``/``vmax`` default to the finite minimum/maximum; NaN pixels get ``nan_color``.
    """
    if cmap not in _CV2_MAPS:
        raise ValueError(f"unknown colormap {cmap!r}; choose from {COLORMAPS}")
    v = np.asarray(values, np.float32)
    if v.ndim != 2:
        raise ValueError(f"apply_colormap expects an H×W array, got shape {v.shape}")
    finite = np.isfinite(v)
    lo = float(np.min(v[finite])) if vmin is None and finite.any() else float(vmin or 0.0)
    hi = float(np.max(v[finite])) if vmax is None and finite.any() else float(1.0 if vmax is None else vmax)
    span = hi - lo if hi > lo else 1.0
    u8 = np.clip(np.rint((np.where(finite, v, lo) - lo) / span * 255.0), 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(u8, _CV2_MAPS[cmap]), cv2.COLOR_BGR2RGB)
    if not finite.all():
        rgb[~finite] = nan_color
    return rgb


def colormap_scale(cmap: str = "inferno", n: int = 11) -> list[list[float | str]]:
    """The same colormap as a plotly colorscale (``[[0, "rgb(…)"], …, [1, "rgb(…)"]]``)."""
    ramp = apply_colormap(np.linspace(0, 1, n, dtype=np.float32)[None], 0.0, 1.0, cmap)[0]
    return [[i / (n - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(ramp.tolist())]


def to_png_bytes(image: np.ndarray) -> bytes:
    """PNG file bytes of an H×W×3 uint8 RGB (or H×W grey uint8) array, e.g. for a download button."""
    a = np.asarray(image)
    if a.ndim == 2 and a.dtype == np.uint8:
        ok, buf = cv2.imencode(".png", a)
    else:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(check_rgb(a), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def to_data_uri(image: np.ndarray, fmt: str = "jpeg", quality: int = 85) -> str:
    """``data:`` URI of an RGB image (JPEG or PNG) for ``go.Image(source=…)``: far smaller than raw pixels."""
    bgr = cv2.cvtColor(check_rgb(image), cv2.COLOR_RGB2BGR)
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    if not ok:
        raise ValueError(f"{fmt} encoding failed")
    return f"data:image/{fmt};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


def css(color: Sequence[int]) -> str:
    r, g, b = (int(c) for c in color[:3])
    return f"rgb({r},{g},{b})"


def hex_color(color: Sequence[int]) -> str:
    r, g, b = (int(c) for c in color[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def image_trace(image: np.ndarray, *, max_side: int | None = 2048, fmt: str = "jpeg", quality: int = 85,
                name: str = "image"):
    """``go.Image`` showing ``image`` in image-pixel coordinates (pixel (i, j) centred at x=j, y=i).

    The image travels as an encoded ``source`` (not a pixel array); when larger than ``max_side`` it is
    downscaled for transport and stretched back with ``dx``/``dy``, so coordinates stay in full-size pixels.
    """
    import plotly.graph_objects as go

    img = check_rgb(image)
    h, w = img.shape[:2]
    f = 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)
    small = img if f == 1.0 else cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))),
                                            interpolation=cv2.INTER_AREA)
    dx, dy = w / small.shape[1], h / small.shape[0]
    return go.Image(source=to_data_uri(small, fmt, quality), x0=dx / 2 - 0.5, y0=dy / 2 - 0.5, dx=dx, dy=dy,
                    name=name, hoverinfo="skip")


def image_axes(fig, height: int, width: int, *, axis: int = 1) -> None:
    """Lock 1:1 aspect with y growing downward over the image extent [-0.5, W-0.5] × [-0.5, H-0.5].

    ``axis``: which x/y axis pair of a subplot figure (1 = ``xaxis``/``yaxis``, 2 = ``xaxis2``/``yaxis2`` …).
    """
    sfx = "" if axis == 1 else str(axis)
    fig.layout[f"xaxis{sfx}"].update(range=[-0.5, width - 0.5], showgrid=False, zeroline=False,
                                     constrain="domain")
    fig.layout[f"yaxis{sfx}"].update(range=[height - 0.5, -0.5], showgrid=False, zeroline=False,
                                     constrain="domain", scaleanchor=f"x{sfx}", scaleratio=1)


def figure_height(height: int, width: int, base_width: int = 900, extra: int = 60) -> int:
    """A figure height (px) that fits an H×W image at ``base_width`` px wide."""
    return int(np.clip(base_width * height / max(width, 1) + extra, 250, 1000))
