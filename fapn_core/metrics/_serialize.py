"""JSON-safe conversion of result dataclasses (NaN/inf -> None, numpy -> Python)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

#: field metadata key marking per-pixel maps (excluded from ``to_dict`` unless asked for)
MAP = {"map": True}


def to_jsonable(obj: Any, include_maps: bool = False) -> Any:
    """Recursively convert ``obj`` to JSON-serialisable Python data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("map") and not include_maps:
                continue
            out[f.name] = to_jsonable(getattr(obj, f.name), include_maps)
        return out
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, include_maps) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, include_maps) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            return to_jsonable(obj.tolist(), include_maps)
        return obj.tolist()
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


class ToDictMixin:
    """``to_dict()`` for result dataclasses."""

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict; NaN becomes None, per-pixel maps are left out unless ``include_maps``."""
        return to_jsonable(self, include_maps)
