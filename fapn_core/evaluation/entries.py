"""What an evaluation scores: a loaded model (``ModelEntry``) or a folder of saved predictions (``PredictionEntry``),
each with the task its card names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..checkpoints import resolve_model
from ..data.predictions import PredictionSet, open_predictions
from ..models.tta import TTASettings, predict_tta
from ..models.zoo import count_parameters


@dataclass
class ModelEntry:
    """A loaded model; with ``tta`` its labels come from multi-scale + flip test-time augmentation."""

    label: str
    model: torch.nn.Module
    card: dict[str, Any]
    tta: TTASettings | None = None

    @property
    def num_params(self) -> int:
        return count_parameters(self.model)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    def labels(self, image: np.ndarray, index: int, amp: bool) -> np.ndarray:
        out = predict_tta(self.model, image, self.tta, amp=amp) if self.tta else self.model.predict(image, amp=amp)
        return out.argmax(0).cpu().numpy().astype(np.int64)

    @property
    def has_fam(self) -> bool:
        """Whether its FAM can be measured (single-scale entries only: one forward gives labels and captures)."""
        from ..introspect import neck_modules

        return self.tta is None and bool(neck_modules(self.model)[0])

    def labels_and_fams(self, image: np.ndarray, amp: bool) -> tuple[np.ndarray, dict]:
        """Labels and the FAM captures (offsets, feat_up, lateral, output) of one forward."""
        from ..introspect import predict_with_captures

        pred = predict_with_captures(self.model, image, ("offsets", "fam_features"), amp=amp)
        return pred.labels.astype(np.int64), pred.captures.fam


@dataclass
class PredictionEntry:
    """Saved prediction PNGs of one method, scored like a model (``fapn_core.data.predictions``)."""

    label: str
    predictions: PredictionSet
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> None:
        return None

    @property
    def num_classes(self) -> int:
        return self.predictions.num_classes

    def labels(self, image: np.ndarray, index: int, amp: bool) -> np.ndarray:
        return self.predictions.read(index, image.shape[:2])


def model_task(entry: Any) -> str:
    """'semantic', 'detection', 'instance' or 'panoptic' of a model entry (card first, then the model)."""
    card = getattr(entry, "card", None) or {}
    return str(card.get("task") or getattr(getattr(entry, "model", None), "task", "semantic"))


def load_models(specs: Sequence[str], *, device: str = "cpu", tta: TTASettings | None = None) -> list[ModelEntry]:
    """Model entries from names of bundled models or checkpoint paths (labels: card name or file stem).

    With ``tta`` each semantic model is scored twice: single-scale, and multi-scale + flip as ``<label> (TTA)``.
    """
    entries: list[ModelEntry] = []
    for spec in specs:
        model, card = resolve_model(spec, device=device)
        label = card.get("name", Path(spec).stem)
        if label in {e.label for e in entries}:
            label = Path(spec).stem
        entries.append(ModelEntry(label, model, card))
    if tta is not None:
        entries += [ModelEntry(f"{e.label} (TTA)", e.model, e.card, tta) for e in entries if model_task(e) == "semantic"]
    return entries


def load_predictions(specs: Sequence[str], dataset, *, ids: str = "auto",
                     taken: Sequence[str] = ()) -> list[PredictionEntry]:
    """Entries for ``LABEL=DIR`` specs (a bare ``DIR`` is labelled by its folder name).

    Raises ``ValueError`` for a duplicate label and what ``open_predictions`` raises for a folder.
    """
    entries: list[PredictionEntry] = []
    used = set(taken)
    for spec in specs:
        label, eq, root = spec.partition("=")
        if not eq:
            label, root = Path(spec.rstrip("/\\")).name or spec, spec
        if not label or not root:
            raise ValueError(f"bad --predictions item {spec!r}: expected LABEL=DIR")
        if label in used:
            raise ValueError(f"duplicate label {label!r} in --predictions (labels must be unique)")
        used.add(label)
        entries.append(PredictionEntry(label, open_predictions(dataset, label, root, ids)))
    return entries
