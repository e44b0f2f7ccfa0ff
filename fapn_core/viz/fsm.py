"""FSM channel importances: sorted bars per level (plotly) and the top-k channels' feature maps (numpy RGB).

The FSM's importance vector ``att`` (sigmoid, one value per *input* channel) weights the backbone feature
``res_L`` that enters the lateral branch, so the channel grid shows that tensor — the FSM input, which
:func:`fsm_inputs` captures — not the neck outputs in ``Captures.features`` (whose channels are different).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from ._captures import fsm_levels, get_fsm
from ._common import NothingToShow, apply_colormap

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from torch import nn

    from ..introspect import Captures, FSMCapture


def fsm_importance_figure(
    source: "Captures | dict[str, FSMCapture]",
    levels: Sequence[str] | None = None,
    *,
    label_top: int = 8,
    row_height: int = 220,
) -> "go.Figure":
    """One row per level: channel importances sorted high→low; the ``label_top`` best labelled by channel id."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fsms = fsm_levels(source)
    if levels is not None:
        missing = [lv for lv in levels if lv not in fsms]
        if missing:
            raise ValueError(f"no FSM at levels {missing}; captured levels: {list(fsms)}")
        fsms = {lv: fsms[lv] for lv in levels}
    fig = make_subplots(rows=len(fsms), cols=1, subplot_titles=[
        f"{lv}: {f.attention.size} channels, mean {float(f.attention.mean()):.3f}" for lv, f in fsms.items()
    ], vertical_spacing=min(0.12, 0.3 / max(len(fsms), 1)))
    for r, (lv, fsm) in enumerate(fsms.items(), start=1):
        att = np.asarray(fsm.attention, np.float32)
        order = fsm.top_k(att.size)
        text = [f"#{c}" if i < label_top else "" for i, c in enumerate(order)]
        fig.add_trace(go.Bar(
            x=np.arange(att.size), y=att[order], customdata=order, text=text, textposition="none",
            marker_color=att[order], marker_colorscale="Viridis",
            marker_cmin=0.0, marker_cmax=1.0, name=lv, showlegend=False,
            hovertemplate=f"{lv} rank %{{x}}: channel %{{customdata}}, importance %{{y:.3f}}<extra></extra>",
        ), row=r, col=1)
        # the best channels' ids as horizontal tags in a row above the bars, each with an arrow to its bar: the
        # same size at every level, however narrow the bars (bar text would shrink or vanish)
        xr, yr = ("x", "y") if r == 1 else (f"x{r}", f"y{r}")
        step = max(1.0, 0.07 * att.size)
        for i, c in enumerate(order[:label_top]):
            fig.add_annotation(x=i, y=float(att[order][i]), xref=xr, yref=yr, ax=i * step + step / 2, ay=1.25,
                               axref=xr, ayref=yr, text=f"#{c}", showarrow=True, arrowhead=0, arrowwidth=1,
                               arrowcolor="rgb(120,120,120)", font=dict(size=12), yanchor="bottom")
        fig.update_yaxes(range=[0, 1.45], title_text="importance", row=r, col=1)
        fig.update_xaxes(title_text="rank" if r == len(fsms) else None, row=r, col=1)
    fig.update_layout(height=row_height * len(fsms) + 60, margin=dict(l=10, r=10, t=40, b=10), bargap=0.05)
    return fig


@dataclass
class ChannelGrid:
    """Tiles of the top-k channels (row-major, most important first) in one RGB image."""

    image: np.ndarray
    channels: np.ndarray  # channel ids, tile order
    importances: np.ndarray  # their FSM importances
    tile_size: tuple[int, int]  # (h, w) of one tile in pixels
    ncols: int


def fsm_channel_grid(
    fsm_input: np.ndarray,
    source: "Captures | FSMCapture",
    level: str | None = "p2",
    *,
    k: int = 16,
    ncols: int | None = None,
    tile_height: int = 96,
    gap: int = 2,
    cmap: str = "viridis",
    weighted: bool = False,
) -> ChannelGrid:
    """Feature maps of the ``k`` most important channels of ``fsm_input`` (C_in, h, w), one tile each.

    Each map is min–max normalised on its own, upscaled (nearest) to ``tile_height`` and colour-mapped.
    ``weighted``: show ``x·att`` (what the FSM adds to ``x``) instead of ``x``. ``fsm_input`` must be the
    FSM's input at that level (see :func:`fsm_inputs`); its channel count must equal the importance vector's.
    """
    fsm = get_fsm(source, level)
    feat = np.asarray(fsm_input, np.float32)
    att = np.asarray(fsm.attention, np.float32)
    if feat.ndim != 3:
        raise ValueError(f"fsm_input must be (C, h, w); got shape {feat.shape}")
    if feat.shape[0] != att.size:
        raise ValueError(f"fsm_input has {feat.shape[0]} channels but the FSM at {fsm.level} weighs {att.size}: "
                         "pass the FSM input (backbone res feature, see fsm_inputs), not a neck output")
    k = int(min(max(k, 1), att.size))
    chans = fsm.top_k(k)
    ncols = ncols or int(math.ceil(math.sqrt(k)))
    nrows = int(math.ceil(k / ncols))
    h, w = feat.shape[1:]
    f = max(1, int(round(tile_height / h)))
    th, tw = h * f, w * f
    out = np.full((nrows * th + (nrows - 1) * gap, ncols * tw + (ncols - 1) * gap, 3), 255, np.uint8)
    for i, c in enumerate(chans):
        m = feat[c] * att[c] if weighted else feat[c]
        lo, hi = float(m.min()), float(m.max())
        tile = apply_colormap(m, lo, hi if hi > lo else lo + 1.0, cmap)
        tile = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_NEAREST)
        r0, c0 = (i // ncols) * (th + gap), (i % ncols) * (tw + gap)
        out[r0:r0 + th, c0:c0 + tw] = tile
    return ChannelGrid(out, chans, att[chans], (th, tw), ncols)


def fsm_inputs(model: "nn.Module", image: np.ndarray) -> dict[str, np.ndarray]:
    """The FSM input (backbone ``res_L`` feature, (C_in, h, w), padding cropped) per level, from one forward
    pass of ``model`` on an RGB uint8 image. :class:`NothingToShow` for models without an FSM."""
    from ..introspect import neck_modules, predict_with_captures

    _, fsms = neck_modules(model)
    if not fsms:
        name = getattr(getattr(model, "config", None), "neck", type(getattr(model, "neck", model)).__name__)
        raise NothingToShow(f"the {name} neck has no FSM (feature selection)")
    caps = predict_with_captures(model, image, ("fsm_inputs",)).captures  # one mechanism for every capture
    return {lv: c.inputs for lv, c in caps.fsm.items()}
