"""COCO panoptic files read back as a dataset: labels, instances and thing classes round-trip; bad files say so."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fapn_core.data import open_dataset
from fapn_core.data.coco import CocoFormatError, export_dataset
from fapn_core.data.instances import objects_from_maps
from fapn_core.train import DetectionClasses


@pytest.fixture()
def coco_root(tmp_path):
    src = open_dataset("synthetic:n=3,seed=5,size=64x128")
    export_dataset(src, tmp_path / "annotations", instances=False, panoptic=True)
    (tmp_path / "annotations" / "panoptic.json").rename(tmp_path / "annotations" / "panoptic_val2017.json")
    (tmp_path / "annotations" / "panoptic").rename(tmp_path / "annotations" / "panoptic_val2017")
    (tmp_path / "val2017").mkdir()
    for i in range(len(src)):
        s = src[i]
        Image.fromarray(s["image"]).save(tmp_path / "val2017" / f"{s['name']}.png")
    return tmp_path, src


def test_round_trip_labels_instances_and_things(coco_root):
    root, src = coco_root
    ds = open_dataset(f"coco-panoptic:{root}")
    assert len(ds) == 3 and ds.class_names == src.class_names and ds.thing_classes == (5, 7, 8, 9)
    assert DetectionClasses.of(ds).things == (5, 7, 8, 9)
    for i in range(3):
        a, b = src[i], ds[i]
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
        oa = objects_from_maps(a["label"], a["instances"], src.thing_classes)
        ob = objects_from_maps(b["label"], b["instances"], ds.thing_classes)
        assert len(oa) == len(ob) > 0
        np.testing.assert_array_equal(oa.masks, ob.masks)
        np.testing.assert_array_equal(oa.classes, ob.classes)


def test_bad_files_get_specific_errors(coco_root, tmp_path):
    root, _ = coco_root
    jp = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(jp.read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 999
    jp.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match="category 999, which does not exist"):
        open_dataset(f"coco-panoptic:{root}")
    data["annotations"][0]["segments_info"][0]["category_id"] = 5
    data["annotations"][0]["file_name"] = "../../etc/passwd"
    jp.write_text(json.dumps(data))
    with pytest.raises(CocoFormatError, match="plain file name"):
        open_dataset(f"coco-panoptic:{root}")
    with pytest.raises(FileNotFoundError, match="panoptic_val2017.json"):
        open_dataset(f"coco-panoptic:{tmp_path / 'nowhere'}")
