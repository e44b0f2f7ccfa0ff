"""COCO JSON for the lab's ground truth and predictions: instances (RLE), detection results, panoptic PNG + JSON.

Conventions (``docs/metrics.md``, "COCO files"): image ids are 1-based sample indices, annotation ids run from 1,
``category_id`` is the dataset class id. Ground truth from a sample's maps: one annotation per thing object
(:func:`fapn_core.data.instances.objects_from_maps`), plus one ``iscrowd=1`` annotation per thing class for thing
pixels that carry no instance id (Cityscapes group regions). Panoptic ground truth: those objects and crowd
regions as thing segments, one segment per stuff class present, label 255 = void (segment id 0).

Readers validate everything before any of it reaches pycocotools' C code (a run-length string that does not fit
its image would make the decoder write past its buffer): :class:`CocoFormatError` names the file and the entry.
Only ``json`` parses; nothing is unpickled or evaluated.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .instances import objects_from_maps

#: refuse JSON files larger than this (bytes) and images with a side beyond this
MAX_JSON_BYTES = 1 << 30
MAX_SIDE = 1 << 15


class CocoFormatError(ValueError):
    """A COCO JSON file, run-length encoding or panoptic PNG that is malformed or does not fit its images."""


# --------------------------------------------------------------------------- masks
def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of an (H, W) bool mask, ``counts`` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed COCO RLEs of (N, H, W) bool masks (one Fortran-order copy for all)."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=np.uint8)
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    return [{"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """(H, W) bool mask of a validated RLE (see :func:`check_rle`)."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        obj = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        obj = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(obj).astype(bool)


