"""FAM offset fields: arrows over the image, magnitude heatmap, magnitude histogram per level (plotly).

Conventions (see docs/figures.md):

* coordinates are input-image pixels, pixel ``(i, j)`` centred at ``(x=j, y=i)``, y growing downward;
* feature cell ``(i, j)`` of a level with stride ``s`` is centred at ``((j+0.5)·s-0.5, (i+0.5)·s-0.5)``
  (the ``align_corners=False`` convention of the network's bilinear resizes);
* an arrow starts at the cell centre (``origin="cell"``) or, for one kernel point, at that point's
  regular 3×3 tap (``origin="tap"``) and its vector is the learned offset ``(dx, dy)`` × stride × ``scale``:
  it points to where the deformable conv samples the upsampled coarse feature (minus the tap when
  ``origin="cell"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ._captures import fam_levels, get_fam
from ._common import figure_height, image_axes, image_trace

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..introspect import Captures, FAMCapture

DEFAULT_MAX_ARROWS = 2500
HAS_NATIVE_QUIVER: bool
try:  # plotly.py >= 6.5 / plotly.js >= 3.3 ship a native "quiver" trace
    from plotly.graph_objects import Quiver as _Quiver  # noqa: F401

    HAS_NATIVE_QUIVER = True
except ImportError:  # pragma: no cover - depends on the installed plotly
    HAS_NATIVE_QUIVER = False


@dataclass
class ArrowSet:
    """The arrows a quiver draws, all in image pixels (N arrows, float32 arrays).

    ``x``, ``y``: arrow tails; ``u``, ``v``: drawn vector = offset (dx, dy) × ``scale`` (``v > 0`` points
    down the image); ``magnitude``: |offset| before ``scale``. ``cell_step``: feature cells between arrows.
    """

    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    magnitude: np.ndarray
    level: str
    stride: int
    cell_step: int
    scale: float
    grid_shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.x.size)

    @property
    def spacing_px(self) -> int:
        """Distance between neighbouring arrows in image pixels."""
        return self.cell_step * self.stride


def _count(n: int, k: int) -> int:
    return len(range(k // 2, n, k))


def cell_step_for(h: int, w: int, stride: int, *, step: float | None = None,
                  max_arrows: int | None = DEFAULT_MAX_ARROWS) -> int:
    """Feature cells between arrows: ``step`` image px rounded to whole cells, else the smallest cell step
    whose grid has at most ``max_arrows`` arrows (every cell when neither is given)."""
    if step is not None:
        if step <= 0:
            raise ValueError(f"step must be > 0 image pixels, got {step}")
        return max(1, int(round(step / stride)))
    if max_arrows is None:
        return 1
    if max_arrows < 1:
        raise ValueError(f"max_arrows must be >= 1, got {max_arrows}")
    k = 1
    while _count(h, k) * _count(w, k) > max_arrows:
        k += 1
    return k


def _select_field(fam: "FAMCapture", group: int | None, point: int | None, weighted: bool) -> np.ndarray:
    if group is not None and not 0 <= group < fam.groups:
        raise ValueError(f"group must be in [0, {fam.groups}), got {group}")
    if point is not None and not 0 <= point < fam.kernel_points:
        raise ValueError(f"point must be in [0, {fam.kernel_points}), got {point}")
    return fam.field(group, point, weighted=weighted, image_px=True).astype(np.float32, copy=False)


def arrow_set(
    source: "Captures | FAMCapture",
    level: str | None = "p2",
    *,
    group: int | None = None,
    point: int | None = None,
    weighted: bool = False,
    step: float | None = None,
    max_arrows: int | None = DEFAULT_MAX_ARROWS,
    scale: float = 1.0,
    origin: str = "cell",
) -> ArrowSet:
    """Arrows of one level's offset field on a decimated grid of feature cells.

    ``group``/``point``: one deformable group / kernel point (row-major 3×3), or ``None`` for the mean
    over all (mask-weighted when ``weighted``). Density: ``step`` (image px between arrows) or
    ``max_arrows``. Sampled cells are rows/cols ``k//2, k//2+k, …`` for a cell step ``k``.
    """
    if origin not in ("cell", "tap"):
        raise ValueError(f"origin must be 'cell' or 'tap', got {origin!r}")
    if origin == "tap" and point is None:
        raise ValueError("origin='tap' needs one kernel point (point=0..8)")
    fam = get_fam(source, level)
    field = _select_field(fam, group, point, weighted)
    s = int(fam.stride)
    h, w = field.shape[1:]
    k = cell_step_for(h, w, s, step=step, max_arrows=max_arrows)
    rows = np.arange(k // 2, h, k)
    cols = np.arange(k // 2, w, k)
    dy = field[0][np.ix_(rows, cols)]
    dx = field[1][np.ix_(rows, cols)]
    yy, xx = np.meshgrid((rows + 0.5) * s - 0.5, (cols + 0.5) * s - 0.5, indexing="ij")
    if origin == "tap":
        yy = yy + (point // 3 - 1) * s
        xx = xx + (point % 3 - 1) * s
    f32 = np.float32
    return ArrowSet(
        x=xx.ravel().astype(f32), y=yy.ravel().astype(f32),
        u=(dx * scale).ravel().astype(f32), v=(dy * scale).ravel().astype(f32),
        magnitude=np.hypot(dx, dy).ravel().astype(f32),
        level=fam.level, stride=s, cell_step=k, scale=float(scale), grid_shape=(len(rows), len(cols)),
    )


def _arrow_polyline(a: ArrowSet, idx: np.ndarray, head_frac: float = 0.3, head_deg: float = 25.0):
    """Shafts and two-stroke heads of the arrows ``idx`` as one polyline with NaN breaks (7 points/arrow)."""
    x0, y0 = a.x[idx], a.y[idx]
    x1, y1 = x0 + a.u[idx], y0 + a.v[idx]
    ang = np.arctan2(a.v[idx], a.u[idx])
    hl = head_frac * np.hypot(a.u[idx], a.v[idx])
    t = np.deg2rad(head_deg)
    hx1, hy1 = x1 - hl * np.cos(ang - t), y1 - hl * np.sin(ang - t)
    hx2, hy2 = x1 - hl * np.cos(ang + t), y1 - hl * np.sin(ang + t)
    nan = np.full_like(x0, np.nan)
    xs = np.stack([x0, x1, nan, hx1, x1, hx2, nan], 1).ravel()
    ys = np.stack([y0, y1, nan, hy1, y1, hy2, nan], 1).ravel()
    return xs, ys


def _sample_colors(colorscale: str, n: int) -> list[str]:
    from plotly.colors import get_colorscale, sample_colorscale

    return sample_colorscale(get_colorscale(colorscale), [i / max(n - 1, 1) for i in range(n)])


def _fallback_traces(a: ArrowSet, colorscale: str, cmax: float, line_width: float, bins: int) -> list:
    """Arrows without a native quiver trace: one line trace per colour bin + a marker trace for colorbar/hover."""
    import plotly.graph_objects as go

    colors = _sample_colors(colorscale, bins)
    which = np.minimum((a.magnitude / max(cmax, 1e-12) * bins).astype(int), bins - 1)
    traces = []
    for b in range(bins):
        idx = np.flatnonzero(which == b)
        if idx.size:
            xs, ys = _arrow_polyline(a, idx)
            # Plain SVG lines with JSON null breaks: a WebGL line trace with NaN breaks drew nothing usable in
            # Streamlit's plotly.js (checked by screenshot), while this renders everywhere.
            gaps = np.isnan(xs)
            xl = np.round(xs, 2).astype(object)
            yl = np.round(ys, 2).astype(object)
            xl[gaps] = None
            yl[gaps] = None
            traces.append(go.Scatter(x=xl.tolist(), y=yl.tolist(), mode="lines",
                                     line=dict(color=colors[b], width=line_width), hoverinfo="skip",
                                     showlegend=False, connectgaps=False))
    traces.append(go.Scattergl(
        x=a.x, y=a.y, mode="markers", showlegend=False, customdata=np.stack([a.u, a.v], 1),
        marker=dict(size=3, color=a.magnitude, colorscale=colorscale, cmin=0, cmax=cmax, showscale=True,
                    colorbar=dict(title="|offset| (image px)")),
        hovertemplate="(%{x:.1f}, %{y:.1f})<br>|offset| %{marker.color:.2f} image px<br>"
                      "drawn dx %{customdata[0]:.2f}, dy %{customdata[1]:.2f}<extra></extra>",
    ))
    return traces


def _check_image_size(image_hw: tuple[int, int], fam: "FAMCapture") -> None:
    h, w = fam.offsets.shape[-2:]
    s = fam.stride
    if (-(-image_hw[0] // s), -(-image_hw[1] // s)) != (h, w):
        raise ValueError(f"image {image_hw} does not match level {fam.level} ({h}×{w} cells at stride {s})")


def offset_quiver(
    image: np.ndarray | None,
    source: "Captures | FAMCapture",
    level: str | None = "p2",
    *,
    group: int | None = None,
    point: int | None = None,
    weighted: bool = False,
    step: float | None = None,
    max_arrows: int | None = DEFAULT_MAX_ARROWS,
    scale: float = 1.0,
    origin: str = "cell",
    colorscale: str = "Viridis",
    cmax: float | None = None,
    line_width: float = 1.5,
    native: bool | None = None,
    color_bins: int = 8,
    background_max_side: int | None = 2048,
    title: str | None = None,
) -> "tuple[go.Figure, ArrowSet]":
    """Offset arrows over the image, coloured by |offset| (image px) with a colorbar; 1:1 aspect, y down.

    ``native``: use plotly's ``go.Quiver`` trace, or (default) draw lines + heads. The native trace is off by
    default: with plotly 7.1 / plotly.js 4.x it drew nothing in headless Chromium (checked by screenshot, in the
    app and in a standalone HTML file), while the line drawing renders (``color_bins`` colour steps). ``cmax``: colour range top (default: the largest drawn magnitude).
    ``image=None`` draws on a blank canvas of the feature map's extent.
    """
    import plotly.graph_objects as go

    fam = get_fam(source, level)
    arrows = arrow_set(fam, group=group, point=point, weighted=weighted, step=step, max_arrows=max_arrows,
                       scale=scale, origin=origin)
    if image is not None:
        _check_image_size(image.shape[:2], fam)
        height, width = image.shape[:2]
    else:
        height, width = (n * fam.stride for n in fam.offsets.shape[-2:])
    top = float(cmax) if cmax is not None else float(arrows.magnitude.max(initial=0.0)) or 1.0
    use_native = False if native is None else native
    if use_native and not HAS_NATIVE_QUIVER:
        raise ValueError("this plotly has no native quiver trace; use native=False")
    fig = go.Figure()
    if image is not None:
        fig.add_trace(image_trace(image, max_side=background_max_side))
    if use_native:
        fig.add_trace(go.Quiver(
            x=arrows.x, y=arrows.y, u=arrows.u, v=arrows.v, anchor="tail", arrowref="data", lengthmode="raw",
            lengthfactor=1.0, name="offsets",
            marker=dict(color=arrows.magnitude, colorscale=colorscale, cmin=0.0, cmax=top, showscale=True,
                        colorbar=dict(title="|offset| (image px)"), line=dict(width=line_width)),
            hovertemplate="(%{x:.1f}, %{y:.1f})<br>drawn dx %{u:.2f}, dy %{v:.2f} image px<extra></extra>",
        ))
    else:
        fig.add_traces(_fallback_traces(arrows, colorscale, top, line_width, color_bins))
    what = "mean" if point is None and group is None else \
        f"group {'mean' if group is None else group}, point {'mean' if point is None else point}"
    fig.update_layout(
        title=title or f"FAM offsets {arrows.level} (stride {arrows.stride}, {what}"
                       f"{', mask-weighted' if weighted else ''}; every {arrows.spacing_px} image px, ×{scale:g})",
        height=figure_height(height, width), margin=dict(l=10, r=10, t=40, b=10), showlegend=False,
        plot_bgcolor="white",
    )
    image_axes(fig, height, width)
    return fig, arrows


def magnitude_map(
    source: "Captures | FAMCapture",
    level: str | None = "p2",
    *,
    group: int | None = None,
    point: int | None = None,
    weighted: bool = False,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """|offset| in image pixels: (h, w) per feature cell, or bilinearly resized to ``size`` = (H, W)."""
    import cv2

    fam = get_fam(source, level)
    f = _select_field(fam, group, point, weighted)
    mag = np.hypot(f[0], f[1]).astype(np.float32)
    if size is not None and mag.shape != tuple(size):
        mag = cv2.resize(mag, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    return mag


def offset_magnitude_figure(
    source: "Captures | FAMCapture",
    level: str | None = "p2",
    *,
    image: np.ndarray | None = None,
    group: int | None = None,
    point: int | None = None,
    weighted: bool = False,
    opacity: float = 0.6,
    colorscale: str = "Viridis",
    background_max_side: int | None = 2048,
) -> "go.Figure":
    """|offset| (image px) per feature cell as a heatmap placed on the cells' image extent, over the image."""
    import plotly.graph_objects as go

    fam = get_fam(source, level)
    mag = magnitude_map(fam, group=group, point=point, weighted=weighted)
    s = fam.stride
    fig = go.Figure()
    if image is not None:
        _check_image_size(image.shape[:2], fam)
        height, width = image.shape[:2]
        fig.add_trace(image_trace(image, max_side=background_max_side))
    else:
        height, width = mag.shape[0] * s, mag.shape[1] * s
    fig.add_trace(go.Heatmap(
        z=mag, x0=(s - 1) / 2, dx=s, y0=(s - 1) / 2, dy=s, colorscale=colorscale, zmin=0.0,
        opacity=opacity if image is not None else 1.0, colorbar=dict(title="|offset| (image px)"),
        hovertemplate="(%{x:.1f}, %{y:.1f}) |offset| %{z:.2f} image px<extra></extra>",
    ))
    fig.update_layout(title=f"|FAM offset| {fam.level} (stride {s}){', mask-weighted' if weighted else ''}",
                      height=figure_height(height, width), margin=dict(l=10, r=10, t=40, b=10))
    image_axes(fig, height, width)
    return fig


