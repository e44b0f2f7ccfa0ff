"""Synthetic street benchmark: determinism, format, class coverage, thin / small geometry, instances."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fapn_core.data import synthetic as syn
from fapn_core.data.datasets import FolderDataset, SyntheticDataset
from fapn_core.data.synthetic import (
    CLASS_NAMES, SMALL_CLASSES, SMALL_RANGE, THIN_CLASSES, THIN_MAX, THING_CLASSES, make_sample, write_synthetic,
)

N_SAMPLES = 12


@pytest.fixture(scope="module")
def samples() -> list[syn.SyntheticSample]:
    return [make_sample(i, seed=0) for i in range(N_SAMPLES)]


def test_metadata() -> None:
    assert CLASS_NAMES == ("road", "sidewalk", "building", "vegetation", "sky", "pole", "fence",
                           "traffic sign", "person", "car")
    assert syn.PALETTE.shape == (10, 3) and syn.PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in syn.PALETTE.tolist()}) == 10
    assert THING_CLASSES == (5, 7, 8, 9)
    assert set(THIN_CLASSES) | set(SMALL_CLASSES) <= set(range(10))


def test_deterministic_per_seed_and_index() -> None:
    a, b = make_sample(3, seed=7), make_sample(3, seed=7)
    for f in ("image", "label", "instances"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    make_sample(5, seed=7)  # generation order must not matter
    c = make_sample(3, seed=7)
    assert np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, make_sample(3, seed=8).image)
    assert not np.array_equal(a.label, make_sample(4, seed=7).label)


@pytest.mark.parametrize("size", [(256, 512), (96, 200)])
def test_shapes_and_dtypes(size: tuple[int, int]) -> None:
    s = make_sample(1, size=size)
    assert s.image.shape == (*size, 3) and s.image.dtype == np.uint8
    assert s.label.shape == size and s.label.dtype == np.uint8
    assert s.instances.shape == size and s.instances.dtype == np.int32
    assert set(np.unique(s.label).tolist()) <= set(range(10)) | {255}


def test_every_class_appears(samples) -> None:
    seen = set()
    for s in samples:
        seen |= set(np.unique(s.label).tolist())
    assert set(range(10)) <= seen


def test_ignore_is_rare(samples) -> None:
    frac = np.mean([np.mean(s.label == 255) for s in samples])
    assert frac < 0.005


def test_thin_structures_are_1_to_4_px_wide(samples) -> None:
    k = np.ones((THIN_MAX + 1, THIN_MAX + 1), np.uint8)
    widths = []
    for s in samples:
        for c in THIN_CLASSES:
            m = np.pad((s.label == c).astype(np.uint8), THIN_MAX + 1)  # zero border: OpenCV pads erosion with 1s
            # no (THIN_MAX+1)^2 block fits anywhere: every part is at most THIN_MAX px thick
            assert not cv2.morphologyEx(m, cv2.MORPH_OPEN, k).any(), (c, "wider than 4 px")
        for iid in np.unique(s.instances[s.label == 5]):  # pole shafts: horizontal run length per row
            rows = (s.instances == iid).sum(1)
            rows = rows[rows > 0]
            if rows.size >= 5:
                widths.append(int(np.median(rows)))
    assert widths and min(widths) >= 1 and max(widths) <= THIN_MAX
    assert {1, 2} <= set(widths), "far poles should be 1-2 px wide"


def test_small_objects_are_4_to_24_px(samples) -> None:
    sizes = {c: [] for c in SMALL_CLASSES}
    for s in samples:
        for iid in np.unique(s.instances):
            if iid == 0:
                continue
            m = s.instances == iid
            c = int(s.label[m][0])
            if c in SMALL_CLASSES:
                ys, xs = np.nonzero(m)
                sizes[c].append(max(np.ptp(ys), np.ptp(xs)) + 1)
    for c, v in sizes.items():
        assert len(v) >= 5, CLASS_NAMES[c]
        assert SMALL_RANGE[0] <= min(v) and max(v) <= SMALL_RANGE[1], (CLASS_NAMES[c], min(v), max(v))


def test_instances_consistent_with_labels(samples) -> None:
    for s in samples:
        thing = np.isin(s.label, THING_CLASSES)
        assert (s.instances[thing] > 0).all()
        assert (s.instances[~thing] == 0).all()
        ids = s.instances[thing]
        cls = s.label[thing].astype(np.int64)
        pairs = np.unique(np.stack([ids, cls], 1), axis=0)
        assert len(pairs) == len(np.unique(ids)), "an instance spans more than one class"


def test_colour_alone_does_not_decide() -> None:
    """A per-pixel colour-histogram classifier stays far from solving the benchmark."""
    def feats(img):
        q = (img // 32).astype(np.int64)
        return (q[..., 0] * 8 + q[..., 1]) * 8 + q[..., 2]

    hist = np.full((512, 10), 1e-3)
    for i in range(100, 106):
        s = make_sample(i, size=(128, 256))
        m = s.label < 10
        np.add.at(hist, (feats(s.image)[m], s.label[m].astype(np.int64)), 1)
    pred = hist.argmax(1)
    conf = np.zeros((10, 10), np.int64)
    for i in range(3):
        s = make_sample(i, size=(128, 256))
        m = s.label < 10
        conf += np.bincount(s.label[m].astype(np.int64) * 10 + pred[feats(s.image)[m]], minlength=100).reshape(10, 10)
    iou = np.diag(conf) / np.maximum(conf.sum(0) + conf.sum(1) - np.diag(conf), 1)
    assert iou.mean() < 0.35


def test_dataset_on_the_fly() -> None:
    ds = SyntheticDataset(4, seed=2, size=(64, 128))
    assert len(ds) == 4 and ds.num_classes == 10 and ds.ignore_index == 255
    d = ds[1]
    assert set(d) == {"image", "label", "instances", "name"}
    assert d["image"].dtype == np.uint8 and d["label"].dtype == np.int64 and d["instances"].dtype == np.int32
    s = make_sample(1, seed=2, size=(64, 128))
    assert np.array_equal(d["image"], s.image) and np.array_equal(d["label"], s.label)
    assert ds[-1]["name"] == ds[3]["name"] != d["name"]
    with pytest.raises(IndexError):
        ds[4]
    t = SyntheticDataset(2, seed=2, size=(64, 128), transform=lambda x: x["label"].shape)
    assert t[0] == (64, 128)
    import fapn_core.data as data

    assert data.SyntheticDataset is SyntheticDataset  # the package's lazy face (synthetic.py itself has no torch)


def test_write_synthetic_roundtrip(tmp_path) -> None:
    root = write_synthetic(tmp_path / "syn", n=3, seed=4, size=(64, 128), split_name="val", progress=False)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES) and meta["palette"] == syn.PALETTE.tolist()
    assert (meta["seed"], meta["size"], meta["n"], meta["split"]) == (4, [64, 128], 3, "val")
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"val_{i:06d}.png" for i in range(3)]
    ds = FolderDataset(root)
    assert len(ds) == 3 and ds.class_names == CLASS_NAMES and np.array_equal(ds.palette, syn.PALETTE)
    for i in range(3):
        s, d = make_sample(i, seed=4, size=(64, 128)), ds[i]
        assert d["name"] == f"val_{i:06d}"
        assert np.array_equal(d["image"], s.image)
        assert np.array_equal(d["label"], s.label.astype(np.int64))
        assert np.array_equal(d["instances"], s.instances)
