"""Reading official checkpoint files safely: ``.pth`` with ``torch.load(weights_only=True)``, detectron2 ``.pkl``
with an unpickler that admits numpy arrays and plain containers only; a size limit first."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .errors import DEFAULT_MAX_BYTES, CheckpointError

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays/dtypes/scalars and plain containers; anything else is refused before it runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(
            f"refused to unpickle {module}.{name}: a detectron2 .pkl may only hold numpy arrays and plain "
            "containers (this file could run code when loaded)"
        )


def _check_size(path: Path, max_bytes: int) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    if size > max_bytes:
        raise CheckpointError(f"checkpoint {path.name} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")


def _to_tensor_dict(obj: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{source}: state-dict key {k!r} is not a string")
        if isinstance(v, torch.Tensor):
            out[k] = v
        elif isinstance(v, np.ndarray):
            if v.dtype == object:
                raise CheckpointError(f"{source}: entry {k!r} is an object array, not numbers")
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        elif isinstance(v, (int, float)) and k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(v)
        else:
            raise CheckpointError(f"{source}: entry {k!r} is a {type(v).__name__}, not a tensor or array")
    return out


def read_official_state_dict(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, torch.Tensor]:
    """Read a detectron2 / FaPN-full checkpoint (``.pth``/``.pt`` or ``.pkl``) without running any code from it."""
    p = Path(path)
    _check_size(p, max_bytes)
    data = p.read_bytes()
    if p.suffix == ".pkl":
        try:
            obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
        except CheckpointError:
            raise
        except Exception as e:  # truncated/garbage pickles raise many different errors
            raise CheckpointError(f"{p.name} is not a readable detectron2 .pkl checkpoint: {e}") from None
    else:
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            detail = next((ln.strip() for ln in str(e).splitlines() if "global" in ln.lower()), None)
            if detail is None:
                raise CheckpointError(f"{p.name} is not a readable PyTorch checkpoint (corrupt or not a "
                                      "checkpoint)") from None
            raise CheckpointError(
                f"{p.name} holds objects other than tensors and plain containers; refused "
                f"(loaded with weights_only=True): {detail}"
            ) from None
        except Exception as e:
            raise CheckpointError(f"{p.name} is not a readable PyTorch checkpoint: {e}") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p.name}: expected a state dict (or a dict with 'model'), got {type(obj).__name__}")
    return _to_tensor_dict(obj, p.name)
