"""The app with detectors: a Mask R-CNN pair, a Faster R-CNN, the bundled Panoptic FPN pair and mixed pairs on
every page, numbers equal to the library's, COCO JSON ground truth and the bad uploads of issue #16."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn_core.checkpoints import bundled_models

import apptest_helpers  # tests/ is on sys.path (pytest rootdir conftest)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "assets" / "samples"
PAGES = apptest_helpers.PAGES

pytestmark = pytest.mark.skipif(
    not {"fpn_r18_semfpn", "fapn_r18_semfpn", "fpn_r18_panoptic", "fapn_r18_panoptic"} <= set(bundled_models()),
    reason="bundled models missing from assets/models",
)


_app, _no_errors = apptest_helpers.app, apptest_helpers.no_errors


_upload_model = apptest_helpers.upload_checkpoint


def _bundled(at, slot: str, name: str):
    at.selectbox(key=f"bundled_{slot}").set_value(name).run()
    return at


def _frame(at, columns: set[str]):
    """The first dataframe on the page with all of ``columns``."""
    for d in at.dataframe:
        if columns <= set(d.value.columns):
            return d.value
    raise AssertionError(f"no table with {columns}: {[list(d.value.columns) for d in at.dataframe]}")


def _sample():
    from fapn_core.io import decode_instances, decode_label, read_image_file

    image = read_image_file(SAMPLES / "synthetic_00.png").rgb
    label = decode_label((SAMPLES / "synthetic_00_label.png").read_bytes())
    inst = decode_instances((SAMPLES / "synthetic_00_instances.png").read_bytes(), expected_hw=label.shape)
    return image, label, inst


def _library_comparison(path_a: Path, path_b: Path, image, label, inst):
    """What the app should show, computed here from the checkpoints with the library alone."""
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.data.coco import detection_results
    from fapn_core.metrics.detection_pair import (
        annotations_from_maps, compare_detections, detector_category_ids, pair_categories,
    )

    results, cards = [], []
    for p in (path_a, path_b):
        model, card = load_checkpoint(p)
        det = model.predict(image).to("cpu")
        ids = np.asarray(detector_category_ids(card))
        results.append(detection_results(det.boxes.numpy(), det.scores.numpy(), ids[det.classes.numpy()], image_id=1,
                                         masks=None if det.masks is None else det.masks.numpy()))
        cards.append(card)
    cats = pair_categories(*cards)
    gt = annotations_from_maps(label, inst, [c["id"] for c in cats])  # object ids = instance ids (issue #25)
    return compare_detections(gt, results[0], results[1], cats, image.shape[:2]), gt


def test_mask_rcnn_pair_every_page_and_numbers_equal_the_library(r18_detectors):
    from fapn_core.metrics import summarize_objects

    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    _no_errors(at)
    ref, gt = _library_comparison(r18_detectors["fpn_maskrcnn"], r18_detectors["fapn_maskrcnn"], *_sample())
    assert ref.iou_type == "segm" and ref.n_objects >= 5
    # Compare: semantic views hidden with the reason, instance views shown, found counts as the library's
    assert any("no semantic output" in i.value for i in at.info)
    assert {"Instances and panoptic segments", "Where A and B disagree (objects)"} <= {h.value for h in at.subheader}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["objects"] == str(ref.n_objects)
    # counts at the slider's score threshold, which the labels name (issue #25)
    at05 = ref.counts_at(0.5)
    assert metrics["found by A (score ≥ 0.50)"] == str(at05["found_a"])
    assert metrics["found by B (score ≥ 0.50)"] == str(at05["found_b"])
    apptest_helpers.visit_every_page(at)
    # Small objects: per-image AP by size and the per-object table
    at.switch_page("../pages/small_objects.py").run()
    ap = _frame(at, {"model", "IoU", "AP_S"})
    for k, (tag, t) in enumerate([("a", "bbox"), ("a", "segm"), ("b", "bbox"), ("b", "segm")]):
        for col in ("AP", "AP50", "AP_S", "AP_M", "AP_L"):
            want = ref.ap[tag][t][col]
            got = apptest_helpers.numbers(ap[col])[k]
            assert (np.isnan(want) and np.isnan(got)) or abs(got - round(100 * want, 1)) < 1e-6
    found = _frame(at, {"size", "found A (%)"}).set_index("size")
    summ = summarize_objects(ref.records)
    found_b = dict(zip(found.index, apptest_helpers.numbers(found["found B (%)"])))
    for size in ("small", "medium", "large", "all"):
        assert found.loc[size, "objects"] == summ[size].n_objects
        if summ[size].n_objects:
            assert abs(found_b[size] - round(100 * summ[size].hit_rate_b, 2)) < 1e-6
    objects = _frame(at, {"object_id", "outcome", "score_a"})
    assert len(objects) == ref.n_objects
    by_id = {r.object_id: r for r in ref.records}
    for _, row in objects.iterrows():
        r = by_id[row["object_id"]]
        assert row["size"] == r.size and abs(float(row["iou_b"]) - round(r.iou_b, 3)) < 1e-9
    # Boundaries: mask Boundary IoU per object, as the library's ("—" where the library's is NaN)
    at.switch_page("../pages/boundaries.py").run()
    table = _frame(at, {"object_id", "boundary_iou_a", "boundary_iou_b"})
    for side in ("a", "b"):
        shown = apptest_helpers.numbers(table[f"boundary_iou_{side}"])
        for obj, got in zip(table["object_id"], shown):
            want = getattr(by_id[obj], f"boundary_iou_{side}")
            assert (np.isnan(want) and np.isnan(got)) or abs(got - round(want, 3)) < 1e-9
    # Models & speed: per part, RPN, box and mask heads included, no semantic head; "rest" is what runs outside them
    at.switch_page("../pages/models.py").run()
    parts = _frame(at, {"part", "params (M)", "GFLOPs"})
    assert list(parts["part"])[:-1] == ["backbone", "neck", "RPN", "box head", "mask head"]
    assert parts["part"].iloc[-1].startswith("rest")
    assert (parts["GFLOPs"].iloc[:4] > 0).all() and (parts["GFLOPs"] >= 0).all()


def test_zoom_on_an_object_draws_both_masks(r18_detectors):
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    at.switch_page("../pages/small_objects.py").run()
    at.session_state["det_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    _no_errors(at)
    assert any(h.value.startswith("Object ") for h in at.subheader), [h.value for h in at.subheader]
    at.switch_page("../pages/boundaries.py").run()
    at.session_state["bnd_det_table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    _no_errors(at)
    assert any(h.value.startswith("Object ") for h in at.subheader)


def test_faster_rcnn_against_the_panoptic_model(r18_detectors):
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_fasterrcnn"])
    _bundled(at, "b", "fapn_r18_panoptic")
    _no_errors(at)
    assert any("A (`fpn_r18_panoptic-fasterrcnn`, detection) has no semantic output" in i.value for i in at.info)
    apptest_helpers.visit_every_page(at)
    at.switch_page("../pages/boundaries.py").run()
    assert any("a Faster R-CNN predicts boxes only" in i.value for i in at.info)
    at.switch_page("../pages/small_objects.py").run()
    ap = _frame(at, {"model", "IoU", "AP_S"})
    assert list(ap["IoU"]) == ["box", "box"]  # box matching: A has no masks


def test_panoptic_pair_shows_label_map_and_object_views():
    at = _app().run()
    _bundled(at, "a", "fpn_r18_panoptic")
    _bundled(at, "b", "fapn_r18_panoptic")
    _no_errors(at)
    sub = {h.value for h in at.subheader}
    want = {"Where A and B disagree", "Where A and B disagree (objects)", "Against the ground truth (label maps)"}
    assert want <= sub
    apptest_helpers.visit_every_page(at)
    at.switch_page("../pages/small_objects.py").run()
    assert [h.value for h in at.header] == ["Objects found and lost (detections, COCO matching)",
                                            "Objects in the label maps"]
    at.switch_page("../pages/boundaries.py").run()
    assert [h.value for h in at.header] == ["Object masks at their boundaries (detections)",
                                            "Label maps around boundaries"]


def test_semantic_and_detector_pair_shows_what_they_share(r18_detectors):
    at = _app().run()
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    _no_errors(at)
    assert any("B (`fapn_r18_panoptic-maskrcnn`, instance) has no semantic output" in i.value for i in at.info)
    assert any("A (`fpn_r18_semfpn`) is a semantic model" in i.value for i in at.info)
    apptest_helpers.visit_every_page(at)
    at.switch_page("../pages/offsets.py").run()  # the neck views work on the detector's FaPN neck
    assert any(m.label == "mean |offset| (image px)" for m in at.metric)
    at.switch_page("../pages/dataset.py").run()
    assert any("one evaluation takes semantic models or detectors" in i.value for i in at.info)


def test_dataset_page_evaluates_a_detector_pair_like_the_library(r18_detectors, tmp_path):
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.data import open_dataset
    from fapn_core.evaluation import ModelEntry, evaluate

    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    at.switch_page("../pages/dataset.py").run()
    at.number_input(key="ds_limit").set_value(3).run()
    at.button(key="ds_run").click().run()
    _no_errors(at)
    assert any("3 images evaluated" in s.value for s in at.success)
    box = _frame(at, {"method", "AP", "AP_S"})
    entries = []
    for tag, key in (("A", "fpn_maskrcnn"), ("B", "fapn_maskrcnn")):
        model, card = load_checkpoint(r18_detectors[key])
        entries.append(ModelEntry(tag, model, card))
    report = evaluate(entries, open_dataset("synthetic:n=3,seed=2,size=256x512"), tmp_path, progress=False)
    want = report.tables["box_ap"]
    np.testing.assert_allclose(box["AP"].to_numpy(float), [r["AP"] for r in want], atol=1e-9)
    assert {"Mask AP (COCO, %)", "Boundary AP (Cheng et al. 2021, dilation 0.02, %)"} <= {h.value for h in at.subheader}
    names = {b.label for b in at.get("download_button")}
    assert {"coco/instances_gt.json", "objects.csv", "tables.md"} <= names
    assert any(n.startswith("coco/results_") for n in names)


# ------------------------------------------------------------------------------------ ground truth uploads
def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _upload_image(at, name: str = "street.png"):
    at.radio(key="img_src").set_value("Upload image").run()
    at.file_uploader(key="img_upload").upload(name, (SAMPLES / "synthetic_00.png").read_bytes(), "image/png").run()
    return at


def _coco_json(label, inst, things, file_name="street.png") -> bytes:
    from fapn_core.data.coco import gt_annotations, image_entry

    h, w = label.shape
    anns = gt_annotations(label, inst, things, image_id=7)
    cats = [{"id": c, "name": f"thing{c}"} for c in things]
    return json.dumps({"images": [image_entry(7, h, w, file_name)], "annotations": anns,
                       "categories": cats}).encode()


def test_coco_json_ground_truth_drives_the_object_table(r18_detectors):
    image, label, inst = _sample()
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    _upload_image(at)
    at.file_uploader(key="coco_upload").upload("gt.json", _coco_json(label, inst, [5, 7, 8, 9]), "application/json")
    at.run()
    _no_errors(at)
    ref, gt = _library_comparison(r18_detectors["fpn_maskrcnn"], r18_detectors["fapn_maskrcnn"], image, label, inst)
    at.switch_page("../pages/small_objects.py").run()
    objects = _frame(at, {"object_id", "outcome"})
    assert len(objects) == ref.n_objects
    names = {"recovered": "only B", "lost": "only A", "both_hit": "both", "both_missed": "neither"}
    want = {}
    for r in ref.records:
        want[names[r.outcome]] = want.get(names[r.outcome], 0) + 1
    assert objects["outcome"].value_counts().to_dict() == want
    # the JSON's class names are the ones shown
    assert set(objects["class_name"]) <= {"thing5", "thing7", "thing8", "thing9"}


@pytest.mark.parametrize("kind, message", [
    ("size", "does not belong to this image"),
    ("names", "none is named 'street.png'"),
    ("broken", "not valid JSON"),
    ("category", "refers to category 99, which does not exist"),
])
def test_bad_coco_json_gets_a_message_and_the_session_keeps_working(r18_detectors, kind, message):
    image, label, inst = _sample()
    if kind == "size":
        # a valid COCO JSON of another (taller) image
        data = _coco_json(np.pad(label, ((0, 64), (0, 0))), np.pad(inst, ((0, 64), (0, 0))), [5, 7, 8, 9])
    elif kind == "names":
        one = json.loads(_coco_json(label, inst, [5, 7, 8, 9], file_name="other.png"))
        one["images"].append(dict(one["images"][0], id=8, file_name="third.png"))
        data = json.dumps(one).encode()
    elif kind == "broken":
        data = b'{"images": [1, 2'
    else:
        one = json.loads(_coco_json(label, inst, [5, 7, 8, 9]))
        one["annotations"][0]["category_id"] = 99
        data = json.dumps(one).encode()
    at = _app().run()
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_image(at)
    at.file_uploader(key="coco_upload").upload("gt.json", data, "application/json").run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    for page in ("compare", "small_objects", "boundaries"):
        at.switch_page(f"../pages/{page}.py").run()
        assert not at.exception
    assert any("need ground-truth objects" in i.value for i in at.info)


def test_instance_png_of_the_wrong_size_is_explained(r18_detectors):
    image, label, inst = _sample()
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_image(at)
    at.file_uploader(key="gt_upload").upload("gt.png", _png(label.astype(np.uint8)), "image/png").run()
    at.file_uploader(key="inst_upload").upload("inst.png", _png(inst[:-8].astype(np.uint8)), "image/png").run()
    assert not at.exception
    assert any("inst.png" in e.value and "248" in e.value for e in at.error), [e.value for e in at.error]
    at.switch_page("../pages/compare.py").run()
    assert not at.exception


def test_instance_png_without_classes_is_explained(r18_detectors):
    image, label, inst = _sample()
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_maskrcnn"])
    _upload_image(at)
    at.file_uploader(key="inst_upload").upload("inst.png", _png(inst.astype(np.uint8)), "image/png").run()
    assert any("needs the class-id PNG beside it" in e.value for e in at.error), [e.value for e in at.error]


def _detectron2_maskrcnn(tmp_path: Path, rename) -> Path:
    import torch

    from fapn_core.checkpoints import export_detectron2_state_dict
    from fapn_core.models.zoo import build_model

    model = build_model("fapn_r18_maskrcnn", num_classes=2, neck_channels=32, box_fc_dim=32, mask_conv_dims=32)
    sd = {rename(k): v for k, v in export_detectron2_state_dict(model).items()}
    sd = {k: v for k, v in sd.items() if k is not None}
    path = tmp_path / "model_final.pth"
    torch.save({"model": sd}, path)
    return path


@pytest.mark.parametrize("rename, message", [
    (lambda k: k.replace("roi_heads.mask_head.", "roi_heads.mask_head.coarse_head."),
     "PointRend instance-segmentation checkpoint"),
    (lambda k: None if k.startswith("roi_heads.") else k, "RPN-only models are not supported"),
])
def test_checkpoint_of_an_unknown_head_is_refused_and_the_session_keeps_working(tmp_path, rename, message):
    path = _detectron2_maskrcnn(tmp_path, rename)
    at = _app().run()
    at.radio(key="src_a").set_value("Upload checkpoint").run()
    at.file_uploader(key="upload_a").upload(path.name, path.read_bytes()).run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    at.radio(key="src_a").set_value("Bundled").run()
    _no_errors(at)
    assert at.subheader  # the page renders again


def test_sample_ground_truth_in_other_classes_is_not_used_for_coco_detectors(r18_detectors, tmp_path):
    """A detector whose category ids are COCO's: the synthetic sample's label ids mean other classes there."""
    from fapn_core.checkpoints import load_checkpoint, save_native

    paths = []
    for key in ("fpn_maskrcnn", "fapn_maskrcnn"):
        model, card = load_checkpoint(r18_detectors[key])
        card = dict(card, classes=["person", "bicycle", "car", "motorcycle"], thing_category_ids=[1, 2, 3, 4])
        paths.append(save_native(model, tmp_path / f"coco_{key}.safetensors", card))
    at = _app().run()
    _upload_model(at, "a", paths[0])
    _upload_model(at, "b", paths[1])
    _no_errors(at)
    assert any("category 1 is 'person' (there: sidewalk" in c.value for c in at.caption), [c.value for c in at.caption]
    at.switch_page("../pages/small_objects.py").run()
    _no_errors(at)
    assert any("upload a COCO instances JSON" in i.value for i in at.info)


def test_panoptic_pair_object_numbers_equal_the_library():
    at = _app().run()
    _bundled(at, "a", "fpn_r18_panoptic")
    _bundled(at, "b", "fapn_r18_panoptic")
    at.switch_page("../pages/small_objects.py").run()
    _no_errors(at)
    have = bundled_models()
    ref, _ = _library_comparison(have["fpn_r18_panoptic"], have["fapn_r18_panoptic"], *_sample())
    objects = _frame(at, {"object_id", "outcome", "score_a"})
    assert len(objects) == ref.n_objects
    by_id = {r.object_id: r for r in ref.records}
    for _, row in objects.iterrows():
        r = by_id[row["object_id"]]
        assert abs(float(row["iou_a"]) - round(r.iou_a, 3)) < 1e-9
        assert abs(float(row["iou_b"]) - round(r.iou_b, 3)) < 1e-9
    ap = _frame(at, {"model", "IoU", "AP_S"})
    assert abs(apptest_helpers.numbers(ap["AP"])[3] - round(100 * ref.ap["b"]["segm"]["AP"], 1)) < 1e-9


def test_detector_latency_is_measured_on_models_and_speed(r18_detectors):
    at = _app().run()
    _upload_model(at, "a", r18_detectors["fpn_fasterrcnn"])
    _upload_model(at, "b", r18_detectors["fapn_maskrcnn"])
    at.switch_page("../pages/models.py").run()
    at.slider(key="lat_repeats").set_value(1).run()
    at.button(key="measure").click().run()
    _no_errors(at)
    m = {x.label: x.value for x in at.metric}
    assert m["A latency"].endswith(" ms") and float(m["latency ratio B/A"].rstrip("×")) > 0
