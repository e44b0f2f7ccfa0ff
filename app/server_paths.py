"""Server paths typed in the browser: off unless allowed, and confined to allowed roots (no Streamlit here).

Two places read a path on the server from the browser: a checkpoint ("Local path" in the sidebar) and a dataset
root (Dataset page). ``from_settings`` decides whether they are on and under which folders:

- ``FAPN_ALLOW_LOCAL_PATHS``: ``auto`` (default) = on only when the server listens on a loopback address,
  ``1`` = on, ``0`` = off; anything else is refused and leaves them off.
- ``FAPN_MODEL_ROOTS`` / ``FAPN_DATA_ROOTS``: folders (``os.pathsep``-separated) that checkpoints / dataset roots
  must lie under. Defaults: the working folder on a loopback server; the project's ``assets/`` (models) and
  ``data/`` (datasets) on a shared one.

A typed path is resolved with every symlink followed and refused unless the result lies under an allowed root;
refused, missing and wrong-kind paths all get the same message, so nothing outside the roots can be probed.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".pkl")
ALLOW_ENV, MODEL_ROOTS_ENV, DATA_ROOTS_ENV = "FAPN_ALLOW_LOCAL_PATHS", "FAPN_MODEL_ROOTS", "FAPN_DATA_ROOTS"
CHECKPOINT_REFUSED = "checkpoint path not allowed or not found (it must be a file under an allowed model root)"
FOLDER_REFUSED = "dataset folder not allowed or not found (it must be a folder under an allowed data root)"


class PathRefused(ValueError):
    """A server path that is disabled, outside the allowed roots, missing or of the wrong kind."""


def is_loopback(address: str | None) -> bool:
    """True for ``localhost`` and loopback IPs (127.0.0.0/8, ::1); unset or empty (= all interfaces) is False."""
    if not address:
        return False
    host = address.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or unix socket: not known to be private
        return False


def _absolute(path: Path, cwd: Path) -> Path:
    return Path(os.path.normpath(path if path.is_absolute() else cwd / path))


def _roots(text: str | None, default: Sequence[Path], cwd: Path) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """(allowed roots, refused entries): the configured roots, or ``default`` when unset; an entry whose ``~user``
    names no user is refused, not raised (the other roots still apply)."""
    if not text:
        items, refused = list(default), []
    else:
        items, refused = [], []
        for entry in (s for s in text.split(os.pathsep) if s.strip()):
            try:
                items.append(Path(entry).expanduser())
            except RuntimeError:  # ~user with no such user
                refused.append(entry)
    return tuple(dict.fromkeys(_absolute(p, cwd) for p in items)), tuple(refused)


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def confine(text: str, roots: Sequence[Path], *, want_dir: bool, refused: str) -> Path:
    """The real path of ``text`` (symlinks resolved) if it is an existing file (or folder) under one of ``roots``.

    A relative ``text`` is taken relative to each root in turn; ``~`` is expanded. Before touching the
    filesystem the path must lie under a root lexically (so nothing outside the roots is even looked up), and
    after resolving every symlink it must still lie under a root. Every failure raises ``PathRefused(refused)``.
    """
    text = (text or "").strip()
    if not text or "\0" in text or not roots:
        raise PathRefused(refused)
    try:
        typed = Path(text).expanduser()
    except RuntimeError:  # ~user with no such user
        raise PathRefused(refused) from None
    lexical_roots = [r for root in roots for r in {root, _real(root)} if r is not None]
    real_roots = [r for r in (_real(root) for root in roots) if r is not None]
    candidates = [typed] if typed.is_absolute() else [root / typed for root in roots]
    for candidate in candidates:
        if not _under(Path(os.path.normpath(candidate)), lexical_roots):
            continue
        real = _real(candidate)
        if real is None or not _under(real, real_roots):
            continue
        if real.is_dir() if want_dir else real.is_file():
            return real
    raise PathRefused(refused)


def _real(path: Path) -> Path | None:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, permission denied, symlink loop
        return None


@dataclass(frozen=True)
class ServerPaths:
    """Whether server paths are on on this server, why, and the folders they are confined to."""

    enabled: bool
    why: str
    address: str | None
    private: bool
    model_roots: tuple[Path, ...]
    data_roots: tuple[Path, ...]
    refused_roots: tuple[str, ...] = ()  # "VARIABLE: entry — why" for each configured root that was refused

    def checkpoint(self, text: str) -> Path:
        """The real path of a checkpoint file under a model root (``PathRefused`` otherwise)."""
        if not self.enabled:
            raise PathRefused(f"server paths are off on this server ({self.why})")
        suffix = Path(text.strip()).suffix.lower()
        if suffix not in CHECKPOINT_SUFFIXES:  # judged from the typed text alone: says nothing about the disk
            raise PathRefused(f"unsupported checkpoint type {suffix!r}: give a .safetensors, .pth, .pt or .pkl path")
        real = confine(text, self.model_roots, want_dir=False, refused=CHECKPOINT_REFUSED)
        if real.suffix.lower() not in CHECKPOINT_SUFFIXES:  # a symlink to some other file
            raise PathRefused(CHECKPOINT_REFUSED)
        return real

    def dataset_folder(self, text: str) -> Path:
        """The real path of a dataset root folder under a data root (``PathRefused`` otherwise)."""
        if not self.enabled:
            raise PathRefused(f"server paths are off on this server ({self.why})")
        return confine(text, self.data_roots, want_dir=True, refused=FOLDER_REFUSED)

    def summary(self) -> str:
        """One line for the UI: on/off, why, and the roots."""
        if not self.enabled:
            return f"Server paths: off ({self.why})."
        models = ", ".join(f"`{r}`" for r in self.model_roots) or "(no model roots)"
        data = ", ".join(f"`{r}`" for r in self.data_roots) or "(no data roots)"
        return f"Server paths: on ({self.why}); checkpoints under {models}; datasets under {data}."

    def refused_summary(self) -> str:
        """One line naming the configured roots that were refused and why (empty when none was)."""
        if not self.refused_roots:
            return ""
        return "Refused root(s), not used: " + "; ".join(self.refused_roots) + "."


def from_settings(env: Mapping[str, str], address: str | None, project: Path, cwd: Path) -> ServerPaths:
    """The policy for a server listening on ``address`` with environment ``env`` (see the module docstring)."""
    private = is_loopback(address)
    where = f"listening on {address}" if address else "listening on all interfaces"
    setting = env.get(ALLOW_ENV, "").strip().lower()
    if setting in ("", "auto"):
        enabled = private
        why = f"{where}: " + ("loopback, a private server" if private else
                              f"a shared server; set {ALLOW_ENV}=1 to allow them under configured roots")
    elif setting == "1":
        enabled, why = True, f"{ALLOW_ENV}=1, {where}"
    elif setting == "0":
        enabled, why = False, f"{ALLOW_ENV}=0"
    else:
        enabled, why = False, f"{ALLOW_ENV}={env[ALLOW_ENV]!r} is not 0, 1 or auto"
    model_default = (cwd,) if private else (project / "assets",)
    data_default = (cwd,) if private else (project / "data",)
    model_roots, bad_models = _roots(env.get(MODEL_ROOTS_ENV), model_default, cwd)
    data_roots, bad_data = _roots(env.get(DATA_ROOTS_ENV), data_default, cwd)
    refused = tuple(f"{var} `{entry}`: its `~user` names no user on this server"
                    for var, bad in ((MODEL_ROOTS_ENV, bad_models), (DATA_ROOTS_ENV, bad_data)) for entry in bad)
    return ServerPaths(enabled, why, address or None, private, model_roots, data_roots, refused)
