"""Build and load the compiled CPU deformable conv (``dcn_cpu.cpp``), with a clean fallback when it is absent.

The extension is built once, ahead of use (``fapn build-ext``; the README's set-up commands run it), into
``$FAPN_EXT_DIR`` (default: ``<sys.prefix>/fapn_ext``, i.e. inside the virtualenv). Its file name carries a hash of
the source, the torch version and the CPU, so a stale or foreign build is never loaded. Inference never compiles
anything: if no matching build exists, :func:`load` returns ``None`` and the model uses the PyTorch fast path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import threading
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).with_name("dcn_cpu.cpp")
CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-trapping-math", "-mprefer-vector-width=512"]
LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_module: ModuleType | None = None
_tried = False
_reason = ""


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def module_name() -> str:
    """``fapn_dcn_cpu_<hash>`` of the source, compile flags, torch version and CPU features."""
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CFLAGS).encode(), torch.__version__.encode(),
                 platform.machine().encode(), _cpu_signature().encode()):
        h.update(part)
    return f"fapn_dcn_cpu_{h.hexdigest()[:12]}"


def build_dir() -> Path:
    return Path(os.environ.get("FAPN_EXT_DIR") or Path(sys.prefix) / "fapn_ext") / module_name()


def _built_library() -> Path | None:
    d = build_dir()
    hits = sorted(d.glob(f"{module_name()}*.so")) if d.is_dir() else []
    return hits[0] if hits else None


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name(), path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(verbose: bool = False) -> Path:
    """Compile the extension (about a minute) unless a matching build exists; returns the library's path."""
    global _tried
    existing = _built_library()
    if existing is not None:
        return existing
    from torch.utils.cpp_extension import load as cpp_load

    d = build_dir()
    d.mkdir(parents=True, exist_ok=True)
    # ninja (a pip requirement) lives beside this interpreter, which need not be on PATH
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    cpp_load(name=module_name(), sources=[str(SOURCE)], build_directory=str(d), extra_cflags=CFLAGS,
             extra_ldflags=LDFLAGS, verbose=verbose)
    path = _built_library()
    if path is None:
        raise RuntimeError(f"build finished but no library found in {d}")
    with _lock:
        _tried = False  # let load() pick up the new build
    return path


def load() -> ModuleType | None:
    """The compiled module if a matching build exists (imported once, thread-safe), else ``None``."""
    global _module, _tried, _reason
    if _tried:
        return _module
    with _lock:
        if not _tried:
            path = _built_library()
            if path is None:
                _reason = f"not built for this source/torch/CPU (run `fapn build-ext`; looked in {build_dir()})"
            else:
                try:
                    _module = _import(path)
                    _reason = f"loaded {path}"
                except (ImportError, OSError) as exc:  # e.g. a library built against another libtorch
                    _module, _reason = None, f"failed to load {path}: {exc}"
            _tried = True
    return _module


def status() -> str:
    """One line saying whether the compiled DCN is in use and why not."""
    load()
    return ("compiled CPU DCN: " + _reason) if _module is not None else ("compiled CPU DCN unavailable: " + _reason)
