"""The runner every evaluator shares: a per-image loop that can stop and resume, and the process's DDP place.

A loop owns one folder: a JSON state file (the images done and skipped, elapsed seconds, and whatever the caller's
``extra_state()`` returns, e.g. metric accumulators), per-image JSONL files appended as images finish, and
``skipped.jsonl``. Snapshots are written atomically every ``snapshot_every`` images and at the end; on resume, the
JSONL lines written after the last snapshot are dropped (those images run again), so an interruption at any
point loses at most ``snapshot_every`` images of work and never counts one twice.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

SKIPPED_FILE = "skipped.jsonl"
STATE_FILE = "eval_state.json"
PER_IMAGE_FILE = "per_image.jsonl"
Progress = bool | Callable[[int, int], None]


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process: the initialised process group's, else ``RANK``/``WORLD_SIZE``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class EvaluationInterrupted(RuntimeError):
    """Raised when a deadline or cancel request stops an evaluation early (its state is saved)."""

    def __init__(self, message: str, *, done: int, total: int) -> None:
        super().__init__(message)
        self.done, self.total = done, total


class SkipSample(Exception):
    """An evaluator's signal that one sample cannot be scored; ``entry`` is its record in ``skipped.jsonl``."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry.get("error", ""))
        self.entry = entry


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def truncate_jsonl(path: Path, keep: set[int]) -> None:
    """Drop per-image lines written after the last snapshot (they will be recomputed)."""
    if not path.is_file():
        return
    lines = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["index"] in keep:
                lines.append(line)
        except (json.JSONDecodeError, KeyError):
            continue  # a line cut by the interruption
    atomic_write_text(path, "".join(ln + "\n" for ln in lines))


class ResumableLoop:
    """Iterate the indices not done yet; record each as done (:meth:`done`) or skipped (:meth:`skip`).

    ``identity``: fields the state file must match to resume (else ``ValueError``: another evaluation's folder).
    ``saved``: the previous run's state (empty on a fresh start), for the caller to restore its accumulators.
    ``progress``: ``True`` for a tqdm bar (when ``show_bar``), or a callback ``(done, total)``. Iteration stops
    when ``deadline_s`` has passed or ``cancel()`` is true; :meth:`close` then raises
    :class:`EvaluationInterrupted` after the final snapshot.
    """

    def __init__(self, folder: Path, state_file: str, *, identity: Mapping[str, Any], indices: Sequence[int],
                 jsonl: Sequence[str] = (), extra_state: Callable[[], dict[str, Any]] = dict,
                 progress: bool | Callable[[int, int], None] = True, show_bar: bool = True,
                 deadline_s: float | None = None, cancel: Callable[[], bool] | None = None,
                 snapshot_every: int = 10) -> None:
        self.folder, self.state_path = folder, folder / state_file
        self.identity, self.extra_state = dict(identity), extra_state
        self.deadline_s, self.cancel, self.snapshot_every = deadline_s, cancel, snapshot_every
        self.progress = progress
        self.total = len(indices)
        self.done_set: set[int] = set()
        self.skipped: list[dict[str, Any]] = []
        self.elapsed = 0.0
        self.saved: dict[str, Any] = {}
        if self.state_path.is_file():
            state = json.loads(self.state_path.read_text())
            if any(state.get(k) != v for k, v in self.identity.items()):
                raise ValueError(f"{self.state_path} belongs to another evaluation ({state.get('models')}, "
                                 f"{state.get('n_total')} images); use another output folder")
            self.saved = state
            self.done_set, self.skipped = set(state["done"]), list(state["skipped"])
            self.elapsed = float(state["elapsed"])
            for f in jsonl:
                truncate_jsonl(folder / f, self.done_set)
        gone = self.done_set | {s["index"] for s in self.skipped}
        self.todo = [i for i in indices if i not in gone]
        self.stopped = False
        self._count = 0
        self._bar = None
        if progress is True and show_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.total - len(self.todo), desc="evaluate", unit="img",
                             dynamic_ncols=True)
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[int]:
        for index in self.todo:
            if (self.deadline_s is not None and time.perf_counter() - self._t0 > self.deadline_s) or \
                    (self.cancel and self.cancel()):
                self.stopped = True
                return
            yield index

    def snapshot(self) -> None:
        now = time.perf_counter()
        self.elapsed, self._t0 = self.elapsed + now - self._t0, now
        atomic_write_text(self.state_path, json.dumps({
            **self.identity, "done": sorted(self.done_set), "skipped": self.skipped, "elapsed": self.elapsed,
            **self.extra_state()}))

    def skip(self, entry: dict[str, Any]) -> None:
        """An unusable sample: reported in ``skipped.jsonl`` and the state, never retried."""
        self.skipped.append(entry)
        with open(self.folder / SKIPPED_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def done(self, index: int) -> None:
        """One image finished (its JSONL lines written and flushed)."""
        self.done_set.add(index)
        self._count += 1
        if self._count % self.snapshot_every == 0:
            self.snapshot()
        if self._bar is not None:
            self._bar.update(1)
        elif callable(self.progress):
            self.progress(len(self.done_set), self.total)

    def close(self) -> None:
        """Final snapshot; :class:`EvaluationInterrupted` when the loop stopped early."""
        self.snapshot()
        if self._bar is not None:
            self._bar.close()
        if self.stopped:
            raise EvaluationInterrupted(f"stopped after {len(self.done_set)} of {self.total} images; run again to "
                                        "resume", done=len(self.done_set), total=self.total)


@dataclass(frozen=True)
class RunSettings:
    """How one evaluation runs, whatever it scores: how many images, precision, progress, snapshots, early stop.

    ``progress``: ``True`` for a tqdm bar, or a callback ``(done, total)``. ``deadline_s`` / ``cancel`` stop early
    with a snapshot (:class:`EvaluationInterrupted`; run again to resume).
    """

    limit: int | None = None
    amp: bool = False
    progress: Progress = True
    snapshot_every: int = 10
    deadline_s: float | None = None
    cancel: Callable[[], bool] | None = None

    def n_total(self, dataset) -> int:
        """How many of the dataset's images this run covers."""
        return len(dataset) if self.limit is None else min(self.limit, len(dataset))

    def loop(self, folder: Path, *, identity: Mapping[str, Any], indices: Sequence[int], jsonl: Sequence[str],
             extra_state: Callable[[], dict[str, Any]], show_bar: bool = True) -> ResumableLoop:
        """The resumable loop over ``indices`` with these settings (state in ``folder/eval_state.json``)."""
        return ResumableLoop(folder, STATE_FILE, identity=identity, indices=indices, jsonl=jsonl,
                             extra_state=extra_state, progress=self.progress, show_bar=show_bar,
                             deadline_s=self.deadline_s, cancel=self.cancel, snapshot_every=self.snapshot_every)
