"""The app with PanopticFCN models (issue #29, PanopticFCN part): every page with a FaPN/FPN PanopticFCN pair and in a
mixed pair beside the bundled semantic FPN; the Positions view's peak counts and A/B matching equal the library's,
a model without peaks says so, and a model without centre heatmaps is hidden with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import apptest_helpers
import family_checkpoints
from fapn_core.checkpoints import bundled_models, load_checkpoint
from fapn_core.data.synthetic import CLASS_NAMES, THING_CLASSES
from fapn_core.introspect import predict_with_captures
from fapn_core.io import read_image_file
from fapn_core.viz.positions import fusion_table, kept_peaks, level_rows, match_peaks

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif("fpn_r18_semfpn" not in bundled_models(), reason="bundled semantic FPN missing")


@pytest.fixture(scope="module")
def panopticfcns(tmp_path_factory) -> dict[str, Path]:
    """R18 PanopticFCNs with random weights in the synthetic benchmark's classes, as native files: an FPN and a
    FaPN that keep peaks, and a FaPN that keeps none."""
    out = tmp_path_factory.mktemp("panopticfcn")
    return {"fpn": family_checkpoints.panopticfcn(out, "fpn", "fpn"),
            "fapn": family_checkpoints.panopticfcn(out, "fapn", "fapn"),
            "empty": family_checkpoints.panopticfcn(out, "empty", "fapn", car_bias=None)}


def _positions(path: Path):
    """What the library says about a checkpoint on the default sample: (the positions capture, the model)."""
    model, _ = load_checkpoint(path)
    image = read_image_file(ROOT / "assets" / "samples" / "synthetic_00.png").rgb
    return predict_with_captures(model, image, ("positions",)).captures.positions, model


def _frame(at, column: str, nth: int = 0):
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    return frames[nth]


def test_panopticfcn_pair_every_page_and_the_positions_view_equal_the_library(panopticfcns):
    at = apptest_helpers.every_page_then("positions", panopticfcns["fpn"], panopticfcns["fapn"])
    assert not at.info, [i.value for i in at.info]  # both are PanopticFCNs with peaks: nothing hidden
    (maps_a, model_a), (maps_b, _) = _positions(panopticfcns["fpn"]), _positions(panopticfcns["fapn"])
    peaks_a, peaks_b = kept_peaks(maps_a), kept_peaks(maps_b)
    ref = match_peaks(peaks_a, peaks_b, cells=1.0)
    assert ref.matched and ref.only_a and ref.only_b  # the test models keep peaks, some shared, some not
    shown = {m.label: m.value for m in at.metric}
    assert shown["peaks kept by A"] == str(len(peaks_a)) and shown["peaks kept by B"] == str(len(peaks_b))
    assert shown["matched peaks"] == str(len(ref.matched))
    assert shown["peaks only A keeps"] == str(len(ref.only_a))
    assert shown["peaks only B keeps"] == str(len(ref.only_b))
    for nth, maps in enumerate((maps_a, maps_b)):  # per-level tables, A then B
        levels = _frame(at, "peaks kept", nth)
        assert list(levels["level"]) == ["p3", "p4", "p5", "p6", "p7"]
        assert list(levels["peaks kept"]) == [r.peaks for r in level_rows(maps)]
    agree = _frame(at, "distance (px)")
    assert list(agree["peak"]).count("only A") == len(ref.only_a) and len(agree) == len(ref.matched) + \
        len(ref.only_a) + len(ref.only_b)
    # kernel → instance table of A: one row per candidate, instances as the library follows them
    rows = fusion_table(maps_a, [CLASS_NAMES[c] for c in THING_CLASSES], top_num=model_a.options.center_top_num)
    table = _frame(at, "kernel of candidate", 0)
    assert len(table) == len(rows) == len(maps_a.candidates)
    assert list(table["class"]) == [r.class_name for r in rows]
    assert [str(v) for v in table["instance"]] == ["—" if r.instance is None else str(r.instance) for r in rows]
    # a coarser tolerance is the library's too
    at.select_slider(key="pos_cells").set_value(2.0).run()
    wide = match_peaks(peaks_a, peaks_b, cells=2.0)
    assert len(wide.matched) > len(ref.matched)
    shown = {m.label: m.value for m in at.metric}
    assert shown["matched peaks"] == str(len(wide.matched)) and shown["peaks only B keeps"] == str(len(wide.only_b))
    # another level and one class: still no errors
    at.radio(key="pos_level").set_value("p3").run()
    at.selectbox(key="pos_class").set_value("car").run()
    apptest_helpers.no_errors(at)


def test_mixed_pair_semantic_fpn_and_a_panopticfcn_without_peaks(panopticfcns):
    at = apptest_helpers.every_page_then("positions", b=panopticfcns["empty"])  # A: the bundled semantic FPN
    infos = [i.value for i in at.info]
    assert any(i.startswith("A · fpn_r18_semfpn is a semantic model") and "needs a PanopticFCN" in i
               for i in infos), infos
    maps, model = _positions(panopticfcns["empty"])
    assert not kept_peaks(maps) and len(maps.candidates) == 0
    best = max(level_rows(maps), key=lambda r: r.best_score)
    assert any(i.startswith("B keeps no peaks on this image") and f"{best.best_score:.3f}, at {best.level}" in i
               and f"threshold {model.options.center_thresh:g}" in i for i in infos), infos
    assert any("nothing to fuse" in i for i in infos)
    assert [s.value for s in at.subheader if s.value.startswith(("A · ", "B · "))] == ["B · fapn_r18_panopticfcn"]
    assert {m.label: m.value for m in at.metric} == {"peaks kept by B": "0"}  # no A/B matching with one model
    assert list(_frame(at, "peaks kept")["peaks kept"]) == [0] * 5
