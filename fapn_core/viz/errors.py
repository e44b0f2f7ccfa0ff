"""Boundary errors: error maps over the greyed image, and error rate vs. distance to the GT boundary (plotly)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import cv2
import numpy as np

from ._common import RGB, apply_colormap, blend, check_rgb, check_same_hw, greyed

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..metrics import ErrorProfile

ERROR_COLOR: RGB = (255, 40, 40)
DEFAULT_LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def error_density(error: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Local error rate: the bool error map blurred by a Gaussian of ``sigma`` px, (H, W) float32 in [0, 1]."""
    err = np.asarray(error)
    if err.ndim != 2:
        raise ValueError(f"error map must be H×W, got shape {err.shape}")
    e = err.astype(np.float32)
    if sigma <= 0:
        return e
    return np.clip(cv2.GaussianBlur(e, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT), 0.0, 1.0)


def error_heatmap(
    image: np.ndarray,
    error: np.ndarray,
    *,
    mode: str = "density",
    sigma: float = 4.0,
    vmax: float = 0.5,
    alpha: float | None = None,
    cmap: str = "inferno",
    color: RGB = ERROR_COLOR,
    brightness: float = 0.6,
) -> np.ndarray:
    """Errors (from :func:`fapn_core.metrics.error_map`) over the greyed image, RGB uint8.

    ``mode="pixels"``: wrong pixels in ``color`` (opacity ``alpha``, default 1). ``mode="density"``:
    :func:`error_density` colour-mapped on [0, ``vmax``], blended with opacity ``alpha·min(density/vmax, 1)``
    (``alpha`` default 0.8) so error-free areas stay grey.
    """
    img = check_rgb(image)
    err = np.asarray(error, bool)
    check_same_hw(img, err, "error_heatmap")
    base = greyed(img, brightness)
    if mode == "pixels":
        colors = np.broadcast_to(np.asarray(color, np.uint8), img.shape)
        return blend(base, colors, np.where(err, np.float32(1.0 if alpha is None else alpha), np.float32(0.0)))
    if mode != "density":
        raise ValueError(f"mode must be 'density' or 'pixels', got {mode!r}")
    dens = error_density(err, sigma)
    heat = apply_colormap(dens, 0.0, vmax, cmap)
    a = 0.8 if alpha is None else alpha
    return blend(base, heat, a * np.minimum(dens / max(vmax, 1e-6), 1.0))


def error_profile_figure(
    profiles: "Mapping[str, ErrorProfile]",
    *,
    colors: Mapping[str, str] | None = None,
    show_pixels: bool = True,
    title: str = "Error rate vs. distance to the GT boundary",
) -> "go.Figure":
    """One line per model (e.g. ``{"FPN": profile_a, "FaPN": profile_b}``): error rate (%) per distance bin
    (px, last bin ``>= N``); ``show_pixels`` adds the pixels per bin as grey bars on a second y axis."""
    import plotly.graph_objects as go

    if not profiles:
        raise ValueError("no error profiles given")
    fig = go.Figure()
    first = next(iter(profiles.values()))
    if show_pixels:
        fig.add_trace(go.Bar(x=first.bins, y=first.pixels, name="pixels per bin", yaxis="y2",
                             marker_color="rgba(150,150,150,0.35)",
                             hovertemplate="distance %{x}: %{y:,} px<extra></extra>"))
    for i, (name, p) in enumerate(profiles.items()):
        if list(p.bins) != list(first.bins):
            raise ValueError(f"profile {name!r} has different bins ({p.max_distance} vs {first.max_distance})")
        color = (colors or {}).get(name, DEFAULT_LINE_COLORS[i % len(DEFAULT_LINE_COLORS)])
        rate = np.where(np.isfinite(p.rate), 100.0 * np.asarray(p.rate, np.float64), np.nan)
        fig.add_trace(go.Scatter(
            x=p.bins, y=rate, mode="lines+markers", name=name, line=dict(color=color, width=2),
            customdata=np.stack([p.errors, p.pixels], 1),
            hovertemplate=f"{name}, distance %{{x}} px: %{{y:.2f}} % (%{{customdata[0]:,}} / "
                          f"%{{customdata[1]:,}})<extra></extra>",
        ))
    fig.update_layout(
        title=title, xaxis_title="distance to nearest GT boundary pixel (px)", yaxis_title="error rate (%)",
        xaxis=dict(type="category"), yaxis=dict(rangemode="tozero"),
        yaxis2=dict(overlaying="y", side="right", showgrid=False, title="pixels", rangemode="tozero"),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0), margin=dict(l=10, r=10, t=60, b=10),
        hovermode="x unified",
    )
    return fig
