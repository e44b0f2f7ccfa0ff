"""Saved prediction PNGs of a dataset (made elsewhere: the official code, another framework).

A prediction set is a folder searched recursively for ``*.png``. A file belongs to the sample whose
name (``dataset.sample_name(i)``; Cityscapes: ``<city>_<seq>_<frame>``) is its stem or a prefix of its
stem followed by ``_``: ``<name>.png``, ``<name>_pred.png`` (detectron2), ``<name>_leftImg8bit.png``
(the official results naming). A file matching several names goes to the longest. Ids are

* ``labelIds``: Cityscapes label ids 0..33 (the official results format); void ids are void predictions;
* ``trainIds``: the dataset's class ids (Cityscapes trainIds 0..18), 255 = void;
* ``auto``: for Cityscapes, decided per set from its first 20 readable files: an id in 19..33 (labelIds
  only) -> labelIds, else 255 or a void label id (0..6, 9, 10, 14, 15, 16, 18) -> trainIds, else an
  error asking for the format; class ids for every other dataset.

Missing, ambiguous, extra, unreadable, mis-sized and out-of-range files are reported, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import list_dir, read_index_map
from .palettes import IGNORE_INDEX

ID_FORMATS = ("auto", "labelIds", "trainIds")
_SHOWN = 20  # file names listed per problem kind in a report


class PredictionError(ValueError):
    """A prediction file of one sample that cannot be scored (missing, ambiguous, unreadable, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _png_files(root: Path) -> list[Path]:
    out = []
    for d, _, names in os.walk(root):
        out += [Path(d) / n for n in names if n.lower().endswith(".png")]
    return sorted(out)


def match_files(names: list[str], files: list[Path]) -> tuple[dict[int, list[Path]], list[Path]]:
    """Assign files to sample names (stem == name or stem starts with ``name + '_'``; longest name wins).

    Returns ``{sample index: files}`` and the files that match no name.
    """
    index: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        index.setdefault(n, []).append(i)
    assigned: dict[int, list[Path]] = {}
    extra = []
    for f in files:
        stem = f.name[: -len(".png")]
        keys = [stem] + [stem[:j] for j in range(len(stem) - 1, 0, -1) if stem[j] == "_"]
        hit = next((k for k in keys if k in index), None)  # longest first
        if hit is None:
            extra.append(f)
            continue
        for i in index[hit]:
            assigned.setdefault(i, []).append(f)
    return assigned, extra


@dataclass
class PredictionSet:
    """The prediction files of one method for a dataset; ``read`` decodes one sample's file."""

    label: str
    root: Path
    ids: str  # "labelIds" or "trainIds" (class ids of a non-Cityscapes dataset)
    num_classes: int
    files: dict[int, Path]
    missing: list[int]
    ambiguous: dict[int, list[Path]]
    extra: list[Path]
    names: list[str]
    label_id_to_class: dict[int, int] | None = None

    def read(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """HxW int64 class ids of sample ``index`` (255 = void). Raises ``PredictionError``."""
        name = self.names[index]
        if index in self.ambiguous:
            raise PredictionError("ambiguous", f"{self.label}: several prediction files for {name}: "
                                  + ", ".join(p.name for p in self.ambiguous[index]))
        path = self.files.get(index)
        if path is None:
            raise PredictionError("missing", f"{self.label}: no prediction file for {name} in {self.root}")
        try:
            raw = read_index_map(path, "prediction")
        except (ValueError, OSError) as e:
            raise PredictionError("unreadable", f"{self.label}: {e}") from None
        if raw.shape != tuple(shape):
            raise PredictionError("size", f"{self.label}: prediction {path} is {raw.shape[1]}x{raw.shape[0]}, "
                                  f"the image is {shape[1]}x{shape[0]}")
        return self.decode(raw, path)

    def decode(self, raw: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
        """Raw file ids -> class ids (255 = void); out-of-range values raise ``PredictionError``."""
        if self.ids == "labelIds":
            from .cityscapes import prediction_label_ids_to_train_ids

            try:
                return prediction_label_ids_to_train_ids(raw, path)
            except ValueError as e:
                raise PredictionError("values", f"{self.label}: {e}") from None
        bad = np.unique(raw[((raw < 0) | (raw >= self.num_classes)) & (raw != IGNORE_INDEX)])
        if bad.size:
            what = "trainIds" if self.label_id_to_class is not None else "class ids"
            raise PredictionError("values", f"{self.label}: prediction {path} has values {bad[:20].tolist()} that "
                                  f"are not {what} (0..{self.num_classes - 1}, {IGNORE_INDEX} = void)")
        return raw

    def report(self, skipped: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """JSON-safe summary: counts and (the first few) names of each kind of problem.

        ``skipped``: an evaluation's skipped samples; their ``kind`` of this set's unreadable, mis-sized
        and out-of-range files are counted (missing, ambiguous and extra cover the whole dataset).
        """
        def short(items: list[str]) -> list[str]:
            return items[:_SHOWN] + ([f"... ({len(items)} in all)"] if len(items) > _SHOWN else [])

        out: dict[str, Any] = {
            "dir": str(self.root), "ids": self.ids, "samples": len(self.names),
            "matched": len(self.files), "missing": len(self.missing), "ambiguous": len(self.ambiguous),
            "extra": len(self.extra),
            "missing_samples": short([self.names[i] for i in self.missing]),
            "ambiguous_samples": short([f"{self.names[i]}: " + ", ".join(p.name for p in fs)
                                        for i, fs in self.ambiguous.items()]),
            "extra_files": short([str(p.relative_to(self.root)) for p in self.extra]),
        }
        mine = [s for s in skipped if s.get("predictions") == self.label]
        for kind in ("unreadable", "size", "values"):
            msgs = [s["error"] for s in mine if s.get("kind") == kind]
            out[kind] = len(msgs)
            out[f"{kind}_files"] = short(msgs)
        return out


def _decide_ids(pset: PredictionSet, probe: int = 20) -> str:
    """'labelIds' or 'trainIds' for a Cityscapes set, from its first ``probe`` readable files.

    An id in 19..33 exists only in labelIds, so one such file decides labelIds; otherwise 255 or a void
    label id (0..6, 9, 10, 14, 15, 16, 18: all valid trainIds) decides trainIds.
    """
    void_label_ids = {lid for lid in range(19) if lid not in pset.label_id_to_class}  # type: ignore[operator]
    train_evidence, read = False, 0
    for i in sorted(pset.files):
        if read == probe:
            break
        try:
            values = set(np.unique(read_index_map(pset.files[i], "prediction")).tolist())
        except (ValueError, OSError):
            continue  # reported when the sample is scored
        read += 1
        if values & set(range(19, 34)):
            return "labelIds"
        train_evidence |= bool(values & (void_label_ids | {IGNORE_INDEX}))
    if train_evidence:
        return "trainIds"
    raise ValueError(f"cannot tell whether the predictions in {pset.root} are Cityscapes labelIds or trainIds "
                     "(no file has an id that only one of them uses); pass ids='labelIds' or 'trainIds' "
                     "(fapn evaluate --prediction-ids)")


def open_predictions(dataset, label: str, root: str | os.PathLike, ids: str = "auto") -> PredictionSet:
    """Index the prediction PNGs under ``root`` for the samples of ``dataset`` (see the module doc).

    Raises ``FileNotFoundError`` when ``root`` is not a folder and ``ValueError`` when no file matches a
    sample, or the id format is unknown or cannot be decided.
    """
    if ids not in ID_FORMATS:
        raise ValueError(f"unknown prediction id format {ids!r}; expected one of {', '.join(ID_FORMATS)}")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"prediction folder of {label} not found: {path}")
    lut = getattr(dataset, "label_id_to_class", None)
    if ids == "labelIds" and lut is None:
        raise ValueError(f"{type(dataset).__name__} has no label ids; its predictions hold class ids "
                         "(ids='trainIds' or 'auto')")
    names = [dataset.sample_name(i) for i in range(len(dataset))]
    assigned, extra = match_files(names, _png_files(path))
    if not assigned:
        example = f"{names[0]}_pred.png" if names else "<name>_pred.png"
        raise ValueError(f"no prediction file of {label} in {path} matches a sample of the dataset (expected "
                         f"<name>.png or <name>_*.png, e.g. {example}); found: {list_dir(path)}")
    files = {i: fs[0] for i, fs in assigned.items() if len(fs) == 1}
    ambiguous = {i: fs for i, fs in assigned.items() if len(fs) > 1}
    missing = [i for i in range(len(names)) if i not in assigned]
    pset = PredictionSet(label, path, "trainIds" if ids == "auto" else ids, int(dataset.num_classes), files,
                         missing, ambiguous, extra, names, None if lut is None else dict(lut))
    if ids == "auto" and lut is not None:
        pset.ids = _decide_ids(pset)
    return pset
