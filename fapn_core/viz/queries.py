"""MaskFormer's queries on an image: which query wins each pixel, the top queries' masks, and where two models'
query segments differ (numpy images; no torch).

Everything here reads a :class:`~fapn_core.introspect.QueryCapture`: per-query class probabilities and mask logits
at stride 4. A pixel's *owner* is ``argmax_q max_c p_q(c) · sigmoid(m_q)`` (MaskFormer's panoptic rule, no-object
excluded), computed at the masks' resolution and shown nearest-upsampled. The FaPN pixel decoder changes only the
mask features, so two models differ in *where* their query segments end: :func:`border_comparison` draws the
borders between owners that only A has, only B has, and both have (within one mask cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from ._common import blend, check_rgb, greyed
from .detections import ONLY_A, ONLY_B

ONLY_A_BORDER = ONLY_A  # blue: only A, orange: only B (as every other A/B view)
ONLY_B_BORDER = ONLY_B
BOTH_BORDER = (255, 255, 255)


@dataclass(frozen=True)
class QueryRow:
    """One query: its id, most likely real class and that class's probability, and the share of pixels it owns."""

    query: int
    class_id: int
    class_name: str
    probability: float
    pixel_share: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def query_table(q: Any, class_names: Sequence[str]) -> list[QueryRow]:
    """Every query that owns at least one cell, largest share first (then most confident)."""
    owners = q.owners()
    share = np.bincount(owners.ravel(), minlength=q.num_queries) / owners.size
    real = q.class_probs[:, :-1]
    cls, prob = real.argmax(1), real.max(1)
    rows = [QueryRow(int(i), int(cls[i]), class_names[cls[i]] if cls[i] < len(class_names) else f"class_{cls[i]}",
                     float(prob[i]), float(share[i])) for i in np.flatnonzero(share)]
    return sorted(rows, key=lambda r: (-r.pixel_share, -r.probability))


def _to_image(a: np.ndarray, hw: tuple[int, int], interpolation: int) -> np.ndarray:
    return cv2.resize(a, (hw[1], hw[0]), interpolation=interpolation)


def query_masks(q: Any, queries: Sequence[int], hw: tuple[int, int]) -> np.ndarray:
    """(k, H, W) mask probabilities of the given queries at the image size (logits upsampled bilinearly, then
    sigmoid: the official order)."""
    return np.stack([_sigmoid(_to_image(q.mask_logits[i].astype(np.float32), hw, cv2.INTER_LINEAR))
                     for i in queries]) if len(queries) else np.zeros((0, *hw), np.float32)


def owner_view(image: np.ndarray, q: Any, palette: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """The image with each pixel tinted by the class colour of the query that owns it, owners' borders in white
    (so two queries of one class show as two regions)."""
    image = check_rgb(image)
    hw = image.shape[:2]
    owners = q.owners()
    colours = np.asarray(palette, np.uint8)
    cls = q.class_probs[:, :-1].argmax(1)
    tint = colours[np.minimum(cls, len(colours) - 1)][_to_image(owners.astype(np.int32), hw, cv2.INTER_NEAREST)]
    out = blend(greyed(image), tint, alpha)
    out[_to_image(_borders(owners).astype(np.uint8), hw, cv2.INTER_NEAREST).astype(bool)] = BOTH_BORDER
    return out


def _borders(owners: np.ndarray) -> np.ndarray:
    """Cells whose right or lower neighbour has another owner."""
    b = np.zeros(owners.shape, bool)
    b[:, :-1] |= owners[:, 1:] != owners[:, :-1]
    b[:-1, :] |= owners[1:, :] != owners[:-1, :]
    return b


@dataclass
class BorderComparison:
    """Owner borders of A and B at the masks' resolution: counts of border cells only A has, only B has, both
    have (within one cell), the share of cells whose owners' classes differ, and the drawn view."""

    only_a: int
    only_b: int
    both: int
    class_disagreement: float
    view: np.ndarray


def border_comparison(image: np.ndarray, qa: Any, qb: Any) -> BorderComparison:
    """Where A's and B's query segments end differently (see the module docstring)."""
    image = check_rgb(image)
    oa, ob = qa.owners(), qb.owners()
    if oa.shape != ob.shape:
        raise ValueError(f"the two models' masks have different sizes {oa.shape} and {ob.shape}")
    ba, bb = _borders(oa), _borders(ob)
    kernel = np.ones((3, 3), np.uint8)
    near_a = cv2.dilate(ba.astype(np.uint8), kernel).astype(bool)
    near_b = cv2.dilate(bb.astype(np.uint8), kernel).astype(bool)
    only_a, only_b, both = ba & ~near_b, bb & ~near_a, (ba & near_b) | (bb & near_a)
    ca = qa.class_probs[:, :-1].argmax(1)[oa]
    cb = qb.class_probs[:, :-1].argmax(1)[ob]
    hw = image.shape[:2]
    out = greyed(image, 0.45)
    for mask, colour in ((both, BOTH_BORDER), (only_a, ONLY_A_BORDER), (only_b, ONLY_B_BORDER)):
        up = _to_image(mask.astype(np.uint8), hw, cv2.INTER_NEAREST).astype(bool)
        out[up] = colour
    return BorderComparison(int(only_a.sum()), int(only_b.sum()), int(both.sum()), float((ca != cb).mean()), out)
