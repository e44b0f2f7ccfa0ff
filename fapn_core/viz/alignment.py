"""Features before/after FAM alignment as PCA→RGB images with ONE shared projection (paper's FAM figure).

One 3-component PCA is fitted (numpy SVD of the pooled C×C scatter matrix) on the pixels of both tensors together; both are projected with
it and mapped to colours with the same per-component range, so equal feature vectors get equal colours
in the two images and colour differences are feature differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ._captures import get_fam
from ._common import NothingToShow

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..introspect import Captures, FAMCapture

DEFAULT_FIT_PIXELS = 20_000


@dataclass
class PCAPair:
    """Before/after images (h, w, 3 uint8, or resized) and the shared projection.

    ``explained_variance_ratio``: share of the pooled variance carried by each of the 3 components (sum ≤ 1).
    ``components`` (3, C) and ``mean`` (C,): the projection ``(x - mean) @ components.T``;
    ``lo``/``hi`` (3,): the shared range mapped to 0…255 per component.
    """

    before: np.ndarray
    after: np.ndarray
    explained_variance_ratio: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _pixels(t: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(t, np.float32)
    if a.ndim != 3:
        raise ValueError(f"{name} must be (C, h, w); got shape {a.shape}")
    return a.reshape(a.shape[0], -1).T  # (N, C)


def pca_rgb_pair(
    before: np.ndarray,
    after: np.ndarray,
    *,
    fit_pixels: int = DEFAULT_FIT_PIXELS,
    clip_percentile: float = 1.0,
    size: tuple[int, int] | None = None,
) -> PCAPair:
    """Project two (C, h, w) tensors with one PCA fitted on both; return RGB images and explained variance.

    The fit uses the pixels of both tensors (every ``k``-th of each, ``k`` keeping at most ``fit_pixels``).
    Colour range per component: the ``clip_percentile``…``100-clip_percentile`` percentiles of both
    projections pooled. ``size`` = (H, W): resize the images (bilinear) for display at the image size.
    """
    xa, xb = _pixels(before, "before"), _pixels(after, "after")
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must have the same shape")
    c = xa.shape[1]
    if c < 3:
        raise ValueError(f"need at least 3 channels for a 3-component PCA, got {c}")
    n = len(xa) + len(xb)
    step = max(1, int(np.ceil(n / fit_pixels)))
    fit = np.concatenate([xa[::step], xb[::step]], 0).astype(np.float64)
    mean = fit.mean(0)
    xc = fit - mean
    _, var, vt = np.linalg.svd(xc.T @ xc)  # SVD of the C×C scatter matrix: eigenvalues = variances, fast
    total = var.sum()
    ratio = (var[:3] / total) if total > 0 else np.zeros(3)
    comps = vt[:3]
    comps *= np.where(comps[np.arange(3), np.abs(comps).argmax(1)] < 0, -1.0, 1.0)[:, None]  # sign: deterministic
    w32, shift = comps.T.astype(np.float32), (mean @ comps.T).astype(np.float32)
    proj = np.concatenate([xa @ w32, xb @ w32], 0) - shift  # (2N, 3); no centred copy of the inputs
    lo = np.percentile(proj, clip_percentile, axis=0)
    hi = np.percentile(proj, 100 - clip_percentile, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    rgb = np.clip(np.rint((proj - lo) / span * 255.0), 0, 255).astype(np.uint8)
    h, w = before.shape[1:]
    img_a, img_b = rgb[: h * w].reshape(h, w, 3), rgb[h * w:].reshape(h, w, 3)
    if size is not None and (h, w) != tuple(size):
        dsize = (int(size[1]), int(size[0]))
        img_a = cv2.resize(img_a, dsize, interpolation=cv2.INTER_LINEAR)
        img_b = cv2.resize(img_b, dsize, interpolation=cv2.INTER_LINEAR)
    return PCAPair(img_a, img_b, ratio.astype(np.float32), comps.astype(np.float32), mean.astype(np.float32),
                   lo.astype(np.float32), hi.astype(np.float32))


def alignment_pca(
    source: "Captures | FAMCapture",
    level: str | None = "p2",
    *,
    reference: str = "feat_up",
    size: tuple[int, int] | None = None,
    fit_pixels: int = DEFAULT_FIT_PIXELS,
) -> PCAPair:
    """FAM input vs output of one level: ``feat_up`` (upsampled coarse feature, the DCN's input) — or
    ``lateral`` — against ``aligned`` (the FAM output), through :func:`pca_rgb_pair`."""
    if reference not in ("feat_up", "lateral"):
        raise ValueError(f"reference must be 'feat_up' or 'lateral', got {reference!r}")
    fam = get_fam(source, level)
    ref, out = getattr(fam, reference), fam.aligned
    if ref is None or out is None:
        raise NothingToShow("FAM features were not captured: call predict_with_captures with "
                            "what=(…, 'fam_features')")
    return pca_rgb_pair(ref, out, size=size, fit_pixels=fit_pixels)


def pca_pair_figure(pair: PCAPair, titles: tuple[str, str] = ("FAM input (upsampled)", "FAM output (aligned)"),
                    *, height: int | None = None) -> "go.Figure":
    """The two PCA images side by side with the explained variance in the title."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from ._common import figure_height, image_axes, image_trace

    h, w = pair.before.shape[:2]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.02)
    fig.add_trace(image_trace(pair.before, fmt="png", name="before"), row=1, col=1)
    fig.add_trace(image_trace(pair.after, fmt="png", name="after"), row=1, col=2)
    for i in (1, 2):
        image_axes(fig, h, w, axis=i)
    ev = ", ".join(f"{100 * v:.1f}" for v in pair.explained_variance_ratio)
    fig.update_layout(title=f"Shared PCA → RGB (explained variance {ev} %)", height=height or
                      figure_height(h, 2 * w), margin=dict(l=10, r=10, t=60, b=10))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig
