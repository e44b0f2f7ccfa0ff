"""Matching a state dict against a model (missing, unexpected, mis-shaped keys; partial loads refused unless
asked) and building + loading the native model of an official checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..models.zoo import ModelConfig, build_from_config
from .configs import config_from_detectron2, infer_config
from .errors import DEFAULT_MAX_BYTES, CheckpointError
from .keys import detectron2_to_native
from .reading import read_official_state_dict

@dataclass
class LoadReport:
    """What happened when a state dict was matched against a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 8) -> str:
        parts = [f"{self.loaded} tensors loaded"]
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                more = f" … (+{len(items) - limit})" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
        if self.shape_mismatch:
            shown = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatch[:limit]]
            parts.append(f"{len(self.shape_mismatch)} shape mismatches: {'; '.join(shown)}")
        return "; ".join(parts)


def load_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, allow_partial: bool = False
) -> LoadReport:
    """Copy ``state_dict`` (native names) into ``model``; refuse anything but an exact match unless asked."""
    target = model.state_dict()
    report = LoadReport()
    usable: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k not in target:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(target[k].shape):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(target[k].shape)))
        else:
            usable[k] = v
    # ``criterion.empty_weight`` (MaskFormer's no-object loss weight) is a constant of the config, rebuilt when absent
    report.missing = [k for k in target if k not in state_dict
                      and not k.endswith("num_batches_tracked") and k != "criterion.empty_weight"]
    _check_shared_aliases(target, usable)
    if not report.ok and not allow_partial:
        raise CheckpointError(f"checkpoint does not match the model ({report.summary()}); "
                              "pass allow_partial=True to load what matches")
    with torch.no_grad():
        for k, v in usable.items():
            target[k].copy_(v.to(target[k].dtype))
    report.loaded = len(usable)
    return report


def _check_shared_aliases(target: Mapping[str, torch.Tensor], usable: Mapping[str, torch.Tensor]) -> None:
    """Keys that are one tensor in the model (e.g. MaskFormer+FaPN's GroupNorm shared by ``align_N.offset`` and
    ``layer_N``) must arrive with equal values; otherwise the load would silently keep only the last one."""
    by_storage: dict[tuple[int, int], list[str]] = {}
    for k, t in target.items():
        if t.numel():
            by_storage.setdefault((t.data_ptr(), t.numel()), []).append(k)
    for keys in by_storage.values():
        given = [k for k in keys if k in usable]
        if len(given) > 1 and any(not torch.equal(usable[given[0]], usable[k]) for k in given[1:]):
            raise CheckpointError(f"keys {given} are one shared parameter in the model but hold different values "
                                  "in the checkpoint")


def import_official(
    path: str | os.PathLike,
    *,
    config: ModelConfig | str | os.PathLike | Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    dcn_impl: str = "auto",
) -> tuple[torch.nn.Module, LoadReport]:
    """Build the native model for an official checkpoint and load it.

    ``config``: a :class:`ModelConfig`, a detectron2 config dump (path/dict) or ``None`` to infer from the keys.
    """
    raw = read_official_state_dict(path, max_bytes=max_bytes)
    native = {n: v for k, v in raw.items() if (n := detectron2_to_native(k)) is not None}
    if config is None:
        cfg = infer_config(native, native=True)
    elif isinstance(config, ModelConfig):
        cfg = config
    else:
        cfg = config_from_detectron2(config, neck="fapn" if any(k.startswith("neck.align") for k in native) else "fpn")
    model = build_from_config(cfg, dcn_impl=dcn_impl)
    report = load_state_dict(model, native, allow_partial=allow_partial)
    model.eval()
    return model, report
