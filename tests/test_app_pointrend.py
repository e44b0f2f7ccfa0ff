"""The app with PointRend instance models (issue #29, PointRend part): every page with a FPN/FaPN PointRend pair and
in mixed pairs (with a Mask R-CNN, with the bundled semantic FPN), the Points view's numbers equal to the library's,
and an image-and-model pair with no detections."""

from __future__ import annotations

from pathlib import Path

import pytest

import apptest_helpers
import family_checkpoints
from fapn_core.checkpoints import bundled_models, detector_from_panoptic, load_checkpoint, save_native
from fapn_core.io import read_image_file
from fapn_core.viz.points import crop_around, match_instance, refinements

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "samples" / "synthetic_00.png"  # the sidebar's default sample

pytestmark = pytest.mark.skipif(
    not {"fpn_r18_panoptic", "fapn_r18_panoptic", "fpn_r18_semfpn"} <= set(bundled_models()),
    reason="bundled models missing from assets/models")


_pointrend = family_checkpoints.pointrend_model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """``fpn``/``fapn`` PointRend instance models, ``nothing`` (FaPN PointRend keeping no detection: score
    threshold above 1) and ``maskrcnn`` (the Mask R-CNN inside the bundled FPN Panoptic FPN), as native files."""
    have = bundled_models()
    out = tmp_path_factory.mktemp("pointrend")
    paths = {}
    for neck in ("fpn", "fapn"):
        model, card = _pointrend(have[f"{neck}_r18_panoptic"])
        paths[neck] = save_native(model, out / f"{neck}_r18_pointrend_rcnn.safetensors", card, half=True)
    model, card = _pointrend(have["fapn_r18_panoptic"], score_thresh_test=1.01)
    card["name"] = "fapn_r18_pointrend_rcnn-nothing"
    paths["nothing"] = save_native(model, out / "nothing_pointrend_rcnn.safetensors", card, half=True)
    panoptic, card = load_checkpoint(have["fpn_r18_panoptic"])
    det, det_card = detector_from_panoptic(panoptic, card, "maskrcnn")
    paths["maskrcnn"] = save_native(det, out / "fpn_r18_maskrcnn.safetensors", det_card, half=True)
    return paths


_upload = apptest_helpers.upload_checkpoint


def _frame(at, columns: set[str]):
    """The first table on the page with all of ``columns``."""
    for d in at.dataframe:
        if columns <= set(d.value.columns):
            return d.value
    raise AssertionError(f"no table with {columns}: {[list(d.value.columns) for d in at.dataframe]}")


def _detections(path: Path):
    model, _ = load_checkpoint(path)
    return model.predict(read_image_file(IMAGE).rgb).to("cpu")


def _check_row(row, r, det) -> None:
    """A row of the chosen-objects table against the library's :class:`Refinement`."""
    assert row["object"] == f"#{r.index}"
    assert row["score"] == round(float(det.scores[r.index]), 3)
    assert (row["coarse mask (px)"], row["final mask (px)"]) == (r.coarse_area, r.final_area)
    assert (row["added (px)"], row["removed (px)"]) == (r.added, r.removed)
    assert row["added (% of final)"] == round(100 * r.added_share, 2)
    assert row["removed (% of coarse)"] == round(100 * r.removed_share, 2)
    assert row["points per step"] == " / ".join(str(n) for n in r.points_per_step)


