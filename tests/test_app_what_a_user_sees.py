"""Issue #25, what a user sees: the out-of-domain notice per task and on every page that interprets a result,
readable detector drawings with filters and a key, one object identity and one vocabulary across the object tables,
the zoom band chosen from the object's size, counts at the slider's threshold, "—" for a missing value, legends that
cover the ground truth, the user's file names and words, and wall time labelled as such. Numbers equal the
library's."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn_core.checkpoints import bundled_models

import apptest_helpers  # tests/ is on sys.path (pytest rootdir conftest)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"
NOTE = "trained on synthetic street scenes only"
INTERPRETING = ["compare", "offsets", "channels", "boundaries", "small_objects", "models"]

pytestmark = pytest.mark.skipif(
    not {"fpn_r18_semfpn", "fapn_r18_semfpn", "fpn_r18_panoptic", "fapn_r18_panoptic"} <= set(bundled_models()),
    reason="bundled models missing from assets/models",
)
_app, _no_errors = apptest_helpers.app, apptest_helpers.no_errors


def _notes(at) -> list[str]:
    return [w.value for w in at.warning if NOTE in w.value]


def _frames(at, columns: set[str]) -> list:
    return [d.value for d in at.dataframe if columns <= set(d.value.columns)]


def _captions(at) -> list[str]:
    return [c for im in at.get("image") for c in im.captions]


def _chart(at, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def _sample(name: str = "synthetic_00"):
    from fapn_core.io import decode_instances, decode_label, read_image_file

    image = read_image_file(SAMPLES / f"{name}.png").rgb
    label = decode_label((SAMPLES / f"{name}_label.png").read_bytes())
    inst = decode_instances((SAMPLES / f"{name}_instances.png").read_bytes(), expected_hw=label.shape)
    return image, label, inst


_upload_model = apptest_helpers.upload_checkpoint


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _library(paths, image, label, inst):
    """Detections, label maps and the detector comparison of two checkpoints on one sample, by the library."""
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.data.coco import detection_results
    from fapn_core.metrics.detection_pair import annotations_from_maps, compare_detections, pair_categories
    from fapn_core.metrics.detection_pair import detector_category_ids
    from fapn_core.models.rcnn.panoptic import panoptic_to_labels

    results, cards, labels = [], [], []
    for p in paths:
        model, card = load_checkpoint(p)
        det = model.predict(image).to("cpu")
        ids = np.asarray(detector_category_ids(card))
        results.append(detection_results(det.boxes.numpy(), det.scores.numpy(), ids[det.classes.numpy()], image_id=1,
                                         masks=None if det.masks is None else det.masks.numpy()))
        cards.append(card)
        if det.panoptic_seg is not None:
            labels.append(panoptic_to_labels(det.panoptic_seg, det.segments_info, det.sem_seg.argmax(0),
                                             card["thing_category_ids"], card["stuff_category_ids"]).numpy())
    cats = pair_categories(*cards)
    gt = annotations_from_maps(label, inst, [c["id"] for c in cats])
    return compare_detections(gt, results[0], results[1], cats, image.shape[:2]), labels


# ----------------------------------------------------------------------------- the bundled Panoptic FPN pair
def test_panoptic_pair_one_identity_counts_at_the_threshold_and_the_notice_per_task():
    from fapn_core.data.synthetic import CLASS_NAMES, THING_CLASSES
    from fapn_core.metrics import compare

    have = bundled_models()
    image, label, inst = _sample()
    ref, (la, lb) = _library([have["fpn_r18_panoptic"], have["fapn_r18_panoptic"]], image, label, inst)
    at = _app().run()
    at.selectbox(key="bundled_a").set_value("fpn_r18_panoptic").run()
    at.selectbox(key="bundled_b").set_value("fapn_r18_panoptic").run()
    _no_errors(at)
    assert not _notes(at)  # a synthetic sample with its ground truth: in the models' domain
    # Compare: found / false positives at the slider's threshold, as the labels say; no arrow for no change
    for thresh in (0.5, 0.3):
        at.slider(key="cmp_score").set_value(thresh).run()
        want = ref.counts_at(thresh)
        m = {x.label: x for x in at.metric}
        assert m[f"found by A (score ≥ {thresh:.2f})"].value == str(want["found_a"])
        assert m[f"found by B (score ≥ {thresh:.2f})"].value == str(want["found_b"])
        assert m[f"false positives A / B (score ≥ {thresh:.2f})"].value == f"{want['fp_a']} / {want['fp_b']}"
        d = want["found_b"] - want["found_a"]
        assert m[f"found by B (score ≥ {thresh:.2f})"].delta == ("" if d == 0 else f"{d:+d} vs A")
    every = ref.counts_at(0.0)
    assert any(f"found by A {every['found_a']}, by B {every['found_b']}" in c.value for c in at.caption)
    # per-class IoU: "—" exactly where the library's IoU is undefined, with the reason beside it
    res = compare(label, la, lb, 10, instances=inst, class_names=list(CLASS_NAMES),
                  thing_classes=list(THING_CLASSES), allow_void=True)
    table = _frames(at, {"class", "IoU A (%)"})[0]
    for col, iou in (("IoU A (%)", res.a.iou), ("IoU B (%)", res.b.iou)):
        assert [v == "—" for v in table[col]] == list(np.isnan(iou))
        np.testing.assert_allclose(apptest_helpers.numbers(table[col]), np.round(100 * iou, 2), atol=0.011,
                                   equal_nan=True)
    assert any("class is in neither the ground truth nor that model's prediction" in c.value for c in at.caption)
    # the legend covers every class shown, the ground truth's included
    legend = " ".join(_chart(at, "-legend")["data"][0]["text"])
    for c in np.unique(label[label != 255]):
        assert CLASS_NAMES[c] in legend
    # Small objects: one object identity (the instance PNG's ids) and one vocabulary in both tables
    at.switch_page("../pages/small_objects.py").run()
    _no_errors(at)
    det_table = _frames(at, {"object_id", "score_a"})[0]
    map_table = _frames(at, {"object_id", "hit_a"})[0]
    instance_ids = {int(r.object_id) for r in ref.records}
    assert set(det_table["object_id"]) == instance_ids == set(map_table["object_id"])
    assert instance_ids <= set(np.unique(inst).tolist())
    words = {"only A", "only B", "both", "neither"}
    assert set(det_table["outcome"]) <= words and set(map_table["outcome"]) <= words
    for frame in _frames(at, {"size", "objects"}):  # the by-size tables use the same columns
        assert {"found A (%)", "found B (%)", "only A", "only B"} <= set(frame.columns)
    # a photo from the gallery: the notice, worded for Panoptic FPN, on every page that interprets a result
    at.switch_page("../pages/compare.py").run()
    at.selectbox(key="sample_name").set_value("astronaut").run()
    _no_errors(at)
    for page in INTERPRETING:
        at.switch_page(f"../pages/{page}.py").run()
        _no_errors(at)
        notes = _notes(at)
        assert len(notes) == 1, (page, notes)
        text = notes[0]
        assert "A Panoptic FPN finds objects of its thing classes only (4 classes: pole, traffic sign, person, car)" \
            in text and "stuff classes (6 classes: road, sidewalk, building, vegetation, sky, fence)" in text
        assert "`panoptic_fan_R_50_1x`" in text and "`panoptic_fpn_R_50_1x`" in text
        assert "every pixel one of these" not in text and "photo" not in text.split("For real photos")[0]


# ----------------------------------------------------------------------------- uploaded Mask / Faster R-CNN
def test_detector_pair_drawings_zoom_band_file_names_and_notices(r18_detectors):
    from fapn_core.data.coco import decode_mask
    from fapn_core.metrics.boundary import boundary_dilation
    from fapn_core.metrics.detection_pair import object_band_width, object_boundary_iou

    image, label, inst = _sample()
    ref, _ = _library([r18_detectors["fpn_maskrcnn"], r18_detectors["fapn_maskrcnn"]], image, label, inst)
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    _no_errors(at)
    # the sidebar says the whole file name and what it holds (the uploader's chip shortens it)
    side = [c.value for c in at.sidebar.caption]
    assert any("**fpn_r18_maskrcnn.safetensors** — Mask R-CNN · FPN neck · R18" in c for c in side), side
    assert any("**fapn_r18_maskrcnn.safetensors** — Mask R-CNN · FaPN neck · R18" in c for c in side), side
    # Compare: the drawings obey the filters, and their captions say what is drawn
    at.number_input(key="cmp_top").set_value(2).run()
    caps = [c for c in _captions(at) if c.startswith(("A · ", "B · "))]
    assert len(caps) == 2 and all(": 2 drawn — " in c for c in caps), caps
    car = next(c["id"] for c in ref.categories if c["name"] == "car")
    at.multiselect(key="cmp_classes").set_value([car]).run()
    legend = _chart(at, "det_legend")["data"][0]["text"]
    assert all(t.startswith("car:") or t.split(":")[1].strip().startswith("A 0, B 0") for t in legend), legend
    key = _chart(at, "agr_key")["data"][0]
    assert key["marker"]["symbol"] == ["square-open"] * 3 + ["square"] * 2  # outlines: objects; fills: pixels
    # Boundaries: the zoom's band comes from the object's size and explains the number beside it
    at.switch_page("../pages/boundaries.py").run()
    at.session_state["bnd_det_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    _no_errors(at)
    heading = next(h.value for h in at.subheader if h.value.startswith("Object "))
    rec = next(r for r in ref.records if r.object_id == int(re.match(r"Object (\d+):", heading).group(1)))
    d_image = boundary_dilation(image.shape[:2])
    d_obj = object_band_width(rec.bbox, max_d=d_image)
    slider = at.select_slider(key=f"bnd_det_width_{rec.object_id}")
    assert slider.value == d_obj
    g = decode_mask(next(a for a in ref.gt if a["id"] == rec.object_id)["segmentation"])
    pred = None if rec.det_a is None else decode_mask(ref.results_a[rec.det_a]["segmentation"])
    want = object_boundary_iou(g, pred, d_obj)["iou"]
    shown = next(c for c in _captions(at) if c.startswith("A: Boundary IoU"))
    assert shown.startswith(f"A: Boundary IoU at d = {d_obj} px: " + ("—" if np.isnan(want) else f"{want:.2f}"))
    assert any(f"d = {d_obj} px is 2 % of this object's box diagonal" in c.value for c in at.caption)
    slider.set_value(d_image).run()  # at the table's width the zoom's number is the table's
    shown = next(c for c in _captions(at) if c.startswith("A: Boundary IoU"))
    table_value = "—" if np.isnan(rec.boundary_iou_a) else f"{rec.boundary_iou_a:.2f}"
    assert shown.startswith(f"A: Boundary IoU at d = {d_image} px: {table_value}"), shown
    # the same scene uploaded with its class and instance PNGs: ground truth in the models' classes, no notice
    at.switch_page("../pages/compare.py").run()
    at.radio(key="img_src").set_value("Upload image").run()
    at.file_uploader(key="img_upload").upload("scene.png", (SAMPLES / "synthetic_00.png").read_bytes(),
                                              "image/png").run()
    assert any("cannot tell whether this image is one of those scenes" in n for n in _notes(at))
    at.file_uploader(key="gt_upload").upload("gt.png", _png(label.astype(np.uint8)), "image/png").run()
    at.file_uploader(key="inst_upload").upload("inst.png", _png(inst.astype(np.uint8)), "image/png").run()
    _no_errors(at)
    assert not _notes(at)
    # a gallery photo: one sentence per task, pointing to that task's releases
    at.radio(key="img_src").set_value("Sample gallery").run()
    at.selectbox(key="sample_name").set_value("coffee").run()
    _upload_model(at, "b", r18_detectors["fapn_fasterrcnn"])
    _no_errors(at)
    (text,) = _notes(at)
    assert "A Mask R-CNN finds boxes and masks of its thing classes only (4 classes:" in text
    assert "A Faster R-CNN finds boxes of its thing classes only" in text
    assert "`mask_rcnn_R_50_FAN_1x`" in text and "`faster_rcnn_R_50_FAN_1x`" in text
    assert "pointrend_semantic" not in text and "every pixel" not in text
    at.switch_page("../pages/offsets.py").run()  # an alignment verdict on a photo comes with the notice
    assert len(_notes(at)) == 1


def test_models_and_speed_gives_the_fapn_over_fpn_ratio_measured_side_by_side():
    at = _app().run()
    at.switch_page("../pages/models.py").run()
    at.slider(key="lat_repeats").set_value(1).run()
    at.button(key="measure").click().run()
    _no_errors(at)
    m = {x.label: x.value for x in at.metric}
    ratio = m["FaPN / FPN latency (measured side by side: B / A)"]  # A is the FPN, B the FaPN model
    assert ratio == m["latency ratio B/A"] and float(ratio.rstrip("×")) > 0
    at.switch_page("../pages/compare.py").run()
    status = next(c.value for c in at.caption if "wall time" in c.value)
    assert "this run's wall time for one pass on this image" in status and "not a benchmark" in status


# ----------------------------------------------------------------------------- bad inputs, words, grammar
def test_bad_files_are_named_as_the_user_named_them_where_the_user_looks(r18_detectors):
    at = _app().run()
    at.radio(key="src_a").set_value("Upload checkpoint").run()
    at.file_uploader(key="upload_a").upload("weights.pth", np.random.default_rng(0).bytes(5000)).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("Model A could not be loaded: weights.pth") for e in errors), errors  # on the page
    assert not any(re.search(r"[0-9a-f]{16}\.pth", e) for e in errors), errors  # never the stored copy's hash
    at.radio(key="src_a").set_value("Bundled").run()
    at.radio(key="img_src").set_value("Upload image").run()
    at.file_uploader(key="img_upload").upload("notes.png", b"this is text, not a picture", "image/png").run()
    errors = [e.value for e in at.main.error]
    assert errors == ["**notes.png** cannot be used: the file is not an image file this app can read (supported: "
                      + errors[0].split("(supported: ")[1]], errors
    assert not any("Pillow" in e.value for e in at.error)
    assert not any("Pick a sample" in i.value for i in at.info)
    # grammar: "an instance model"
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    at.switch_page("../pages/dataset.py").run()
    assert any("A is a semantic model and B an instance model" in i.value for i in at.info), [i.value for i in at.info]


def test_the_objects_by_size_table_fits_the_page():
    """The Dataset page's detector table of 16 columns becomes one row per (method, size) and a small rest."""
    import pandas as pd

    from app import ui

    row = {"method": "A·fpn"}
    for size in ("small", "medium", "large", "all"):
        row.update({f"{size}_n": 3, f"{size}_found": 50.0, f"{size}_IoU": 61.5})
    wide = pd.DataFrame([row, dict(row, method="B·fapn")]).assign(only_B=[None, 2], only_A=[None, 1],
                                                                  false_positives=[9, 7])
    long, rest = ui.fit_width(wide)
    assert list(long.columns) == ["method", "size", "objects", "found (%)", "mean IoU (%)"] and len(long) == 8
    assert list(rest.columns) == ["method", "only_B", "only_A", "false_positives"]
    shown, config = ui.display_frame(rest)
    assert list(shown["only_B"]) == ["—", "2"] and "only_B" in config  # "—", never "None"
    assert len(ui.fit_width(wide[["method", "small_n", "small_found"]])) == 1  # narrow tables stay as they are
