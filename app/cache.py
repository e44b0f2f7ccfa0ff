"""Every cached computation of the app, in one place: what is cached, keyed by what, shared or per copy.

| cache | key | kind |
|---|---|---|
| model handles (``app.models._load_handle``) | checkpoint content / file key × device | shared resource, read-only |
| :func:`predict_cached`: one inference with captures | model key × image key × AMP | shared resource, read-only |
| :func:`alignment_cached`: one FAM level's alignment | model × image × AMP × level × radius × GT key | shared resource |
| :func:`compare_cached`: label-map comparison with GT | model keys × image × GT key × class space | data (a copy each) |
| :func:`results_cached`: detections as COCO results | model × image × AMP × category ids | data |
| :func:`gt_annotations_cached`: GT objects from PNGs, id = instance id | GT × instances × thing classes | data |
| :func:`detection_compare_cached`: COCO matching A/B | model keys × image × AMP × GT key × categories | data |
| :func:`agreement_cached`: objects only A / only B find | model keys × image × AMP × score threshold | data |
| :func:`query_borders_cached`: MaskFormer segments A vs B | model keys × image × AMP | data |
| :func:`refinements_cached`: PointRend refinements of objects | model × image × AMP × objects | data |
| :func:`peak_match_cached`: PanopticFCN peaks only A / only B keeps | model keys × image × AMP × tolerance | data |
| :func:`samples`, :func:`read_sample`: the gallery | sample name | data |
| :func:`decode_upload`, :func:`decode_coco`: uploads | upload bytes (× limits / image size) | data |

Arguments with a leading underscore are not hashed: the keys before them stand for them. Resources are shared by
every session, so treat them as read-only; hooked forwards hold the model's lock. A new cached computation adds
one function here and one row above.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import numpy as np

import streamlit as st
from app.models import ModelHandle
from fapn_core.checkpoints import assets_dir
from fapn_core.introspect import Prediction, predict_with_captures
from fapn_core.io import decode_image, decode_instances, decode_label, read_image_file
from fapn_core.metrics import compare
from fapn_core.metrics import detection_pair as dp
from fapn_core.models.rcnn.panoptic import panoptic_to_labels

CAPTURE = ("offsets", "attention", "fsm_inputs", "fam_features", "features", "queries", "positions")

# ----------------------------------------------------------------------------------------- inference cache
_COMPUTED: dict[str, int] = {}
_COMPUTED_LOCK = threading.Lock()


@st.cache_resource(max_entries=24, show_spinner=False)
def predict_cached(handle_key: str, image_key: str, amp: bool, _handle: ModelHandle, _image: np.ndarray) -> Prediction:
    """One inference of one model on one image, with FAM/FSM captures (shared; treat as read-only)."""
    with _handle.lock:
        pred = predict_with_captures(_handle.model, _image, CAPTURE, amp=amp)
    if pred.detections is not None and pred.detections.panoptic_seg is not None:
        # a Panoptic FPN is shown as a label map in the dataset's classes (things from its instances)
        det = pred.detections
        labels = panoptic_to_labels(det.panoptic_seg, det.segments_info, det.sem_seg.argmax(0),
                                    _handle.card["thing_category_ids"], _handle.card["stuff_category_ids"])
        pred = dataclasses.replace(pred, labels=labels.numpy().astype(np.uint8 if int(labels.max()) < 256 else np.int64))
    with _COMPUTED_LOCK:
        _COMPUTED[f"{handle_key}|{image_key}|{amp}"] = _COMPUTED.get(f"{handle_key}|{image_key}|{amp}", 0) + 1
    return pred


def inference_count(handle_key: str, image_key: str, amp: bool) -> int:
    """How often this (model, image) inference actually ran in this server process (1 = computed once)."""
    return _COMPUTED.get(f"{handle_key}|{image_key}|{amp}", 0)


@st.cache_resource(max_entries=32, show_spinner=False)
def alignment_cached(handle_key: str, image_key: str, amp: bool, level: str, radius: int, gt_key: str,
                     _fam, _gt: np.ndarray | None):
    """``fapn_core.alignment.align_level`` of one captured FAM level (shared; read-only)."""
    from fapn_core.alignment import align_level

    return align_level(_fam, gt=_gt, radius=radius)


# ------------------------------------------------------------------------------------------ label maps
@st.cache_data(max_entries=16, show_spinner=False)
def compare_cached(key_a: str, key_b: str, image_key: str, gt_key: str, num_classes: int,
                   class_names: tuple[str, ...], thing_classes: tuple[int, ...] | None,
                   avg_instance_size: tuple | None, allow_void: bool, _gt: np.ndarray, _pa: np.ndarray,
                   _pb: np.ndarray, _instances: np.ndarray | None):
    # allow_void: a Panoptic FPN leaves "thing" pixels that no instance covers void (255), counted as misses
    return compare(_gt, _pa, _pb, num_classes, instances=_instances, class_names=list(class_names),
                   thing_classes=None if thing_classes is None else list(thing_classes),
                   avg_instance_size=None if avg_instance_size is None else dict(avg_instance_size),
                   allow_void=allow_void)


# ----------------------------------------------------------------------------------------------- objects
@st.cache_data(max_entries=48, show_spinner=False)
def results_cached(handle_key: str, image_key: str, amp: bool, category_ids: tuple[int, ...], _det):
    from fapn_core.data.coco import detection_results

    cats = np.asarray(category_ids, np.int64)[_det.classes.numpy()] if len(_det) else np.zeros(0, np.int64)
    masks = _det.masks.numpy() if _det.masks is not None else None
    return detection_results(_det.boxes.numpy(), _det.scores.numpy(), cats, image_id=1, masks=masks)


@st.cache_data(max_entries=16, show_spinner=False)
def gt_annotations_cached(gt_key: str, inst_key: str, things: tuple[int, ...], _gt: np.ndarray,
                          _inst: np.ndarray) -> list[dict[str, Any]]:
    # ids = instance ids: an object has the same id in the detector and the label-map object tables
    return dp.annotations_from_maps(_gt, _inst, list(things))


@st.cache_data(max_entries=16, show_spinner=False)
def detection_compare_cached(key_a: str, key_b: str, image_key: str, amp: bool, gt_key: str, cats_json: str,
                             _gt, _ra, _rb, image_hw: tuple[int, int]):
    return dp.compare_detections(_gt, _ra, _rb, json.loads(cats_json), image_hw)


@st.cache_data(max_entries=32, show_spinner=False)
def agreement_cached(key_a: str, key_b: str, image_key: str, amp: bool, score_thresh: float, _ra, _rb):
    return dp.agree_detections(_ra, _rb, score_thresh=score_thresh)


@st.cache_data(max_entries=16, show_spinner=False)
def query_borders_cached(key_a: str, key_b: str, image_key: str, amp: bool, _qa, _qb, _image: np.ndarray):
    """Where two MaskFormers' query segments end differently (``fapn_core.viz.queries.border_comparison``)."""
    from fapn_core.viz.queries import border_comparison

    return border_comparison(_image, _qa, _qb)


