"""Label overlays, colour legends, A|B side by side, disagreement and fixed/broken maps (numpy RGB uint8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.palettes import IGNORE_INDEX
from ..metrics import FixBreak
from ._common import RGB, blend, check_rgb, check_same_hw, css, greyed, hex_color

FIXED_COLOR: RGB = (0, 200, 70)
BROKEN_COLOR: RGB = (230, 30, 30)
DIFF_COLOR: RGB = (255, 0, 255)


def _palette(palette: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if len(pal) == 0:
        raise ValueError("empty palette")
    return pal


def _check_label(label: np.ndarray, name: str = "label") -> np.ndarray:
    lab = np.asarray(label)
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{name} must be an H×W integer label map; got shape {lab.shape} {lab.dtype}")
    return lab


def overlay_labels(
    image: np.ndarray,
    label: np.ndarray,
    palette: np.ndarray | Sequence[Sequence[int]],
    *,
    alpha: float = 0.5,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Class colours blended over ``image``: ``(1-alpha)·image + alpha·palette[label]``.

    Pixels equal to ``ignore_index`` or outside ``[0, len(palette))`` keep the image unchanged;
    with ``alpha=1`` every labelled pixel is exactly its palette colour.
    """
    img = check_rgb(image)
    lab = _check_label(label)
    check_same_hw(img, lab, "overlay_labels")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    pal = _palette(palette)
    idx = lab.astype(np.int64, copy=False)
    valid = (idx >= 0) & (idx < len(pal)) & (idx != ignore_index)
    colors = pal[np.where(valid, idx, 0)]
    return blend(img, colors, np.where(valid, np.float32(alpha), np.float32(0.0)))


@dataclass(frozen=True)
class LegendEntry:
    """One class present in the label map(s): id, name, colour, pixel count and share of labelled pixels."""

    index: int
    name: str
    color: RGB
    hex: str
    pixels: int
    fraction: float


def class_legend(
    labels: np.ndarray | Sequence[np.ndarray],
    palette: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str] | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> list[LegendEntry]:
    """Classes present in one label map or several (counts summed), most frequent first.

    Ignore pixels and ids outside the palette are not listed.
    """
    pal = _palette(palette)
    maps = [labels] if isinstance(labels, np.ndarray) else list(labels)
    counts = np.zeros(len(pal), np.int64)
    for m in maps:
        lab = _check_label(m).astype(np.int64, copy=False).ravel()
        keep = (lab >= 0) & (lab < len(pal)) & (lab != ignore_index)
        counts += np.bincount(lab[keep], minlength=len(pal))[: len(pal)]
    total = int(counts.sum())
    order = sorted(np.flatnonzero(counts).tolist(), key=lambda c: (-counts[c], c))
    out = []
    for c in order:
        name = class_names[c] if class_names is not None and c < len(class_names) else f"class {c}"
        color = tuple(int(v) for v in pal[c])
        out.append(LegendEntry(c, name, color, hex_color(color), int(counts[c]), float(counts[c] / total)))
    return out


def share_text(fraction: float) -> str:
    """A share as ``12.3 %``, ``< 0.1 %`` when tiny but present, ``0 %`` when absent."""
    if fraction <= 0:
        return "0 %"
    return "< 0.1 %" if fraction < 0.0005 else f"{100 * fraction:.1f} %"


