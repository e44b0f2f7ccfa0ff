"""The paper's motivation figure: what is lost by going down to stride ``s`` and back up.

``residual_s = |image - up(down(image, s))|`` with bilinear OpenCV resizes (``INTER_LINEAR``, down to
``ceil(H/s) × ceil(W/s)`` and back to ``H × W``), averaged over the RGB channels, in 0…255 grey levels.
Large values sit on edges and thin structures: where a coarse pyramid level is misaligned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from ._common import apply_colormap, check_rgb, colormap_scale

if TYPE_CHECKING:
    import plotly.graph_objects as go

DEFAULT_SCALES = (4, 8, 16, 32)


def resampling_residuals(image: np.ndarray, scales: Sequence[int] = DEFAULT_SCALES) -> dict[int, np.ndarray]:
    """``{s: |image - up(down(image, s))|}``, each (H, W) float32 in grey levels (mean over RGB)."""
    img = check_rgb(image).astype(np.float32)
    h, w = img.shape[:2]
    out = {}
    for s in scales:
        if int(s) < 1:
            raise ValueError(f"scales must be >= 1, got {s}")
        small = cv2.resize(img, (max(1, -(-w // s)), max(1, -(-h // s))), interpolation=cv2.INTER_LINEAR)
        back = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        out[int(s)] = np.abs(img - back).mean(axis=2)
    return out


def residual_images(
    residuals: dict[int, np.ndarray], *, cmap: str | None = "inferno", vmax: float | None = None,
) -> dict[int, np.ndarray]:
    """RGB uint8 images of the residuals on ONE shared range [0, vmax] (default: the 99.5th percentile of
    all scales), heatmapped with ``cmap`` or grey when ``cmap=None``."""
    top = float(vmax) if vmax is not None else _shared_vmax(residuals)
    out = {}
    for s, r in residuals.items():
        if cmap is None:
            g = np.clip(np.rint(r / top * 255.0), 0, 255).astype(np.uint8)
            out[s] = np.repeat(g[:, :, None], 3, axis=2)
        else:
            out[s] = apply_colormap(r, 0.0, top, cmap)
    return out


def _shared_vmax(residuals: dict[int, np.ndarray]) -> float:
    vals = np.concatenate([r.ravel()[:: max(1, r.size // 250_000)] for r in residuals.values()])
    return float(np.percentile(vals, 99.5)) or 1.0


def motivation_figure(
    image: np.ndarray,
    scales: Sequence[int] = DEFAULT_SCALES,
    *,
    max_side: int = 512,
    colorscale: str = "inferno",
    vmax: float | None = None,
    ncols: int | None = None,
) -> "go.Figure":
    """Subplots of the residual per scale as heatmaps sharing one colour axis (grey levels).

    For transport, heatmaps are area-downsampled to at most ``max_side`` pixels and rounded to whole grey
    levels (uint8); axes stay in image pixels.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from ._common import image_axes

    res = resampling_residuals(image, scales)
    h, w = image.shape[:2]
    top = float(vmax) if vmax is not None else _shared_vmax(res)
    ncols = ncols or (2 if len(res) == 4 else len(res))
    nrows = -(-len(res) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[f"stride {s}: mean {r.mean():.1f}"
                                                                for s, r in res.items()],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    f = min(1.0, max_side / max(h, w))
    for i, (s, r) in enumerate(res.items()):
        small = r if f == 1.0 else cv2.resize(r, (max(1, round(w * f)), max(1, round(h * f))),
                                              interpolation=cv2.INTER_AREA)
        d_x, d_y = w / small.shape[1], h / small.shape[0]
        fig.add_trace(go.Heatmap(z=np.clip(np.rint(small), 0, 255).astype(np.uint8), x0=d_x / 2 - 0.5, dx=d_x, y0=d_y / 2 - 0.5, dy=d_y,
                                 coloraxis="coloraxis", name=f"stride {s}",
                                 hovertemplate=f"stride {s} (%{{x:.0f}}, %{{y:.0f}}): %{{z}}<extra></extra>"),
                      row=i // ncols + 1, col=i % ncols + 1)
        image_axes(fig, h, w, axis=i + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(
        coloraxis=dict(colorscale=colormap_scale(colorscale), cmin=0.0, cmax=top,
                       colorbar=dict(title="|Δ| (grey levels)")),
        title="|image − up(down(image, s))|: detail lost at each pyramid stride",
        height=int(nrows * 900 / ncols * h / max(w, 1)) + 80, margin=dict(l=10, r=10, t=60, b=10),
    )
    return fig