def _string_counts(s: str, limit: int) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), at most ``limit`` runs."""
    out: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated run")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} outside the RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
            if k > 13:
                raise ValueError("run length too long")
        if len(out) > 2:
            x += out[-2]
        out.append(x)
        if len(out) > limit:
            raise ValueError("more runs than pixels")
    return out


def check_rle(rle: Any, h: int, w: int, where: str) -> dict[str, Any]:
    """Validate an RLE dict for an (h, w) image: its size, and run lengths ≥ 0 summing to h·w."""
    if not isinstance(rle, Mapping) or set(rle) - {"size", "counts"} or "size" not in rle or "counts" not in rle:
        raise CocoFormatError(f"{where}: RLE must be {{'size': [h, w], 'counts': ...}}, got {_short(rle)}")
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise CocoFormatError(f"{where}: RLE size must be [height, width], got {_short(size)}")
    if [int(size[0]), int(size[1])] != [h, w]:
        raise CocoFormatError(f"{where}: RLE size {size} does not fit its image ({h}x{w})")
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            runs = _string_counts(counts, h * w + 1)
        except ValueError as e:
            raise CocoFormatError(f"{where}: bad compressed RLE ({e})") from None
    elif isinstance(counts, list):
        if len(counts) > h * w + 1 or not all(_is_int(v) for v in counts):
            raise CocoFormatError(f"{where}: uncompressed RLE counts must be at most h*w+1 integers")
        runs = counts
    else:
        raise CocoFormatError(f"{where}: RLE counts must be a string or a list of integers, got {type(counts).__name__}")
    if any(v < 0 for v in runs) or sum(runs) != h * w:
        raise CocoFormatError(f"{where}: RLE run lengths sum to {sum(runs)} (some negative: {any(v < 0 for v in runs)}),"
                              f" the image has {h * w} pixels")
    return {"size": [h, w], "counts": counts}


# --------------------------------------------------------------------------- ground truth from samples
def categories(class_names: Sequence[str], thing_classes: Sequence[int],
               stuff_classes: Sequence[int] = ()) -> list[dict[str, Any]]:
    """COCO ``categories``: thing classes, then stuff classes (``isthing`` 1/0); id = dataset class id."""
    things = sorted({int(c) for c in thing_classes})
    stuff = sorted({int(c) for c in stuff_classes} - set(things))
    return ([{"id": c, "name": str(class_names[c]), "isthing": 1} for c in things]
            + [{"id": c, "name": str(class_names[c]), "isthing": 0} for c in stuff])


def _box(mask: np.ndarray) -> list[float]:
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0])]


def gt_annotations(label: np.ndarray, instances: np.ndarray, thing_classes: Sequence[int], *,
                   image_id: int, first_id: int = 1) -> list[dict[str, Any]]:
    """COCO instance annotations of one sample: its thing objects, and one crowd region per thing class for thing
    pixels without an instance id. ``area`` is the pixel count, ``bbox`` the mask's pixel-edge box."""
    label, instances = np.asarray(label), np.asarray(instances)
    objs = objects_from_maps(label, instances, thing_classes)
    anns = []
    for k in range(len(objs)):
        x0, y0, x1, y1 = (float(v) for v in objs.boxes[k])
        anns.append({"id": first_id + k, "image_id": int(image_id), "category_id": int(objs.classes[k]),
                     "segmentation": encode_mask(objs.masks[k]), "area": float(objs.areas[k]),
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    for c in sorted({int(c) for c in thing_classes}):
        crowd = (label == c) & (instances <= 0)
        if crowd.any():
            anns.append({"id": first_id + len(anns), "image_id": int(image_id), "category_id": c,
                         "segmentation": encode_mask(crowd), "area": float(crowd.sum()), "bbox": _box(crowd),
                         "iscrowd": 1})
    return anns


def image_entry(image_id: int, height: int, width: int, file_name: str) -> dict[str, Any]:
    return {"id": int(image_id), "height": int(height), "width": int(width), "file_name": str(file_name)}


# --------------------------------------------------------------------------- detections
def detection_results(boxes: np.ndarray, scores: np.ndarray, category_ids: np.ndarray, *, image_id: int,
                      masks: np.ndarray | None = None) -> list[dict[str, Any]]:
    """COCO result entries: ``bbox`` [x, y, w, h] from XYXY boxes, ``score``, and RLE ``segmentation`` with masks."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rles = encode_masks(masks) if masks is not None else None
    out = []
    for i in range(boxes.shape[0]):
        x0, y0, x1, y1 = boxes[i]
        r = {"image_id": int(image_id), "category_id": int(category_ids[i]), "score": float(scores[i]),
             "bbox": [round(float(x0), 3), round(float(y0), 3), round(float(x1 - x0), 3), round(float(y1 - y0), 3)]}
        if rles is not None:
            r["segmentation"] = rles[i]
        out.append(r)
    return out


def category_map(card: Mapping[str, Any], thing_classes: Sequence[int] | None,
                 class_names: Sequence[str] | None = None) -> tuple[list[int], list[int | None]]:
    """(dataset class per ROI class, dataset class per semantic channel) of a detector's card.

    ``thing_category_ids`` / ``stuff_category_ids`` when the card has them; otherwise ROI class i is the dataset's
    i-th thing class and semantic channel j ≥ 1 its j-th non-thing class (channel 0 = all things, ``None``).
    """
    n_things = len(card.get("classes") or [])
    ids = card.get("thing_category_ids")
    things = sorted(int(c) for c in (thing_classes or []))
    if ids is None:
        if len(things) != n_things:
            raise ValueError(f"model {card.get('name')!r} has {n_things} thing classes, the dataset {len(things)}; "
                             "the card needs thing_category_ids")
        ids = things
    thing_map = [int(v) for v in ids]
    stuff_map: list[int | None] = []
    if card.get("task") == "panoptic":
        n_sem = len(card.get("stuff_classes") or [])
        sids = card.get("stuff_category_ids")
        if sids is None:
            if class_names is None:
                raise ValueError("stuff classes need the dataset's class names or the card's stuff_category_ids")
            stuff = [c for c in range(len(class_names)) if c not in set(things)]
            if len(stuff) != n_sem - 1:
                raise ValueError(f"model {card.get('name')!r} has {n_sem - 1} stuff channels, the dataset "
                                 f"{len(stuff)} stuff classes; the card needs stuff_category_ids")
            sids = [None, *stuff]
        stuff_map = [None if v is None else int(v) for v in sids]
    return thing_map, stuff_map


# --------------------------------------------------------------------------- panoptic
def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG (R + 256·G + 256²·B)."""
    rgb = np.asarray(rgb).astype(np.int64)
    return (rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]).astype(np.int64)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB of segment ids (< 256³)."""
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("panoptic segment ids must lie in 0..256^3-1")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def panoptic_gt(label: np.ndarray, instances: np.ndarray, thing_classes: Sequence[int],
                stuff_classes: Sequence[int], ignore_index: int = 255) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Panoptic ground truth of one sample: (H, W) int64 segment ids (0 = void) and ``segments_info``.

    Thing objects (``objects_from_maps``) and per-class crowd regions (``iscrowd=1``: thing pixels without an
    instance id) are thing segments; each stuff class present is one segment; anything else is void.
    """
    label, instances = np.asarray(label), np.asarray(instances)
    pan = np.zeros(label.shape, np.int64)
    info: list[dict[str, Any]] = []
    objs = objects_from_maps(label, instances, thing_classes)

    def add(mask: np.ndarray, cat: int, crowd: int, isthing: int) -> None:
        sid = len(info) + 1
        pan[mask] = sid
        info.append({"id": sid, "category_id": int(cat), "iscrowd": crowd, "isthing": isthing,
                     "area": int(mask.sum()), "bbox": _box(mask)})

    for k in range(len(objs)):
        add(objs.masks[k], int(objs.classes[k]), 0, 1)
    for c in sorted({int(c) for c in thing_classes}):
        crowd = (label == c) & (instances <= 0)
        if crowd.any():
            add(crowd, c, 1, 1)
    for c in sorted({int(c) for c in stuff_classes}):
        m = label == c
        if c != ignore_index and m.any():
            add(m, c, 0, 0)
    return pan, info


def panoptic_prediction(panoptic_seg: np.ndarray, segments_info: Sequence[Mapping[str, Any]],
                        thing_map: Sequence[int], stuff_map: Sequence[int | None]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A detector's panoptic output in dataset classes: ROI class → ``thing_map``, semantic channel → ``stuff_map``."""
    pan = np.asarray(panoptic_seg, np.int64)
    info = []
    for s in segments_info:
        cat = thing_map[int(s["category_id"])] if s["isthing"] else stuff_map[int(s["category_id"])]
        if cat is None:
            raise ValueError(f"segment {s['id']} has the merged 'things' channel as its stuff class")
        info.append({"id": int(s["id"]), "category_id": int(cat), "iscrowd": 0, "isthing": int(bool(s["isthing"]))})
    return pan, info


def write_panoptic_png(path: str | os.PathLike, ids: np.ndarray) -> Path:
    """Write segment ids as a COCO panoptic RGB PNG."""
    import cv2

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), np.ascontiguousarray(id2rgb(ids)[..., ::-1])):
        raise OSError(f"could not write {p}")
    return p