def legend_figure(entries: Sequence[LegendEntry], *, ncols: int = 4, row_height: int = 26,
                  texts: Sequence[str] | None = None):
    """A compact plotly legend: a coloured square and ``name (share)`` per class (or ``texts``), in ``ncols``
    columns."""
    import plotly.graph_objects as go

    n = len(entries)
    rows = max(1, -(-n // ncols))
    xs = [i % ncols for i in range(n)]
    ys = [i // ncols for i in range(n)]
    labels = list(texts) if texts is not None else [f"{e.name} ({share_text(e.fraction)})" for e in entries]
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=labels,
        textposition="middle right", marker=dict(symbol="square", size=14, color=[css(e.color) for e in entries],
                                                 line=dict(width=1, color="rgb(60,60,60)")),
        customdata=[e.index for e in entries], hovertemplate="id %{customdata}: %{text}<extra></extra>",
    ))
    fig.update_xaxes(visible=False, range=[-0.1, ncols])
    fig.update_yaxes(visible=False, range=[rows - 0.5, -0.5])
    fig.update_layout(height=rows * row_height + 20, margin=dict(l=0, r=0, t=10, b=10), showlegend=False,
                      plot_bgcolor="rgba(0,0,0,0)", paper_bgcolor="rgba(0,0,0,0)")
    return fig


def key_figure(items: Sequence[tuple[RGB, str, str]], *, ncols: int = 3, row_height: int = 26):
    """A legend of encodings: per item (colour, "outline" | "fill", text) an open or filled square and the text."""
    import plotly.graph_objects as go

    n = len(items)
    rows = max(1, -(-n // ncols))

    def edge(c: RGB, kind: str) -> str:  # a near-white fill (e.g. "in both masks") gets a grey edge to be seen
        return "rgb(150,150,150)" if kind == "fill" and min(c) >= 220 else css(c)

    fig = go.Figure(go.Scatter(
        x=[i % ncols for i in range(n)], y=[i // ncols for i in range(n)], mode="markers+text",
        text=[t for _, _, t in items], textposition="middle right", hoverinfo="skip", textfont=dict(size=13),
        marker=dict(symbol=["square-open" if kind == "outline" else "square" for _, kind, _ in items], size=14,
                    color=[css(c) for c, _, _ in items],
                    line=dict(width=[1.5 if edge(c, k) != css(c) else 3 for c, k, _ in items],
                              color=[edge(c, k) for c, k, _ in items])),
    ))
    fig.update_xaxes(visible=False, range=[-0.1, ncols])
    fig.update_yaxes(visible=False, range=[rows - 0.5, -0.5])
    fig.update_layout(height=rows * row_height + 20, margin=dict(l=0, r=0, t=10, b=10), showlegend=False,
                      plot_bgcolor="rgba(0,0,0,0)", paper_bgcolor="rgba(0,0,0,0)")
    return fig


def scalar_map_figure(values: np.ndarray, *, zmin: float, zmax: float, colorscale: str = "Viridis",
                      colorbar_title: str = "", title: str = "", unit: str = "", nan_colour: str = "black",
                      base_width: int = 440, max_height: int = 520):
    """A value per cell as a heatmap at 1:1 aspect with a colourbar beside it, as tall as the map; NaN cells
    show ``nan_colour``. ``unit`` goes into the hover text. The figure is ``base_width`` px wide plus the colourbar
    (narrower when the map would be taller than ``max_height``): show it at its own width."""
    import plotly.graph_objects as go

    v = np.asarray(values, np.float32)
    if v.ndim != 2:
        raise ValueError(f"scalar_map_figure expects an H×W array, got shape {v.shape}")
    h, w = v.shape
    finite = np.isfinite(v)
    fig = go.Figure()
    if not finite.all():  # NaN cells in their own colour, under the map
        fig.add_trace(go.Heatmap(z=np.where(finite, None, 0.0), colorscale=[[0, nan_colour], [1, nan_colour]],
                                 showscale=False, hoverinfo="skip"))
    fig.add_trace(go.Heatmap(
        z=np.where(finite, v, None), zmin=zmin, zmax=zmax, colorscale=colorscale,
        colorbar=dict(title=dict(text=colorbar_title, side="right"), len=1.0, thickness=14, y=0.5,
                      yanchor="middle"),
        hovertemplate=f"(x %{{x}}, y %{{y}}): %{{z:.2f}}{(' ' + unit) if unit else ''}<extra></extra>"))
    fig.update_xaxes(range=[-0.5, w - 0.5], showgrid=False, zeroline=False, constrain="domain", visible=False)
    fig.update_yaxes(range=[h - 0.5, -0.5], showgrid=False, zeroline=False, constrain="domain", scaleanchor="x",
                     scaleratio=1, visible=False)
    top, bar = (30 if title else 8), 90
    plot_w = float(base_width)
    plot_h = plot_w * h / max(w, 1)
    if plot_h > max_height:
        plot_h, plot_w = float(max_height), max_height * w / max(h, 1)
    fig.update_layout(title=dict(text=title, font=dict(size=13)) if title else None,
                      plot_bgcolor="rgba(0,0,0,0)", paper_bgcolor="rgba(0,0,0,0)",
                      width=int(max(plot_w, 120)) + bar, height=int(max(plot_h, 80)) + top + 8,
                      margin=dict(l=0, r=bar - 10, t=top, b=8))
    return fig


def region_outline(image: np.ndarray, region: np.ndarray, *, colour: RGB = (255, 200, 0),
                   thickness: int | None = None, brightness: float = 0.8) -> np.ndarray:
    """``region`` (bool H×W) outlined over the slightly greyed image, the pixels inside left visible; a region
    too small to outline (a pixel) gets a ring around it."""
    import cv2

    img = check_rgb(image)
    m = np.asarray(region, bool)
    check_same_hw(img, m, "region_outline")
    out = greyed(img, brightness).copy()
    t = thickness or max(2, round(max(m.shape) / 300))
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        return out
    if len(ys) < 25:
        cv2.circle(out, (int(xs.mean()), int(ys.mean())), 4 * t + 3, colour, t, cv2.LINE_AA)
        return out
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, colour, t)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, *, gap: int = 8, gap_color: RGB = (255, 255, 255)) -> np.ndarray:
    """``left | right`` in one RGB image with a ``gap``-pixel separator; shorter images padded at the bottom."""
    a, b = check_rgb(left, "left"), check_rgb(right, "right")
    h = max(a.shape[0], b.shape[0])
    out = np.empty((h, a.shape[1] + gap + b.shape[1], 3), np.uint8)
    out[:] = gap_color
    out[: a.shape[0], : a.shape[1]] = a
    out[: b.shape[0], a.shape[1] + gap:] = b
    return out


@dataclass
class DiffView:
    """Where predictions A and B disagree: the highlighted image, the bool mask and its pixel count/share."""

    image: np.ndarray
    mask: np.ndarray
    pixels: int
    fraction: float


def disagreement_view(
    image: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    *,
    color: RGB = DIFF_COLOR,
    alpha: float = 1.0,
    brightness: float = 0.6,
    valid: np.ndarray | None = None,
) -> DiffView:
    """Pixels where ``pred_a != pred_b`` in ``color`` over the greyed image (``valid``: optional bool mask)."""
    img = check_rgb(image)
    a, b = _check_label(pred_a, "pred_a"), _check_label(pred_b, "pred_b")
    check_same_hw(img, a, "disagreement_view")
    check_same_hw(a, b, "disagreement_view")
    mask = a != b
    if valid is not None:
        check_same_hw(a, np.asarray(valid), "disagreement_view valid")
        mask &= np.asarray(valid, bool)
    colors = np.broadcast_to(np.asarray(color, np.uint8), img.shape)
    out = blend(greyed(img, brightness), colors, np.where(mask, np.float32(alpha), np.float32(0.0)))
    n = int(mask.sum())
    return DiffView(out, mask, n, n / mask.size if mask.size else 0.0)


@dataclass
class FixBreakView:
    """B's fixed (green) and broken (red) pixels over the greyed image, with their counts."""

    image: np.ndarray
    fixed: int
    broken: int

    @property
    def net(self) -> int:
        return self.fixed - self.broken

    def caption(self, name_b: str = "B") -> str:
        return f"{name_b} fixes {self.fixed:,} px, breaks {self.broken:,} px (net {self.net:+,})"


def fix_break_view(
    image: np.ndarray,
    fix_break: FixBreak | np.ndarray,
    *,
    fixed_color: RGB = FIXED_COLOR,
    broken_color: RGB = BROKEN_COLOR,
    alpha: float = 1.0,
    brightness: float = 0.6,
) -> FixBreakView:
    """Colour :func:`fapn_core.metrics.fix_break`'s map (+1 fixed by B, -1 broken by B) over the greyed image.

    Counts are taken from the map itself (equal to ``FixBreak.fixed``/``.broken``).
    """
    img = check_rgb(image)
    m = fix_break.map if isinstance(fix_break, FixBreak) else fix_break
    if m is None:
        raise ValueError("this FixBreak has no per-pixel map (it was computed with keep_maps=False)")
    m = np.asarray(m)
    check_same_hw(img, m, "fix_break_view")
    fixed, broken = m > 0, m < 0
    colors = np.zeros_like(img)
    colors[fixed] = fixed_color
    colors[broken] = broken_color
    out = blend(greyed(img, brightness), colors, np.where(fixed | broken, np.float32(alpha), np.float32(0.0)))
    return FixBreakView(out, int(fixed.sum()), int(broken.sum()))
