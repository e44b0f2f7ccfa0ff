"""Bundled models (``assets/models``) and resolving a model spec (bundled name or checkpoint path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .native import load_checkpoint

def assets_dir() -> Path:
    """Folder of bundled models and samples: ``$FAPN_ASSETS`` or ``<repo>/assets``."""
    env = os.environ.get("FAPN_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets"


def bundled_models() -> dict[str, Path]:
    """Bundled native checkpoints by name (``assets/models/<name>.safetensors``)."""
    folder = assets_dir() / "models"
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}


def resolve_model(spec: str | os.PathLike, *, device: str | torch.device = "cpu", config: Any = None,
                  allow_partial: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A bundled model's name or a checkpoint path → (model in eval mode, card)."""
    path = Path(spec)
    if path.is_file():
        return load_checkpoint(path, config=config, device=device, allow_partial=allow_partial)
    bundled = bundled_models()
    if str(spec) in bundled:
        return load_checkpoint(bundled[str(spec)], device=device)
    raise CheckpointError(
        f"no checkpoint file or bundled model named {str(spec)!r}; bundled: {sorted(bundled) or 'none'}"
    )