@st.cache_data(max_entries=32, show_spinner=False)
def peak_match_cached(key_a: str, key_b: str, image_key: str, amp: bool, cells: float, _maps_a, _maps_b):
    """Two PanopticFCNs' kept peaks matched (``fapn_core.viz.positions.match_peaks``, all levels)."""
    from fapn_core.viz.positions import kept_peaks, match_peaks

    return match_peaks(kept_peaks(_maps_a), kept_peaks(_maps_b), cells=cells)


@st.cache_data(max_entries=16, show_spinner=False)
def refinements_cached(handle_key: str, image_key: str, amp: bool, indices: tuple[int, ...], _det):
    """``fapn_core.viz.points.refinements`` of these objects of one PointRend result (their crops by default)."""
    from fapn_core.viz.points import refinements

    return refinements(_det, list(indices))


# ------------------------------------------------------------------------------------------------ images
@st.cache_data(show_spinner=False)
def samples() -> list[dict[str, Any]]:
    """The sample gallery's entries (``assets/samples/samples.json``)."""
    path = assets_dir() / "samples" / "samples.json"
    return json.loads(path.read_text()) if path.is_file() else []


@st.cache_data(max_entries=32, show_spinner=False)
def read_sample(name: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A gallery sample's image, label map and instance map (None where it has none)."""
    entry = next(e for e in samples() if e["name"] == name)
    folder = assets_dir() / "samples"
    image = read_image_file(folder / entry["image"]).rgb
    label = inst = None
    if entry.get("label"):
        label = decode_label((folder / entry["label"]).read_bytes(), expected_hw=image.shape[:2])
    if entry.get("instances"):
        inst = decode_instances((folder / entry["instances"]).read_bytes(), expected_hw=image.shape[:2])
    return image, label, inst


@st.cache_data(max_entries=16, show_spinner=False)
def decode_upload(data: bytes, max_pixels: int):
    return decode_image(data, max_pixels=max_pixels)


@st.cache_data(max_entries=8, show_spinner=False)
def decode_coco(raw: bytes, src: str, image_name: str, image_hw: tuple[int, int]):
    """One image's ground-truth objects from an uploaded COCO instances JSON."""
    data = dp.parse_json_bytes(raw, src)
    return dp.image_ground_truth(data, image_hw, image_name, src=src)