def offset_histogram(
    source: "Captures | Mapping[str, FAMCapture]",
    levels: list[str] | None = None,
    *,
    group: int | None = None,
    point: int | None = None,
    weighted: bool = False,
    image_px: bool = True,
    bins: int = 60,
    log_y: bool = False,
) -> "go.Figure":
    """Share of cells by |offset| per level (shared bin edges; image px, or feature px when ``image_px=False``)."""
    import plotly.graph_objects as go

    fams = fam_levels(source)
    if levels is not None:
        missing = [lv for lv in levels if lv not in fams]
        if missing:
            raise ValueError(f"no FAM at levels {missing}; captured levels: {list(fams)}")
        fams = {lv: fams[lv] for lv in levels}
    mags = {}
    for lv, fam in fams.items():
        _select_field(fam, group, point, weighted)  # validates group/point
        mags[lv] = fam.magnitude(group, point, weighted=weighted, image_px=image_px).ravel()
    top = max(float(m.max(initial=0.0)) for m in mags.values()) or 1.0
    edges = np.linspace(0.0, top, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    unit = "image px" if image_px else "feature px"
    fig = go.Figure()
    for lv, m in mags.items():
        counts, _ = np.histogram(m, edges)
        fig.add_trace(go.Bar(x=centres, y=counts / max(m.size, 1), width=edges[1] - edges[0], name=lv,
                             opacity=0.6, hovertemplate=f"{lv}: %{{x:.2f}} {unit}: %{{y:.2%}}<extra></extra>"))
    fig.update_layout(barmode="overlay", title=f"|FAM offset| distribution per level ({unit})",
                      xaxis_title=f"|offset| ({unit})", yaxis_title="share of cells", bargap=0,
                      yaxis_type="log" if log_y else "linear", margin=dict(l=10, r=10, t=40, b=10))
    return fig
