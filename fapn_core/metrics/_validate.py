"""Input validation and normalisation shared by all metric functions.

Internally every label map is converted to a compact unsigned map (``uint8`` when
``num_classes <= 255``, else ``uint16``) in which valid classes keep their ids and
every ignored pixel holds the sentinel ``IGN`` (255 or 65535).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

MAX_CLASSES = 65535


def _ign_for(num_classes: int) -> int:
    return 255 if num_classes <= 255 else 65535


def check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    n = int(num_classes)
    if not 1 <= n <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {n}")
    return n


def check_ignore_index(ignore_index: Any, num_classes: int) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    ign = int(ignore_index)
    if 0 <= ign < num_classes:
        raise ValueError(
            f"ignore_index={ign} collides with a valid class id (0..{num_classes - 1}); "
            "use an id outside the class range, e.g. 255"
        )
    return ign


def check_map(x: Any, name: str) -> np.ndarray:
    """Check that ``x`` is a non-empty 2-D integer numpy array."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label map (uint8/int32/int64 ...), got dtype {x.dtype}; "
            "bool and float maps are rejected"
        )
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) map, got a {x.ndim}-D array of shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    return x


def check_same_shape(ref: np.ndarray, ref_name: str, x: np.ndarray, name: str) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: {ref_name} has shape {ref.shape} but {name} has shape {x.shape}")


def _bad_ids(x: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    bad = ((x < 0) | (x >= num_classes)) & (x != ignore_index)
    return np.unique(x[bad])


def _fmt_ids(ids: np.ndarray, limit: int = 10) -> str:
    vals = [int(v) for v in ids[:limit]]
    more = f" ... ({len(ids)} distinct)" if len(ids) > limit else ""
    return f"{vals}{more}"


def normalize_labels(x: np.ndarray, name: str, num_classes: int, ignore_index: int) -> np.ndarray:
    """Validate class ids of a checked map and return its compact internal form."""
    ign_code = _ign_for(num_classes)
    dtype = np.uint8 if ign_code == 255 else np.uint16
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= num_classes:
        bad = _bad_ids(x, num_classes, ignore_index)
        if bad.size:
            raise ValueError(
                f"{name} contains class ids {_fmt_ids(bad)} outside 0..{num_classes - 1} "
                f"that are not ignore_index={ignore_index}"
            )
    # fast path: already in internal form
    if x.dtype == dtype and (hi < num_classes or ignore_index == ign_code):
        return np.ascontiguousarray(x)
    if hi < num_classes and lo >= 0:
        return np.ascontiguousarray(x.astype(dtype))
    out = np.where(x == ignore_index, ign_code, x).astype(dtype)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class Prepared:
    """Validated, normalised ground truth (internal)."""

    gt: np.ndarray  # compact map, ignore -> ign
    valid: np.ndarray  # bool, gt != ignore
    num_classes: int
    ignore_index: int
    ign: int
    n_valid: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.gt.shape  # type: ignore[return-value]

    @property
    def all_valid(self) -> bool:
        return self.n_valid == self.gt.size


def prepare_gt(gt: Any, num_classes: Any, ignore_index: Any, name: str = "gt") -> Prepared:
    c = check_num_classes(num_classes)
    ign_index = check_ignore_index(ignore_index, c)
    g = check_map(gt, name)
    lab = normalize_labels(g, name, c, ign_index)
    ign = _ign_for(c)
    valid = lab != ign
    return Prepared(lab, valid, c, ign_index, ign, int(np.count_nonzero(valid)))


def prepare_pred(
    pred: Any, prep: Prepared, name: str = "pred", gt_name: str = "gt", allow_void: bool = False
) -> np.ndarray:
    """Validate a prediction against prepared GT; return its compact form.

    A prediction may hold ``ignore_index`` only where the GT is ignored, unless ``allow_void``:
    then ``ignore_index`` at a labelled pixel is a void prediction (no class).
    """
    p = check_map(pred, name)
    check_same_shape(prep.gt, gt_name, p, name)
    lab = normalize_labels(p, name, prep.num_classes, prep.ignore_index)
    if not allow_void and int(lab.max()) == prep.ign:
        n_bad = int(np.count_nonzero((lab == prep.ign) & prep.valid))
        if n_bad:
            raise ValueError(
                f"{name} contains ignore_index={prep.ignore_index} at {n_bad} pixels where {gt_name} is "
                "labelled; predictions must assign a class to every labelled pixel (compare(..., allow_void=True) "
                "counts them as void predictions)"
            )
    return lab


def masked_pred(pred: np.ndarray, prep: Prepared) -> np.ndarray:
    """Prediction with the GT ignore region set to the ignore sentinel."""
    if prep.all_valid:
        return pred
    out = pred.copy()
    out[~prep.valid] = prep.ign
    return out


def prepare_instances(instances: Any, prep: Prepared, name: str = "instances") -> np.ndarray:
    inst = check_map(instances, name)
    check_same_shape(prep.gt, "gt", inst, name)
    return inst


def check_class_subset(classes: Sequence[int] | None, num_classes: int, name: str) -> np.ndarray | None:
    if classes is None:
        return None
    arr = np.asarray(list(classes))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be a sequence of int class ids, got {list(classes)!r}")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} contains class ids {_fmt_ids(np.unique(bad))} outside 0..{num_classes - 1}")
    return np.unique(arr).astype(np.int64)


def check_class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str] | None:
    if class_names is None:
        return None
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries but num_classes={num_classes}")
    return names


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)
