"""Synthetic street-scene benchmark built to reward feature alignment.

Scenes are rendered in perspective (road, sidewalks, receding facades, skyline) with jittered,
overlapping colours and textures, stuff-labelled look-alike distractors, thin structures
(poles, fences, wires: 1-4 px wide) and small objects (signs, people: 4-24 px), then passed
through a camera model (blur, down/up-resampling, shot/read noise, JPEG) so boundaries look
like photographs. Labels stay exact (nearest); only the image is degraded.

Ignore (255) is used only for small objects that ended up mostly hidden (< 35 % of their
pixels visible) or smaller than 4 px after occlusion / cropping by the image border.

Generation is deterministic per ``(seed, index)`` and independent of generation order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ._canvas import Canvas, sample_layout
from ._stuff import cast_shadows, ground_coords, paint_facades, paint_ground, paint_sky, paint_skyline, paint_verge
from ._things import SMALL_RANGE, THIN_MAX, place_things
from .palettes import IGNORE_INDEX, SYNTHETIC_CLASSES, SYNTHETIC_PALETTE

__all__ = [
    "CLASS_NAMES", "PALETTE", "THING_CLASSES", "STUFF_CLASSES", "THIN_CLASSES", "SMALL_CLASSES",
    "IGNORE_INDEX", "DEFAULT_SIZE", "SMALL_RANGE", "THIN_MAX",
    "SyntheticSample", "make_sample", "write_synthetic",
]

CLASS_NAMES: tuple[str, ...] = SYNTHETIC_CLASSES
PALETTE: np.ndarray = SYNTHETIC_PALETTE
NUM_CLASSES = len(CLASS_NAMES)
THING_CLASSES: tuple[int, ...] = (5, 7, 8, 9)  # pole, traffic sign, person, car: have instance ids
STUFF_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 6)
THIN_CLASSES: tuple[int, ...] = (5, 6)  # pole, fence (+ wires): 1..THIN_MAX px wide
SMALL_CLASSES: tuple[int, ...] = (7, 8)  # traffic sign, person: SMALL_RANGE px (max bbox side)
DEFAULT_SIZE: tuple[int, int] = (256, 512)


@dataclass
class SyntheticSample:
    """One scene: ``image`` HxWx3 uint8 RGB, ``label`` HxW uint8 (0..9, 255 ignore), ``instances`` HxW int32."""

    image: np.ndarray
    label: np.ndarray
    instances: np.ndarray


def make_sample(index: int, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE) -> SyntheticSample:
    """Render scene ``index`` of the benchmark with ``seed`` at ``size`` = (H, W)."""
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"size must be at least 32x32, got {size}")
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([int(seed), int(index), h, w])
    cv = Canvas(rng, h, w)
    L = sample_layout(rng, h, w)
    sky = paint_sky(cv, L)
    paint_skyline(cv, L, sky)
    gbox, dy, u = ground_coords(cv, L)
    paint_verge(cv, L, gbox, u)
    paint_facades(cv, L, sky)
    paint_ground(cv, L, gbox, dy, u, sky)
    cast_shadows(cv, L)
    place_things(cv, L)
    _drop_fragments(cv)
    return SyntheticSample(_camera(cv, rng), cv.lab, cv.inst)


def _drop_fragments(cv: Canvas) -> None:
    """Small objects left mostly hidden or below SMALL_RANGE[0] px become ignore (label 255, instance 0)."""
    for iid, drawn in cv.drawn.items():
        y0, y1, x0, x1 = cv.small_boxes[iid]
        m = cv.inst[y0:y1, x0:x1] == iid
        vis = int(np.count_nonzero(m))
        if vis == 0:
            continue
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        ext = max(ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1)
        if vis < 0.35 * drawn or not SMALL_RANGE[0] <= ext <= SMALL_RANGE[1]:
            cv.lab[y0:y1, x0:x1][m] = IGNORE_INDEX
            cv.inst[y0:y1, x0:x1][m] = 0


@lru_cache(maxsize=8)
def _radius2(h: int, w: int) -> np.ndarray:
    yy = (np.arange(h, dtype=np.float32)[:, None] - (h - 1) / 2) / (h / 2)
    xx = (np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2) / (w / 2)
    return (xx**2 + yy**2) / 2


def _camera(cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Lighting, optics and sensor: shadows, white balance, vignetting, blur, resampling, noise, JPEG."""
    h, w = cv.h, cv.w
    shade = cv2.GaussianBlur(cv.shade, (0, 0), rng.uniform(0.8, 2.5))
    light = shade * (1 - np.float32(rng.uniform(0, 0.3)) * _radius2(h, w))
    gains = rng.normal(1, 0.05, 3) * rng.uniform(0.75, 1.2)
    img = cv.img * cv2.merge([light * np.float32(g) for g in gains])
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
    f = rng.uniform(1.25, 1.8)
    small = cv2.resize(img, (max(8, round(w / f)), max(8, round(h / f))), interpolation=cv2.INTER_AREA)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC)
    np.clip(img, 0, 255, out=img)
    # shot + read noise; unit noise reuses the scene's pixel field, shifted per channel (decorrelated)
    sigma = np.sqrt(img * np.float32(rng.uniform(0.05, 0.3)) + np.float32(rng.uniform(2, 5) ** 2))
    shifts = rng.integers(7, min(h, w) - 7, (3, 2))
    img += sigma * cv2.merge([np.roll(cv.f.pixel, tuple(int(v) for v in sh), (0, 1)) for sh in shifts])
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 92))])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def dataset_info(n: int, seed: int, size: tuple[int, int], split_name: str) -> dict[str, Any]:
    """The ``dataset.json`` content of a written synthetic split."""
    return {
        "name": "fapn-synthetic-streets",
        "generator": "fapn_core.data.synthetic.make_sample",
        "class_names": list(CLASS_NAMES),
        "palette": PALETTE.tolist(),
        "thing_classes": list(THING_CLASSES),
        "thin_classes": list(THIN_CLASSES),
        "small_classes": list(SMALL_CLASSES),
        "ignore_index": IGNORE_INDEX,
        "seed": int(seed),
        "size": [int(size[0]), int(size[1])],
        "n": int(n),
        "split": split_name,
    }


def write_synthetic(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    split_name: str = "train",
    progress: bool = True,
) -> Path:
    """Write ``n`` samples as a plain folder dataset (see ``FolderDataset``) and return its root.

    Layout: ``images/<split>_<i>.png``, ``labels/<split>_<i>.png`` (class ids),
    ``instances/<split>_<i>.png`` (16-bit) and ``dataset.json``. One split per folder.
    """
    from tqdm.auto import tqdm

    root = Path(out_dir)
    dirs = [root / d for d in ("images", "labels", "instances")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(n), desc=f"synthetic {split_name}", unit="img", disable=not progress):
        s = make_sample(i, seed, size)
        stem = f"{split_name}_{i:06d}"
        if s.instances.max(initial=0) > 65535:
            raise ValueError(f"instance id > 65535 in sample {i}; cannot store as 16-bit PNG")
        for d, arr in zip(dirs, (s.image[..., ::-1], s.label, s.instances.astype(np.uint16))):
            path = d / f"{stem}.png"
            if not cv2.imwrite(str(path), np.ascontiguousarray(arr)):
                raise OSError(f"could not write {path}")
    (root / "dataset.json").write_text(json.dumps(dataset_info(n, seed, size, split_name), indent=1))
    return root

