"""Static report figures (matplotlib, object API: no pyplot state, safe inside a Streamlit server)."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._common import check_rgb

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def report_grid(
    panels: Sequence[tuple[str, np.ndarray]], *, ncols: int = 2, panel_width: float = 4.0, suptitle: str | None = None,
) -> "Figure":
    """RGB panels (title, H×W×3 uint8) in a grid of ``ncols`` columns, axes off — e.g. the paper-style
    image | FPN | FaPN | fixed/broken row, or the four motivation residuals."""
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no panels given")
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    h, w = panels[0][1].shape[:2]
    fig = Figure(figsize=(panel_width * ncols, panel_width * h / w * nrows + (0.6 if suptitle else 0.3)),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(check_rgb(img, title), interpolation="nearest")
        ax.set_title(title, fontsize=10)
    for ax in axes:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def figure_bytes(fig: "Figure", fmt: str = "png", dpi: int = 150) -> bytes:
    """Encoded matplotlib figure (``png``, ``pdf`` or ``svg``) for a download button or a report file."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()
