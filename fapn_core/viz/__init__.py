"""Figures for comparing FaPN and FPN: plotly figures for the app, numpy RGB images for overlays and exports,
matplotlib for static reports. No Streamlit and no torch at import time. See ``docs/figures.md``.

Views that need a FAM or FSM raise :class:`NothingToShow` (a ``ValueError``) whose message says why
(e.g. ``Captures.explain_missing()``: "the fpn neck has no FAM …").
"""

from ._common import COLORMAPS, NothingToShow, apply_colormap, greyed, to_data_uri, to_png_bytes
from .alignment import PCAPair, alignment_pca, pca_pair_figure, pca_rgb_pair
from .detections import (
    AGREEMENT_KEY, MASK_A, MASK_B, ONLY_A, ONLY_B, agreement_view, draw_detections, draw_panoptic, object_zoom,
    text_scale,
)
from .errors import error_density, error_heatmap, error_profile_figure
from .fsm import ChannelGrid, fsm_channel_grid, fsm_importance_figure, fsm_inputs
from .motivation import DEFAULT_SCALES, motivation_figure, resampling_residuals, residual_images
from .offsets import (
    DEFAULT_MAX_ARROWS,
    HAS_NATIVE_QUIVER,
    ArrowSet,
    arrow_set,
    cell_step_for,
    magnitude_map,
    offset_histogram,
    offset_magnitude_figure,
    offset_quiver,
)
from .overlays import (
    DiffView,
    FixBreakView,
    LegendEntry,
    class_legend,
    disagreement_view,
    fix_break_view,
    key_figure,
    legend_figure,
    overlay_labels,
    region_outline,
    scalar_map_figure,
    share_text,
    side_by_side,
)
from .report import figure_bytes, report_grid

__all__ = [
    "COLORMAPS", "DEFAULT_MAX_ARROWS", "DEFAULT_SCALES", "HAS_NATIVE_QUIVER",
    "ArrowSet", "ChannelGrid", "DiffView", "FixBreakView", "LegendEntry", "NothingToShow", "PCAPair",
    "alignment_pca", "apply_colormap", "arrow_set", "cell_step_for", "class_legend", "disagreement_view",
    "draw_detections", "draw_panoptic", "agreement_view", "object_zoom", "ONLY_A", "ONLY_B", "MASK_A", "MASK_B",
    "AGREEMENT_KEY", "key_figure", "region_outline", "scalar_map_figure", "share_text", "text_scale",
    "error_density", "error_heatmap", "error_profile_figure", "figure_bytes", "fix_break_view",
    "fsm_channel_grid", "fsm_importance_figure", "fsm_inputs", "greyed", "legend_figure", "magnitude_map",
    "motivation_figure", "offset_histogram", "offset_magnitude_figure", "offset_quiver", "overlay_labels",
    "pca_pair_figure", "pca_rgb_pair", "report_grid", "resampling_residuals", "residual_images",
    "side_by_side", "to_data_uri", "to_png_bytes",
]