def read_panoptic_png(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG; ``shape`` (H, W) is checked when given."""
    from ._io import read_image

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise CocoFormatError(f"{p}: missing or empty panoptic PNG")
    try:
        rgb = read_image(p)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a format error of this file
        raise CocoFormatError(f"{p}: not a readable panoptic PNG ({e})") from None
    if shape is not None and tuple(rgb.shape[:2]) != tuple(shape):
        raise CocoFormatError(f"{p}: panoptic PNG is {rgb.shape[0]}x{rgb.shape[1]}, its image {shape[0]}x{shape[1]}")
    return rgb2id(rgb)


# --------------------------------------------------------------------------- writers
def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as compact JSON atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.replace(tmp, p)
    return p


def export_dataset(dataset, out_dir: str | os.PathLike, *, instances: bool = True, panoptic: bool = False,
                   limit: int | None = None) -> dict[str, Path]:
    """Write a dataset's ground truth as ``instances.json`` (COCO instances) and/or ``panoptic.json`` + ``panoptic/``
    PNGs (COCO panoptic) under ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    things = sorted(int(c) for c in (dataset.thing_classes or ()))
    names = list(dataset.class_names)
    stuff = [c for c in range(len(names)) if c not in set(things)]
    imgs, anns, pans = [], [], []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        s = dataset[i]
        h, w = s["label"].shape
        name = str(s["name"])
        imgs.append(image_entry(i + 1, h, w, f"{name}.png"))
        if instances:
            anns += gt_annotations(s["label"], s["instances"], things, image_id=i + 1, first_id=len(anns) + 1)
        if panoptic:
            pan, info = panoptic_gt(s["label"], s["instances"], things, stuff, dataset.ignore_index)
            write_panoptic_png(out / "panoptic" / f"{name}.png", pan)
            pans.append({"image_id": i + 1, "file_name": f"{name}.png", "segments_info": info})
    written = {}
    if instances:
        written["instances"] = write_json(out / "instances.json", {
            "images": imgs, "annotations": anns, "categories": categories(names, things)})
    if panoptic:
        written["panoptic"] = write_json(out / "panoptic.json", {
            "images": imgs, "annotations": pans, "categories": categories(names, things, stuff)})
    return written


# --------------------------------------------------------------------------- readers (validated)
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def read_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file with a size limit; empty, oversized or unparsable files raise :class:`CocoFormatError`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"COCO file not found: {p}")
    size = p.stat().st_size
    if size == 0:
        raise CocoFormatError(f"{p}: empty file")
    if size > max_bytes:
        raise CocoFormatError(f"{p}: {size} bytes, more than the limit of {max_bytes}")
    try:
        return json.loads(p.read_bytes(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CocoFormatError(f"{p}: not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None


def _list_of_dicts(data: Mapping[str, Any], key: str, src: str) -> list[dict[str, Any]]:
    v = data.get(key)
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise CocoFormatError(f"{src}: '{key}' must be a list of objects, got {type(v).__name__}")
    return v


def _unique_int_ids(items: list[dict[str, Any]], what: str, src: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for k, it in enumerate(items):
        i = it.get("id")
        if not _is_int(i) or i < 0:
            raise CocoFormatError(f"{src}: {what}[{k}] has id {_short(i)}, expected a non-negative integer")
        if i in out:
            raise CocoFormatError(f"{src}: duplicate {what} id {i}")
        out[i] = it
    return out


def _check_images(data: Mapping[str, Any], src: str) -> dict[int, dict[str, Any]]:
    imgs = _unique_int_ids(_list_of_dicts(data, "images", src), "images", src)
    for i, im in imgs.items():
        for k in ("height", "width"):
            v = im.get(k)
            if not _is_int(v) or not 1 <= v <= MAX_SIDE:
                raise CocoFormatError(f"{src}: image {i} has {k} {_short(v)}, expected an integer 1..{MAX_SIDE}")
        if "file_name" in im and not isinstance(im["file_name"], str):
            raise CocoFormatError(f"{src}: image {i} has a non-string file_name")
    return imgs


def _check_categories(data: Mapping[str, Any], src: str) -> dict[int, dict[str, Any]]:
    cats = _unique_int_ids(_list_of_dicts(data, "categories", src), "categories", src)
    for c, cat in cats.items():
        if not isinstance(cat.get("name"), str):
            raise CocoFormatError(f"{src}: category {c} has no string name")
        if "isthing" in cat and cat["isthing"] not in (0, 1):
            raise CocoFormatError(f"{src}: category {c} has isthing {_short(cat['isthing'])}, expected 0 or 1")
    return cats


def _check_bbox(v: Any, where: str) -> list[float]:
    if not (isinstance(v, list) and len(v) == 4 and all(_is_num(x) for x in v)) or v[2] < 0 or v[3] < 0:
        raise CocoFormatError(f"{where}: bbox must be [x, y, w, h] with finite numbers, w, h >= 0, got {_short(v)}")
    return [float(x) for x in v]


def _check_segmentation(seg: Any, h: int, w: int, where: str) -> Any:
    if isinstance(seg, Mapping):
        return check_rle(seg, h, w, where)
    if isinstance(seg, list):  # polygons
        total = 0
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                    and all(_is_num(x) for x in poly)):
                raise CocoFormatError(f"{where}: a polygon must be a list of >= 3 (x, y) pairs of finite numbers")
            total += len(poly)
        if not seg or total > 2 * 4 * (h + w) * 64:
            raise CocoFormatError(f"{where}: {'no' if not seg else 'too many'} polygon points")
        return seg
    raise CocoFormatError(f"{where}: segmentation must be an RLE object or a list of polygons, got "
                          f"{type(seg).__name__}")


def check_instances(data: Any, src: str = "instances") -> dict[str, Any]:
    """Validate a COCO instances dict (types, unique ids, references, boxes, RLE that fits its image).

    Returns it with ``iscrowd`` defaulted to 0 and ``area`` filled in from the mask where missing.
    """
    if not isinstance(data, dict):
        raise CocoFormatError(f"{src}: expected a JSON object with images, annotations, categories")
    imgs = _check_images(data, src)
    cats = _check_categories(data, src)
    anns = _list_of_dicts(data, "annotations", src)
    _unique_int_ids(anns, "annotations", src)
    for a in anns:
        where = f"{src}: annotation {a['id']}"
        img = imgs.get(a.get("image_id")) if _is_int(a.get("image_id")) else None
        if img is None:
            raise CocoFormatError(f"{where} refers to image {_short(a.get('image_id'))}, which does not exist")
        if not _is_int(a.get("category_id")) or a["category_id"] not in cats:
            raise CocoFormatError(f"{where} refers to category {_short(a.get('category_id'))}, which does not exist")
        a.setdefault("iscrowd", 0)
        if a["iscrowd"] not in (0, 1) or isinstance(a["iscrowd"], bool):
            raise CocoFormatError(f"{where}: iscrowd must be 0 or 1, got {_short(a['iscrowd'])}")
        a["bbox"] = _check_bbox(a.get("bbox"), where)
        if "segmentation" in a:
            a["segmentation"] = _check_segmentation(a["segmentation"], img["height"], img["width"], where)
        if "area" not in a:
            a["area"] = float(decode_mask(a["segmentation"]).sum()) if isinstance(a.get("segmentation"), dict) \
                else a["bbox"][2] * a["bbox"][3]
        elif not _is_num(a["area"]) or a["area"] < 0:
            raise CocoFormatError(f"{where}: area must be a finite number >= 0, got {_short(a['area'])}")
    return data


def check_results(results: Any, gt: Mapping[str, Any], src: str = "results", *,
                  need_masks: bool = False) -> list[dict[str, Any]]:
    """Validate COCO detection results against validated ground truth ``gt`` (ids, scores, boxes, RLE)."""
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise CocoFormatError(f"{src}: detection results must be a JSON list of objects")
    imgs = {im["id"]: im for im in gt["images"]}
    cats = {c["id"] for c in gt["categories"]}
    for k, r in enumerate(results):
        where = f"{src}: result {k}"
        if not _is_int(r.get("image_id")) or r["image_id"] not in imgs:
            raise CocoFormatError(f"{where} refers to image {_short(r.get('image_id'))}, which the ground truth lacks")
        if not _is_int(r.get("category_id")) or r["category_id"] not in cats:
            raise CocoFormatError(f"{where} refers to category {_short(r.get('category_id'))}, which does not exist")
        if not _is_num(r.get("score")):
            raise CocoFormatError(f"{where}: score must be a finite number, got {_short(r.get('score'))}")
        im = imgs[r["image_id"]]
        if "segmentation" in r:
            seg = r["segmentation"]
            if not isinstance(seg, Mapping):
                raise CocoFormatError(f"{where}: result segmentation must be an RLE object")
            r["segmentation"] = check_rle(seg, im["height"], im["width"], where)
        elif need_masks:
            raise CocoFormatError(f"{where}: no segmentation (mask results need RLE masks)")
        if "bbox" in r:
            r["bbox"] = _check_bbox(r["bbox"], where)
        elif "segmentation" not in r:
            raise CocoFormatError(f"{where}: neither bbox nor segmentation")
    return results


def read_instances(path: str | os.PathLike) -> dict[str, Any]:
    """A validated COCO instances JSON file (see :func:`check_instances`)."""
    return check_instances(read_json(path), str(path))


def read_results(path: str | os.PathLike, gt: Mapping[str, Any], *, need_masks: bool = False) -> list[dict[str, Any]]:
    """A validated COCO detection results JSON file for ground truth ``gt``."""
    return check_results(read_json(path), gt, str(path), need_masks=need_masks)


def read_panoptic(json_path: str | os.PathLike, png_dir: str | os.PathLike | None = None
                  ) -> tuple[dict[str, Any], dict[int, tuple[np.ndarray, list[dict[str, Any]]]]]:
    """A validated COCO panoptic JSON and its PNGs: (data, {image_id: (segment ids, segments_info)}).

    PNGs are read from ``png_dir`` (default: the JSON's folder / its stem). Every PNG must have its image's size;
    every non-zero id in it must be listed in ``segments_info`` and every listed segment must appear (as
    ``panopticapi`` demands), with an existing category.
    """
    jp = Path(json_path)
    data = read_json(jp)
    src = str(jp)
    if not isinstance(data, dict):
        raise CocoFormatError(f"{src}: expected a JSON object with images, annotations, categories")
    imgs = _check_images(data, src)
    cats = _check_categories(data, src)
    root = Path(png_dir) if png_dir is not None else jp.with_suffix("")
    out: dict[int, tuple[np.ndarray, list[dict[str, Any]]]] = {}
    for k, a in enumerate(_list_of_dicts(data, "annotations", src)):
        where = f"{src}: annotations[{k}]"
        iid = a.get("image_id")
        if not _is_int(iid) or iid not in imgs:
            raise CocoFormatError(f"{where} refers to image {_short(iid)}, which does not exist")
        if iid in out:
            raise CocoFormatError(f"{where}: a second annotation for image {iid}")
        fn = a.get("file_name")
        if not isinstance(fn, str) or not fn or Path(fn).name != fn:
            raise CocoFormatError(f"{where}: file_name must be a plain file name, got {_short(fn)}")
        segs = a.get("segments_info")
        if not isinstance(segs, list) or not all(isinstance(s, dict) for s in segs):
            raise CocoFormatError(f"{where}: segments_info must be a list of objects")
        seen: set[int] = set()
        for s in segs:
            sid, cat = s.get("id"), s.get("category_id")
            if not _is_int(sid) or not 0 < sid < 256**3 or sid in seen:
                raise CocoFormatError(f"{where}: segment id {_short(sid)} is not a unique integer 1..256^3-1")
            seen.add(sid)
            if not _is_int(cat) or cat not in cats:
                raise CocoFormatError(f"{where}: segment {sid} refers to category {_short(cat)}, which does not exist")
            s.setdefault("iscrowd", 0)
            if s["iscrowd"] not in (0, 1) or isinstance(s["iscrowd"], bool):
                raise CocoFormatError(f"{where}: segment {sid} has iscrowd {_short(s['iscrowd'])}")
            s["isthing"] = int(cats[cat].get("isthing", 1))
        im = imgs[iid]
        ids = read_panoptic_png(root / fn, (im["height"], im["width"]))
        present = set(np.unique(ids).tolist()) - {0}
        if present - seen:
            raise CocoFormatError(f"{root / fn}: segment ids {sorted(present - seen)[:10]} are not in segments_info")
        if seen - present:
            raise CocoFormatError(f"{where}: segments {sorted(seen - present)[:10]} do not appear in {fn}")
        out[iid] = (ids, segs)
    return data, out
