"""COCO JSON / panoptic PNG writers and validated readers: round trips, and malformed or hostile files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fapn_core.data import coco as C
from fapn_core.data import open_dataset
from fapn_core.metrics import coco_evaluate


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco")
    ds = open_dataset("synthetic:n=3,seed=2,size=96x128")
    C.export_dataset(ds, out, instances=True, panoptic=True)
    return ds, out


def test_round_trip_instances_and_panoptic(exported):
    ds, out = exported
    gt = C.read_instances(out / "instances.json")
    assert [im["id"] for im in gt["images"]] == [1, 2, 3]
    assert {c["id"] for c in gt["categories"]} == set(ds.thing_classes)
    s = ds[0]
    masks = [C.decode_mask(a["segmentation"]) for a in gt["annotations"] if a["image_id"] == 1]
    assert masks and all(m.shape == s["label"].shape for m in masks)
    assert all(np.isin(s["label"][m], ds.thing_classes).all() for m in masks)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, "bbox": a["bbox"],
                "segmentation": a["segmentation"]} for a in gt["annotations"]]
    assert coco_evaluate(gt, perfect, "segm").stats["AP"] == pytest.approx(1.0)
    (out / "results.json").write_text(json.dumps(perfect))
    assert len(C.read_results(out / "results.json", gt, need_masks=True)) == len(perfect)
    data, pans = C.read_panoptic(out / "panoptic.json", out / "panoptic")
    ids, segs = pans[1]
    pan, info = C.panoptic_gt(s["label"], s["instances"], ds.thing_classes,
                              [c for c in range(ds.num_classes) if c not in ds.thing_classes])
    assert np.array_equal(ids, pan) and [x["id"] for x in segs] == [x["id"] for x in info]


def test_rle_string_parser_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()
        rle = C.encode_mask(m)
        runs = C._string_counts(rle["counts"], m.size + 1)
        assert sum(runs) == m.size
        assert np.array_equal(C.decode_mask(C.check_rle(rle, *m.shape, "t")), m)


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def _valid():
    m = np.zeros((8, 10), bool)
    m[2:5, 3:7] = True
    return {"images": [{"id": 1, "height": 8, "width": 10, "file_name": "a.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [3, 2, 4, 3], "area": 12,
                             "segmentation": C.encode_mask(m), "iscrowd": 0}],
            "categories": [{"id": 3, "name": "car"}]}


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(images="x"), "'images' must be a list"),
    (lambda d: d["images"][0].update(height="8"), "height"),
    (lambda d: d["images"][0].update(width=10**9), "width"),
    (lambda d: d["annotations"][0].update(image_id=7), "image 7, which does not exist"),
    (lambda d: d["annotations"][0].update(category_id=1), "category 1, which does not exist"),
    (lambda d: d["annotations"][0].update(id=True), "non-negative integer"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotations id 1"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, -1, 2]), "bbox"),
    (lambda d: d["annotations"][0].update(iscrowd=2), "iscrowd"),
    (lambda d: d["annotations"][0]["segmentation"].update(size=[16, 10]), "does not fit its image"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts="zzzzzzzzzzzzzz0"), "RLE"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts=[10, 90]), "sum to 100"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts=[-5, 85]), "RLE"),
    (lambda d: d["annotations"][0]["segmentation"].update(counts=[1] * 100000), "at most h\\*w\\+1"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3]]), "polygon"),
    (lambda d: d["annotations"][0].update(segmentation="__import__('os')"), "segmentation must be"),
    (lambda d: d["annotations"][0].update(area="12"), "area must be"),
])
def test_malformed_instances_get_a_specific_error(tmp_path, mutate, match):
    d = _valid()
    mutate(d)
    p = _write(tmp_path, "bad.json", json.dumps(d, allow_nan=True))
    with pytest.raises(C.CocoFormatError, match=match):
        C.read_instances(p)


def test_empty_unparsable_oversized_files(tmp_path):
    with pytest.raises(C.CocoFormatError, match="empty file"):
        C.read_instances(_write(tmp_path, "e.json", ""))
    with pytest.raises(C.CocoFormatError, match="not valid JSON"):
        C.read_instances(_write(tmp_path, "n.json", "{'images': []"))
    with pytest.raises(C.CocoFormatError, match="not valid JSON"):
        C.read_instances(_write(tmp_path, "nan.json", '{"images": [NaN]}'))
    with pytest.raises(C.CocoFormatError, match="not valid JSON"):
        C.read_instances(_write(tmp_path, "deep.json", "[" * 100000 + "]" * 100000))
    with pytest.raises(C.CocoFormatError, match="more than the limit"):
        C.read_json(_write(tmp_path, "big.json", json.dumps(list(range(1000)))), max_bytes=100)
    with pytest.raises(C.CocoFormatError, match="expected a JSON object"):
        C.read_instances(_write(tmp_path, "l.json", "[]"))
    with pytest.raises(FileNotFoundError):
        C.read_instances(tmp_path / "missing.json")


def test_malformed_results(tmp_path):
    gt = C.check_instances(_valid())
    good = {"image_id": 1, "category_id": 3, "score": 0.5, "bbox": [0, 0, 2, 2]}
    for bad, match in ((dict(good, image_id=2), "image 2"), (dict(good, category_id=4), "category 4"),
                       (dict(good, score="high"), "score"), ({"image_id": 1, "category_id": 3, "score": 1}, "neither"),
                       (dict(good, segmentation={"size": [8, 9], "counts": ""}), "does not fit")):
        with pytest.raises(C.CocoFormatError, match=match):
            C.read_results(_write(tmp_path, "r.json", [bad]), gt)
    with pytest.raises(C.CocoFormatError, match="need RLE masks"):
        C.read_results(_write(tmp_path, "r.json", [good]), gt, need_masks=True)
    with pytest.raises(C.CocoFormatError, match="JSON list"):
        C.read_results(_write(tmp_path, "r.json", {"a": 1}), gt)


def test_panoptic_png_checks(tmp_path, exported):
    ds, out = exported
    data = json.loads((out / "panoptic.json").read_text())
    root = tmp_path / "pan"
    root.mkdir()
    C.write_panoptic_png(root / data["annotations"][0]["file_name"], np.zeros((5, 5), np.int64))
    p = _write(tmp_path, "pan.json", dict(data, annotations=data["annotations"][:1]))
    with pytest.raises(C.CocoFormatError, match="panoptic PNG is 5x5"):
        C.read_panoptic(p, root)
    (root / data["annotations"][0]["file_name"]).write_bytes(b"")
    with pytest.raises(C.CocoFormatError, match="empty panoptic PNG"):
        C.read_panoptic(p, root)
    (root / data["annotations"][0]["file_name"]).write_bytes(b"not a png at all")
    with pytest.raises(C.CocoFormatError, match="not a readable panoptic PNG"):
        C.read_panoptic(p, root)
    evil = dict(data, annotations=[dict(data["annotations"][0], file_name="../../etc/passwd")])
    with pytest.raises(C.CocoFormatError, match="plain file name"):
        C.read_panoptic(_write(tmp_path, "evil.json", evil), root)
    ids = C.read_panoptic_png(out / "panoptic" / data["annotations"][0]["file_name"])
    C.write_panoptic_png(root / data["annotations"][0]["file_name"], ids + (ids > 0) * 500)
    with pytest.raises(C.CocoFormatError, match="not in segments_info"):
        C.read_panoptic(p, root)
