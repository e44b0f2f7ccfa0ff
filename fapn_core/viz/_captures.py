"""Pick a FAM/FSM level out of :class:`~fapn_core.introspect.Captures`, or say clearly why there is none.

Duck-typed (no import of :mod:`fapn_core.introspect`) so that ``fapn_core.viz`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import NothingToShow

if TYPE_CHECKING:
    from ..introspect import Captures, FAMCapture, FSMCapture

LEVEL_ORDER = ("p2", "p3", "p4", "p5")


def _is_captures(obj: Any) -> bool:
    return hasattr(obj, "fam") and hasattr(obj, "fsm") and hasattr(obj, "explain_missing")


def _is_fam(obj: Any) -> bool:
    return hasattr(obj, "offsets") and hasattr(obj, "mask") and hasattr(obj, "stride")


def _is_fsm(obj: Any) -> bool:
    return hasattr(obj, "attention") and hasattr(obj, "top_k")


def sorted_levels(levels) -> list[str]:
    return sorted(levels, key=lambda k: (LEVEL_ORDER.index(k) if k in LEVEL_ORDER else 99, k))


def fam_levels(source: Captures | dict[str, FAMCapture]) -> dict[str, FAMCapture]:
    """All FAM captures by level (finest first); :class:`NothingToShow` when the model or capture has none."""
    if _is_captures(source):
        if not source.has_fam:
            raise NothingToShow(source.explain_missing() or "this model has no FAM")
        fams = source.fam
        if not fams:
            raise NothingToShow("no FAM offsets were captured: call predict_with_captures with "
                                "what=(…, 'offsets') (and 'fam_features' for the alignment views)")
    else:
        fams = dict(source)
        if not fams:
            raise NothingToShow("no FAM levels given")
    return {k: fams[k] for k in sorted_levels(fams)}


def get_fam(source: Captures | FAMCapture, level: str | None) -> FAMCapture:
    """One FAM level; ``level=None`` takes the finest (``p2``)."""
    if _is_fam(source):
        return source
    fams = fam_levels(source)
    if level is None:
        return next(iter(fams.values()))
    if level not in fams:
        raise ValueError(f"no FAM at level {level!r}; captured levels: {list(fams)}")
    return fams[level]


def fsm_levels(source: Captures | dict[str, FSMCapture]) -> dict[str, FSMCapture]:
    """All FSM captures by level (finest first); :class:`NothingToShow` when the model or capture has none."""
    if _is_captures(source):
        if not source.has_fsm:
            raise NothingToShow(source.explain_missing() or "this model has no FSM")
        fsms = source.fsm
        if not fsms:
            raise NothingToShow("no FSM importances were captured: call predict_with_captures with "
                                "what=(…, 'attention')")
    else:
        fsms = dict(source)
        if not fsms:
            raise NothingToShow("no FSM levels given")
    return {k: fsms[k] for k in sorted_levels(fsms)}


def get_fsm(source: Captures | FSMCapture, level: str | None) -> FSMCapture:
    if _is_fsm(source):
        return source
    fsms = fsm_levels(source)
    if level is None:
        return next(iter(fsms.values()))
    if level not in fsms:
        raise ValueError(f"no FSM at level {level!r}; captured levels: {list(fsms)}")
    return fsms[level]
