"""Content keys: what every cache in the app is keyed by (checkpoint bytes or file, image pixels, annotations)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def hash_array(a: np.ndarray) -> str:
    """A key of an array's values and shape (images, label maps, instance maps)."""
    return hash_bytes(np.ascontiguousarray(a).tobytes() + str(a.shape).encode())


def annotations_key(anns: list[dict[str, Any]]) -> str:
    """A content key of COCO annotations (for caches keyed by ground truth)."""
    return hash_bytes(json.dumps(anns, sort_keys=True, default=str).encode())


def file_key(path: Path) -> str:
    """A key of a file on the server: its real path, size and modification time."""
    st_ = path.stat()
    return f"{path.resolve()}:{st_.st_size}:{int(st_.st_mtime)}"
