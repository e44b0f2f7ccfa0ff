"""Folder / Cityscapes / ADE20K readers, open_dataset specs, palettes and error messages."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fapn_core.data import (
    ADE20K_CLASSES, ADE20K_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, SYNTHETIC_PALETTE, colorize,
)
from fapn_core.data.ade20k import ADE20KDataset
from fapn_core.data.cityscapes import (
    LABEL_ID_TO_TRAIN_ID, THING_CLASSES, CityscapesDataset, cityscapes_card_fields, official_instances,
    prediction_label_ids_to_train_ids, train_ids_to_label_ids,
)
from fapn_core.data.datasets import FolderDataset, SyntheticDataset
from fapn_core.data.palettes import generic_palette
from fapn_core.data.predictions import match_files
from fapn_core.data.registry import open_dataset

H, W = 6, 8


def _img(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _save_ids(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), ids)


def _grid(values: list[int], dtype=np.uint8) -> np.ndarray:
    """H x W map whose first len(values) pixels are ``values`` and the rest repeat the last one."""
    flat = np.full(H * W, values[-1], dtype)
    flat[: len(values)] = values
    return flat.reshape(H, W)


# --------------------------------------------------------------------------- folder
def _folder(tmp_path: Path, meta: bool = True) -> Path:
    root = tmp_path / "ds"
    _save_rgb(root / "images" / "a.png", _img(0))
    _save_rgb(root / "images" / "b.jpg", _img(1))
    _save_ids(root / "labels" / "a.png", _grid([0, 1, 2, 255]))
    _save_ids(root / "labels" / "b.png", _grid([2, 2, 1]))
    _save_ids(root / "instances" / "a.png", _grid([0, 300, 300, 0], np.uint16))
    if meta:
        (root / "dataset.json").write_text(json.dumps({"class_names": ["x", "y", "z"],
                                                       "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}))
    return root


def test_folder_reads_images_labels_instances(tmp_path) -> None:
    ds = FolderDataset(_folder(tmp_path))
    assert len(ds) == 2 and ds.class_names == ("x", "y", "z") and ds.num_classes == 3 and ds.ignore_index == 255
    assert ds.palette.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    a, b = ds[0], ds[1]
    assert a["name"] == "a" and b["name"] == "b"
    assert np.array_equal(a["image"], _img(0)) and a["image"].dtype == np.uint8
    assert b["image"].shape == (H, W, 3)  # jpg: lossy, check shape only
    assert a["label"].dtype == np.int64 and a["label"].ravel()[:4].tolist() == [0, 1, 2, 255]
    assert a["instances"].dtype == np.int32 and a["instances"].ravel()[:4].tolist() == [0, 300, 300, 0]
    assert not b["instances"].any()  # no instance file -> zeros


def test_folder_without_metadata_infers_classes(tmp_path) -> None:
    ds = FolderDataset(_folder(tmp_path, meta=False))
    assert ds.class_names == ("class_0", "class_1", "class_2")
    assert ds.palette.shape == (3, 3)
    assert FolderDataset(_folder(tmp_path, meta=False), num_classes=5).num_classes == 5


def test_folder_labels_optional_only_when_asked(tmp_path) -> None:
    root = _folder(tmp_path)
    (root / "labels" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing label file .*labels/b\.png for image .*images/b\.jpg"):
        FolderDataset(root)
    ds = FolderDataset(root, require_labels=False)
    assert (ds[1]["label"] == 255).all() and ds[1]["label"].shape == (H, W)


def test_folder_wrong_layout(tmp_path) -> None:
    (tmp_path / "pics").mkdir()
    with pytest.raises(FileNotFoundError, match=r"images is not a folder: expected <root>/images/.*found in .*: pics/"):
        FolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no image files in .*images .*found: notes\.txt"):
        FolderDataset(tmp_path)


def test_folder_label_values_outside_classes(tmp_path) -> None:
    root = _folder(tmp_path)
    _save_ids(root / "labels" / "b.png", _grid([2, 7, 9, 1]))
    ds = FolderDataset(root)
    ds[0]
    with pytest.raises(ValueError, match=r"label file .*labels/b\.png has values \[7, 9\] outside the 3 classes"):
        ds[1]


def test_folder_unreadable_image(tmp_path) -> None:
    root = _folder(tmp_path)
    (root / "images" / "b.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match=r"unreadable image: .*images/b\.jpg"):
        FolderDataset(root)[1]


def test_folder_rgb_label_and_size_mismatch(tmp_path) -> None:
    root = _folder(tmp_path)
    _save_rgb(root / "labels" / "a.png", _img(3))
    with pytest.raises(ValueError, match=r"labels/a\.png has mode 'RGB': expected a single-channel PNG"):
        FolderDataset(root)[0]
    _save_ids(root / "labels" / "a.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match=r"size mismatch: image .*a\.png is 8x6 but .*labels/a\.png is 8x7"):
        FolderDataset(root)[0]


def test_folder_palette_png_labels(tmp_path) -> None:
    root = _folder(tmp_path)
    im = Image.fromarray(_grid([1, 0, 2]), mode="P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.save(root / "labels" / "a.png")
    assert FolderDataset(root)[0]["label"].ravel()[:3].tolist() == [1, 0, 2]


# --------------------------------------------------------------------------- cityscapes
def _cityscapes(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    img = root / "leftImg8bit" / "val" / "aachen"
    gt = root / "gtFine" / "val" / "aachen"
    # labelIds: road, sidewalk, car, unlabeled, person, bicycle, caravan(ignored), sky
    _save_rgb(img / "aachen_000000_000019_leftImg8bit.png", _img(0))
    _save_ids(gt / "aachen_000000_000019_gtFine_labelIds.png", _grid([7, 8, 26, 0, 24, 33, 29, 23]))
    _save_ids(gt / "aachen_000000_000019_gtFine_instanceIds.png",
              _grid([7, 8, 26001, 0, 24000, 33002, 29001, 23], np.uint16))
    _save_rgb(img / "aachen_000001_000019_leftImg8bit.png", _img(1))
    _save_ids(gt / "aachen_000001_000019_gtFine_labelIds.png", _grid([7]))
    _save_ids(gt / "aachen_000001_000019_gtFine_labelTrainIds.png", _grid([18, 255, 5]))
    _save_rgb(root / "leftImg8bit" / "val" / "bonn" / "bonn_000000_000019_leftImg8bit.png", _img(2))
    _save_ids(root / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelIds.png", _grid([21]))
    return root


def test_cityscapes_train_ids_and_instances(tmp_path) -> None:
    ds = CityscapesDataset(_cityscapes(tmp_path), "val")
    assert len(ds) == 3 and ds.num_classes == 19 and ds.class_names == CITYSCAPES_CLASSES
    a = ds[0]
    assert a["name"] == "aachen_000000_000019"
    assert np.array_equal(a["image"], _img(0))
    assert a["label"].ravel()[:8].tolist() == [0, 1, 13, 255, 11, 18, 255, 10]
    assert a["instances"].ravel()[:8].tolist() == [0, 0, 26001, 0, 24000, 33002, 0, 0]
    assert ds[1]["label"].ravel()[:3].tolist() == [18, 255, 5]  # labelTrainIds file preferred
    assert (ds[2]["label"] == 8).all() and ds[2]["name"] == "bonn_000000_000019"


def test_cityscapes_errors(tmp_path) -> None:
    root = _cityscapes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"expected .*leftImg8bit/train/<city>/\*_leftImg8bit\.png.*found in"):
        CityscapesDataset(root, "train")
    _save_ids(root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png", _grid([21, 40, 99]))
    with pytest.raises(ValueError, match=r"bonn_000000_000019_gtFine_labelIds\.png has values \[40, 99\] that are not"):
        CityscapesDataset(root, "val")[2]
    (root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing label file .*bonn_000000_000019_gtFine_labelIds\.png"):
        CityscapesDataset(root, "val")


def test_cityscapes_evaluation_conventions_are_the_official_scripts(tmp_path) -> None:
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    ds = CityscapesDataset(_cityscapes(tmp_path), "val")
    official_ids = {lab.id: lab.trainId for lab in labels.labels if 0 <= lab.trainId < 255}
    assert LABEL_ID_TO_TRAIN_ID == official_ids
    things = sorted(lab.trainId for lab in labels.labels if lab.hasInstances and not lab.ignoreInEval)
    assert ds.thing_classes == THING_CLASSES == tuple(things)
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")  # np.in1d: only at run
    assert dict(ds.avg_instance_size) == ev.args.avgClassSize
    card = cityscapes_card_fields()
    assert card["thing_classes"] == list(things) and card["avg_instance_size"] == ev.args.avgClassSize
    assert card["classes"] == list(CITYSCAPES_CLASSES) and card["palette"] == CITYSCAPES_PALETTE.tolist()
    assert [ds.sample_name(i) for i in range(3)] == [ds[i]["name"] for i in range(3)]


def test_cityscapes_instances_and_prediction_ids() -> None:
    # group regions (id = labelId < 1000, e.g. 26 = cars) and stuff ids are not instances
    raw = np.array([[26, 26001, 7, 24000, 999, 0]])
    assert official_instances(raw).tolist() == [[0, 26001, 0, 24000, 0, 0]]
    lab = np.array([[7, 26, 0, 29, 33, 9]])
    assert prediction_label_ids_to_train_ids(lab).tolist() == [[0, 13, 255, 255, 18, 255]]  # void ids -> void
    with pytest.raises(ValueError, match=r"p\.png has values \[34, 255\] that are not Cityscapes labelIds"):
        prediction_label_ids_to_train_ids(np.array([[7, 34, 255]]), "p.png")
    train = np.arange(19)[None]
    back = prediction_label_ids_to_train_ids(train_ids_to_label_ids(train).astype(np.int64))
    assert back.tolist() == train.tolist() and train_ids_to_label_ids(np.array([[255]])).tolist() == [[0]]
    with pytest.raises(ValueError, match=r"\[19\] are not Cityscapes trainIds"):
        train_ids_to_label_ids(np.array([[19]]))


def test_folder_thing_classes_and_instance_sizes_from_metadata(tmp_path) -> None:
    root = _folder(tmp_path)
    assert FolderDataset(root).thing_classes is None and FolderDataset(root).avg_instance_size is None
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "thing_classes": [2, 1],
                                                   "avg_instance_size": {"y": 40, "2": 12.5}}))
    ds = FolderDataset(root)
    assert ds.thing_classes == (1, 2) and ds.avg_instance_size == {"y": 40.0, 2: 12.5}
    for bad, what in (({"thing_classes": [3]}, "thing_classes must be a list of class ids 0..2"),
                      ({"thing_classes": "1"}, "thing_classes must be"),
                      ({"avg_instance_size": {"q": 3}}, "avg_instance_size must map class names"),
                      ({"avg_instance_size": {"y": -1}}, "avg_instance_size must map")):
        (root / "dataset.json").write_text(json.dumps({**meta, **bad}))
        with pytest.raises(ValueError, match=what):
            FolderDataset(root)


def test_synthetic_folder_keeps_its_thing_classes(tmp_path) -> None:
    from fapn_core.data.synthetic import THING_CLASSES as SYN_THINGS, write_synthetic

    root = write_synthetic(tmp_path / "syn", 2, seed=3, size=(32, 64), progress=False)
    ds = FolderDataset(root)
    assert ds.thing_classes == tuple(SYN_THINGS) and ds.avg_instance_size is None
    assert [ds.sample_name(i) for i in range(2)] == [ds[i]["name"] for i in range(2)]
    syn = SyntheticDataset(2, seed=3, size=(32, 64))
    assert syn.sample_name(1) == syn[1]["name"]


def test_prediction_files_match_the_longest_sample_name(tmp_path) -> None:
    names = ["a", "a_1", "city_000000_000019"]
    files = [tmp_path / f for f in ("a.png", "a_1.png", "a_pred.png", "a_1_pred.png", "b.png",
                                    "city_000000_000019_leftImg8bit.png", "city_000000_0000190.png")]
    assigned, extra = match_files(names, files)
    assert {i: [f.name for f in fs] for i, fs in assigned.items()} == {
        0: ["a.png", "a_pred.png"], 1: ["a_1.png", "a_1_pred.png"], 2: ["city_000000_000019_leftImg8bit.png"]}
    assert [f.name for f in extra] == ["b.png", "city_000000_0000190.png"]


# --------------------------------------------------------------------------- ade20k
def _ade(tmp_path: Path) -> Path:
    base = tmp_path / "ade" / "ADEChallengeData2016"
    for split, stem in (("validation", "ADE_val_00000001"), ("training", "ADE_train_00000001")):
        _save_rgb(base / "images" / split / f"{stem}.jpg", _img(5))
        _save_ids(base / "annotations" / split / f"{stem}.png", _grid([0, 1, 150, 13, 7]))
    return tmp_path / "ade"


def test_ade20k_reduce_zero_label(tmp_path) -> None:
    root = _ade(tmp_path)
    ds = ADE20KDataset(root, "validation")
    assert len(ds) == 1 and ds.num_classes == 150 and ds.class_names[:3] == ("wall", "building", "sky")
    d = ds[0]
    assert d["name"] == "ADE_val_00000001" and d["image"].shape == (H, W, 3)
    assert d["label"].ravel()[:5].tolist() == [255, 0, 149, 12, 6]
    assert not d["instances"].any()
    assert ADE20KDataset(root / "ADEChallengeData2016", "train")[0]["name"] == "ADE_train_00000001"


def test_ade20k_errors(tmp_path) -> None:
    root = _ade(tmp_path)
    lab = root / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png"
    _save_ids(lab, _grid([0, 151, 200]))
    with pytest.raises(ValueError, match=r"ADE_val_00000001\.png has values \[151, 200\] outside the ADE20K ids"):
        ADE20KDataset(root, "val")[0]
    lab.unlink()
    with pytest.raises(FileNotFoundError, match=r"missing label file .*annotations/validation/ADE_val_00000001\.png"):
        ADE20KDataset(root, "val")
    with pytest.raises(FileNotFoundError, match=r"ADE20K images not found .*expected ADEChallengeData2016/images"):
        ADE20KDataset(tmp_path / "elsewhere", "val")
    with pytest.raises(ValueError, match="unknown ADE20K split 'test'"):
        ADE20KDataset(root, "test")


# --------------------------------------------------------------------------- COCO-Stuff-10K (MaskFormer's layout)
def _coco_stuff(tmp_path: Path) -> Path:
    base = tmp_path / "datasets" / "coco" / "coco_stuff_10k"
    for split, stem in (("test", "COCO_train2014_000000000077"), ("train", "COCO_train2014_000000000009")):
        _save_rgb(base / "images_detectron2" / split / f"{stem}.jpg", _img(3))
        _save_ids(base / "annotations_detectron2" / split / f"{stem}.png", _grid([0, 79, 80, 170, 255]))
    return base


def test_coco_stuff_10k_classes_and_layout(tmp_path) -> None:
    from fapn_core.data import CocoStuff10KDataset, open_dataset

    base = _coco_stuff(tmp_path)
    ds = CocoStuff10KDataset(tmp_path / "datasets")  # detectron2's DETECTRON2_DATASETS folder works too
    assert len(ds) == 1 and ds.num_classes == 171 and ds.palette.shape == (171, 3)
    names = ds.class_names
    assert (names[0], names[79], names[80], names[170]) == ("person", "toothbrush", "banner", "wood")
    d = ds[0]
    assert d["name"] == "COCO_train2014_000000000077" and d["label"].ravel()[:5].tolist() == [0, 79, 80, 170, 255]
    assert open_dataset(f"coco-stuff-10k:{base}:train")[0]["name"] == "COCO_train2014_000000000009"


def test_coco_stuff_10k_errors(tmp_path) -> None:
    from fapn_core.data import CocoStuff10KDataset

    base = _coco_stuff(tmp_path)
    lab = base / "annotations_detectron2/test/COCO_train2014_000000000077.png"
    _save_ids(lab, _grid([0, 171, 254]))
    with pytest.raises(ValueError, match=r"has values \[171, 254\] outside the 171 classes 0\.\.170"):
        CocoStuff10KDataset(base)[0]
    raw = tmp_path / "raw"
    (raw / "annotations").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="raw release .*run the preparation script first"):
        CocoStuff10KDataset(raw)
    with pytest.raises(ValueError, match="unknown COCO-Stuff-10K split 'val'"):
        CocoStuff10KDataset(base, "val")


def test_official_semantic_cards_name_their_classes() -> None:
    """MaskFormer releases: ADE20K-150 (R50, Swin-L) and COCO-Stuff-171 (R101) class names in the converted card."""
    from fapn_core.checkpoints import official_class_fields
    from fapn_core.models.zoo import get_model_config

    ade = official_class_fields(get_model_config("fapn_swinl_maskformer"))
    assert len(ade["classes"]) == 150 and ade["classes"][:2] == ["wall", "building"] and len(ade["palette"]) == 150
    stuff = official_class_fields(get_model_config("fapn_r101_maskformer"))
    assert len(stuff["classes"]) == 171 and stuff["classes"][80] == "banner" and "COCO-Stuff" in stuff["training_data"]
    assert official_class_fields(get_model_config("fpn_r18_maskformer")) == {}  # 10 classes: no release


# --------------------------------------------------------------------------- open_dataset
def test_open_dataset_specs(tmp_path) -> None:
    s = open_dataset("synthetic:n=5,seed=1,size=64x96")
    assert isinstance(s, SyntheticDataset) and len(s) == 5 and s.seed == 1 and s.size == (64, 96)
    assert len(open_dataset("synthetic")) == 200
    assert len(open_dataset(f"folder:{_folder(tmp_path)}")) == 2
    assert len(open_dataset(f"cityscapes:{_cityscapes(tmp_path)}:val")) == 3
    assert len(open_dataset(f"cityscapes:{tmp_path / 'cityscapes'}")) == 3  # default split val
    assert open_dataset(f"ade20k:{_ade(tmp_path)}:training")[0]["name"] == "ADE_train_00000001"
    assert len(open_dataset(f"ade20k:{tmp_path / 'ade'}")) == 1


def test_open_dataset_bad_specs() -> None:
    with pytest.raises(ValueError, match=r"unknown kind 'coco'; expected one of: synthetic.*folder:.*cityscapes:.*ade20k:"):
        open_dataset("coco:/data")
    with pytest.raises(ValueError, match=r"cannot parse 'depth=3'"):
        open_dataset("synthetic:n=3,depth=3")
    with pytest.raises(ValueError, match="missing root path"):
        open_dataset("folder:")


# --------------------------------------------------------------------------- palettes
def test_palettes_and_colorize() -> None:
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_PALETTE.shape == (19, 3)
    assert len(ADE20K_CLASSES) == 150 and ADE20K_PALETTE.shape == (150, 3)
    assert len(set(ADE20K_CLASSES)) == 150
    assert CITYSCAPES_PALETTE[0].tolist() == [128, 64, 128] and ADE20K_PALETTE[149].tolist() == [92, 0, 255]
    lab = np.array([[0, 1], [255, 9]])
    out = colorize(lab, SYNTHETIC_PALETTE, ignore_color=(1, 2, 3))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == SYNTHETIC_PALETTE[0].tolist() and out[1, 1].tolist() == SYNTHETIC_PALETTE[9].tolist()
    assert out[1, 0].tolist() == [1, 2, 3]
    assert colorize(np.array([[-1, 10]]), SYNTHETIC_PALETTE)[0].tolist() == [[0, 0, 0], [0, 0, 0]]
    g = generic_palette(40)
    assert len({tuple(c) for c in g.tolist()}) == 40