def test_pointrend_pair_every_page_and_the_points_view_equal_the_library(models):
    at = apptest_helpers.every_page_then("points", models["fpn"], models["fapn"])
    assert not at.info, [i.value for i in at.info]  # both are PointRend instance models: nothing hidden
    dets = {"A": _detections(models["fpn"]), "B": _detections(models["fapn"])}
    keep = {k: [i for i in range(len(d)) if float(d.scores[i]) >= 0.5] for k, d in dets.items()}
    assert len(keep["A"]) >= 3 and len(keep["B"]) >= 3  # the trained box branch finds the scene's objects
    # A: its best detection; B: the one whose mask overlaps it most, both in one crop around the two boxes
    ia = keep["A"][0]
    ib, iou = match_instance(dets["A"].masks[ia].numpy(), dets["B"].masks.numpy(), keep["B"])
    assert ib is not None and iou > 0.3
    crop = crop_around([dets["A"].boxes[ia].tolist(), dets["B"].boxes[ib].tolist()], (256, 512))
    ref = {"A": refinements(dets["A"], [ia], crops=[crop])[0], "B": refinements(dets["B"], [ib], crops=[crop])[0]}
    assert ref["A"].points_per_step == (784, 784, 784, 784) and ref["A"].grid_sides == (28, 56, 112, 224)
    assert ref["A"].added + ref["A"].removed > 0  # the refinement changed something: the numbers are not all zero
    chosen = _frame(at, {"model", "object", "added (px)", "removed (px)", "points per step"})
    assert list(chosen["model"]) == ["A · fpn_r18_pointrend_rcnn", "B · fapn_r18_pointrend_rcnn"]
    for (_, row), k in zip(chosen.iterrows(), "AB"):
        _check_row(row, ref[k], dets[k])
    assert any(f"mask IoU {iou:.2f}" in c.value for c in at.caption), "the match is stated"
    captions = [c for im in at.image for c in im.captions]
    for k in "AB":
        r = ref[k]
        assert (f"what refinement changed: {r.added:,} px added ({100 * r.added_share:.1f} % of the final mask), "
                f"{r.removed:,} px removed ({100 * r.removed_share:.1f} % of the coarse mask)") in captions
    steps = _frame(at, {"model", "step", "map side", "points"})
    assert list(steps["points"]) == list(ref["A"].points_per_step) + list(ref["B"].points_per_step)
    assert list(steps["map side"]) == [28, 56, 112, 224] * 2
    # every object at the threshold, per model
    every = [d.value for d in at.dataframe if "model" in d.value.columns and "object" in d.value.columns
             and set(d.value["model"]) <= {"A", "B"}]
    assert len(every) == 2
    for table, k in zip(every, "AB"):
        rs = refinements(dets[k], keep[k])
        assert list(table["object"]) == [f"#{r.index}" for r in rs]
        assert list(table["added (px)"]) == [r.added for r in rs]
        assert list(table["removed (px)"]) == [r.removed for r in rs]
    # B picked separately: B's row follows the picker; one step shown
    at.radio(key="pts_pair").set_value("picked separately").run()
    at.selectbox(key="pts_obj_b").set_value(keep["B"][1]).run()
    at.selectbox(key="pts_step").set_value(2).run()
    apptest_helpers.no_errors(at)
    row = _frame(at, {"model", "object", "added (px)"}).iloc[1]
    _check_row(row, refinements(dets["B"], [keep["B"][1]])[0], dets["B"])
    captions = [c for im in at.image for c in im.captions]
    assert sum(c.startswith("points evaluated (step 2: 784) over") for c in captions) == 2


def test_pointrend_with_a_mask_rcnn_and_with_the_semantic_fpn(models):
    at = apptest_helpers.every_page_then("points", models["fapn"], models["maskrcnn"])
    infos = [i.value for i in at.info]
    assert len(infos) == 1 and infos[0].startswith("B · fpn_r18_panoptic-maskrcnn is hidden here: it is an instance "
                                                    "model (Mask R-CNN · FPN neck · R18) whose mask head"), infos
    assert [s.value for s in at.subheader][:1] == ["A · fapn_r18_pointrend_rcnn"]
    assert list(_frame(at, {"model", "added (px)"})["model"]) == ["A · fapn_r18_pointrend_rcnn"]

    at = apptest_helpers.every_page_then("points", b=models["fpn"])  # A: the bundled semantic FPN
    infos = [i.value for i in at.info]
    assert len(infos) == 1 and infos[0].startswith("A · fpn_r18_semfpn is hidden here: it is a semantic model"), infos
    assert list(_frame(at, {"model", "added (px)"})["model"]) == ["B · fpn_r18_pointrend_rcnn"]


def test_no_detections_says_so(models):
    at = apptest_helpers.app().run()
    _upload(at, "a", models["fpn"])
    _upload(at, "b", models["nothing"])
    apptest_helpers.visit_every_page(at)  # no page breaks on a model that finds nothing
    at.switch_page("../pages/points.py").run()
    apptest_helpers.no_errors(at)
    assert any(i.value == "B found no objects in this image, so there is no mask to refine." for i in at.info)
    assert list(_frame(at, {"model", "added (px)"})["model"]) == ["A · fpn_r18_pointrend_rcnn"]
    at.slider(key="pts_score").set_value(1.0).run()  # A keeps none at this threshold either
    apptest_helpers.no_errors(at)
    assert any(i.value.startswith("No detection of A scores ≥ 1.00 (its best: ") for i in at.info)
    assert not any("added (px)" in d.value.columns for d in at.dataframe)
