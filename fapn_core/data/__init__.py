"""Datasets for FaPN vs FPN comparisons: a synthetic street benchmark and Cityscapes / ADE20K / folder readers.

Light imports: ``palettes`` and ``synthetic`` need only numpy / OpenCV; the torch datasets are
loaded on first access (``from fapn_core.data import FolderDataset``).
"""

from __future__ import annotations

from typing import Any

from .palettes import (
    ADE20K_CLASSES, ADE20K_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, SYNTHETIC_CLASSES,
    SYNTHETIC_PALETTE, colorize,
)

_LAZY = {
    "make_sample": "synthetic", "write_synthetic": "synthetic", "SyntheticSample": "synthetic",
    "THING_CLASSES": "synthetic",
    "SegmentationDataset": "datasets", "SyntheticDataset": "datasets", "FolderDataset": "datasets",
    "CityscapesDataset": "cityscapes", "ADE20KDataset": "ade20k", "CocoStuff10KDataset": "coco_stuff",
    "open_dataset": "registry",
}

__all__ = [
    "ADE20K_CLASSES", "ADE20K_PALETTE", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "IGNORE_INDEX",
    "SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "colorize", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
