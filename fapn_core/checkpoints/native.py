"""The native format: safetensors with the model card in its metadata (and beside it as JSON); loading any
supported checkpoint; converting official ones; the detector inside a Panoptic FPN."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..models.zoo import ModelConfig, build_from_config
from .cards import make_card, official_class_fields
from .errors import DEFAULT_MAX_BYTES, CheckpointError
from .loading import LoadReport, import_official, load_state_dict
from .reading import _check_size

CARD_KEY = "fapn_card"

def save_native(
    model: torch.nn.Module, path: str | os.PathLike, card: dict[str, Any] | None = None, *, half: bool = False
) -> Path:
    """Write ``path`` (``.safetensors``, card embedded in its metadata) and ``path`` with ``.json`` (the card).

    Written atomically (temporary file + rename), so an interrupted save leaves the previous file intact.
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    card = card or make_card(model)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v.clone()
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(card, indent=2, sort_keys=False, default=_json_default)
    for target, writer in ((p, lambda f: save_file(tensors, f, metadata={CARD_KEY: text})),
                           (p.with_suffix(".json"), lambda f: Path(f).write_text(text + "\n"))):
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            writer(tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are meant to be shared
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return p


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The model card embedded in a native ``.safetensors`` checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{Path(path).name} is not a readable safetensors file: {e}") from None
    if CARD_KEY not in meta:
        raise CheckpointError(f"{Path(path).name} has no FaPN Lab model card (metadata key {CARD_KEY!r})")
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{Path(path).name}: model card is not valid JSON: {e}") from None
    if not isinstance(card, dict) or "config" not in card:
        raise CheckpointError(f"{Path(path).name}: model card has no 'config'")
    return card


def load_native(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", allow_partial: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES, dcn_impl: str = "auto",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Model (eval mode, float32) and card from a native checkpoint."""
    p = Path(path)
    _check_size(p, max_bytes)
    card = read_card(p)
    cfg = ModelConfig.from_dict(card["config"])
    model = build_from_config(cfg, dcn_impl=dcn_impl)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(p), framework="pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    load_state_dict(model, tensors, allow_partial=allow_partial)
    model.card = card
    return model.to(device).eval(), card


def load_checkpoint(
    path: str | os.PathLike, *, config: Any = None, device: str | torch.device = "cpu",
    allow_partial: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, dcn_impl: str = "auto",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load any supported checkpoint (native ``.safetensors``, official ``.pth``/``.pkl``) → (model, card)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return load_native(p, device=device, allow_partial=allow_partial, max_bytes=max_bytes, dcn_impl=dcn_impl)
    if p.suffix not in (".pth", ".pt", ".pkl"):
        raise CheckpointError(f"unsupported checkpoint type {p.suffix!r}: use .safetensors, .pth, .pt or .pkl")
    model, report = import_official(p, config=config, allow_partial=allow_partial, max_bytes=max_bytes,
                                    dcn_impl=dcn_impl)
    card = make_card(model, source={"file": p.name, "format": "detectron2", "load_report": report.summary()},
                     **official_class_fields(model.config))
    model.card = card
    return model.to(device).eval(), card


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, *, config: Any = None, allow_partial: bool = False,
    half: bool = False, **card_fields: Any,
) -> tuple[Path, LoadReport]:
    """Official checkpoint → native safetensors + card (what ``fapn convert IN OUT`` runs)."""
    model, report = import_official(src, config=config, allow_partial=allow_partial)
    fields = {**official_class_fields(model.config), **card_fields}
    card = make_card(model, source={"file": Path(src).name, "format": "detectron2", "load_report": report.summary()},
                     **fields)
    return save_native(model, dst, card, half=half), report


def detector_from_panoptic(model: torch.nn.Module, card: Mapping[str, Any], head: str = "maskrcnn"
                           ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The Mask R-CNN (or Faster R-CNN) inside a Panoptic FPN: same backbone, neck, RPN and ROI heads and
    weights, without the semantic head (and, for ``fasterrcnn``, without the mask head). Its detections equal
    the Panoptic FPN's instances; the card keeps classes, thing ids and training data and records the source."""
    if getattr(model.config, "head", None) != "panoptic":
        raise CheckpointError(f"detector_from_panoptic needs a Panoptic FPN, got {model.config.name} "
                              f"({model.config.task}): only Panoptic FPN has a Mask R-CNN inside")
    if head not in ("maskrcnn", "fasterrcnn"):
        raise CheckpointError(f"head must be 'maskrcnn' or 'fasterrcnn', got {head!r}")
    cfg = model.config.replace(head=head)
    new = build_from_config(cfg)
    drop = ("head.",) + (("roi_heads.mask_head.",) if head == "fasterrcnn" else ())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(drop)}
    new.load_state_dict(state, strict=True)
    keep = {k: card[k] for k in ("classes", "palette", "thing_category_ids", "training_data", "normalization")
            if k in card}
    out = make_card(new, **keep, source={"derived_from": card.get("name"), "dropped": list(drop)})
    out["name"] = f"{card.get('name', cfg.name)}-{head}"
    new.card = out
    return new.to(next(model.parameters()).device).eval(), out
