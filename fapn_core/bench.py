"""Benchmarks: the deformable conv at FaPN's shapes, whole FPN vs FaPN models, and training steps.

Everything compared is run side by side in one process (interleaved repeats, medians), so ratios hold even on
a machine with other load. FLOPs count multiply-adds as 2 FLOPs; the deformable conv is counted as its dense
3×3 conv plus 9 FLOPs per sampled value (4 bilinear weights × value, accumulate, × mask), which
``torch.utils.flop_counter`` alone would miss.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .models import dcn_ext
from .models.deform import dcn_impl, modulated_deform_conv2d
from .models.zoo import build_model, count_parameters

SIZES = {"512x1024": (512, 1024), "1024x2048": (1024, 2048)}


# ----------------------------------------------------------------------------------------------- FLOPs
def _deform_conv_flops(input_shape, weight_shape, offset_shape, *args, out_shape=None, **kwargs) -> int:
    n, c_in, _, _ = input_shape
    c_out, _, kh, kw = weight_shape
    ho, wo = offset_shape[-2:]
    samples = n * c_in * kh * kw * ho * wo
    return 2 * c_out * samples + 9 * samples


def _addmm_flops(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts ``torchvision::deform_conv2d`` (the reference DCN path) and the
    in-place ``addmm_`` (FaPN's fused 1×1 convs accumulate with it; torch counts only out-of-place ``addmm``)."""
    # FlopCounterMode looks ops up by overload packet and hands the formula shapes, not tensors.
    return FlopCounterMode(display=False, custom_mapping={torch.ops.torchvision.deform_conv2d: _deform_conv_flops,
                                                          torch.ops.aten.addmm_: _addmm_flops})


def _module_flops(model: torch.nn.Module, image_hw: tuple[int, int], batch: int = 1) -> tuple[int, dict[str, int]]:
    """(total FLOPs, FLOPs per module path) of one inference forward on a blank image (reference DCN path so
    the op is visible; paths as ``model.named_modules()`` gives them)."""
    x = torch.zeros(batch, 3, *image_hw, device=next(model.parameters()).device)
    counter = flop_counter()
    # no_grad, not inference_mode: the counter's module tracker hooks parameters passed as module inputs
    # (MaskFormer's query embedding), which needs autograd views
    with torch.no_grad(), dcn_impl("reference"), counter:
        model(x)
    prefix = type(model).__name__ + "."
    per_module = {k[len(prefix):]: int(sum(v.values())) for k, v in counter.get_flop_counts().items()
                  if k.startswith(prefix)}
    return int(counter.get_total_flops()), per_module


def count_flops(model: torch.nn.Module, image_hw: tuple[int, int], batch: int = 1) -> dict[str, int]:
    """FLOPs of one inference forward, total and per top-level part (backbone, neck, head; RPN and ROI heads
    of detectors)."""
    total, per_module = _module_flops(model, image_hw, batch)
    parts = {}
    for part in ("backbone", "neck", "head", "proposal_generator", "roi_heads"):
        if part in per_module or part in ("backbone", "neck", "head"):
            parts[part] = per_module.get(part, 0)
    return {"total": total, **parts}


def count_part_flops(model: torch.nn.Module, image_hw: tuple[int, int],
                     parts: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """FLOPs of one inference forward per labelled part (:func:`fapn_core.models.parts.model_parts`), the
    ``total``, and ``rest``: what no part's module runs (box decoding, NMS, post-processing, kernel fusion …)."""
    total, per_module = _module_flops(model, image_hw)
    out = {label: sum(per_module.get(p, 0) for p in paths) for label, paths in parts.items()}
    out["rest"] = total - sum(out.values())
    out["total"] = total
    return out


# ------------------------------------------------------------------------------------------ timing utils
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                        device: torch.device | None = None) -> dict[str, float]:
    """Median seconds of each function, running them round-robin so load affects all alike."""
    device = device or torch.device("cpu")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _peak_rss_reset() -> None:
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def _peak_rss_mb() -> float | None:
    with contextlib.suppress(OSError):
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


# --------------------------------------------------------------------------------------------- DCN bench
@dataclass
class DCNRow:
    shape: str
    ref_fwd_ms: float
    fast_fwd_ms: float
    dense_fwd_ms: float
    ref_fwdbwd_ms: float
    fast_fwdbwd_ms: float
    dense_fwdbwd_ms: float
    cpp_fwd_ms: float = float("nan")  # the compiled CPU forward; NaN where it is not built or not a CPU run

    @property
    def best_fwd_ms(self) -> float:
        """What ``impl="auto"`` runs for inference: the compiled forward where it exists, else the fast path."""
        return self.fast_fwd_ms if math.isnan(self.cpp_fwd_ms) else min(self.fast_fwd_ms, self.cpp_fwd_ms)

    @property
    def fwd_speedup(self) -> float:
        return self.ref_fwd_ms / self.best_fwd_ms

    @property
    def fwdbwd_speedup(self) -> float:
        return self.ref_fwdbwd_ms / self.fast_fwdbwd_ms


def dcn_shapes(channels: Sequence[int] = (128, 256), sizes: Sequence[str] = ("512x1024", "1024x2048"),
               levels: Sequence[int] = (2, 3, 4)) -> list[tuple[int, int, int]]:
    """(C, h, w) of the FAM's deformable conv at p2/p3/p4 for the given input sizes."""
    out = []
    for size in sizes:
        h, w = SIZES[size]
        for c in channels:
            for lvl in levels:
                out.append((c, h // 2 ** lvl, w // 2 ** lvl))
    return out


def bench_dcn(shapes: Iterable[tuple[int, int, int]], *, batch: int = 1, repeats: int = 5,
              backward: bool = True, device: str = "cpu", max_elements: int = 2 ** 31,
              progress: Callable[[str], None] | None = None) -> list[DCNRow]:
    """Reference (torchvision) vs fast (and compiled, where built) DCN vs dense 3×3 conv, medians in ms."""
    dev = torch.device(device)
    fwd_impls = ["reference", "fast", "dense"] + (["cpp"] if dev.type == "cpu" and dcn_ext.load() else [])
    rows = []
    gen = torch.Generator().manual_seed(0)
    for c, h, w in shapes:
        label = f"C={c} {h}x{w} N={batch}"
        if progress:
            progress(label)
        x = torch.randn(batch, c, h, w, generator=gen).to(dev)
        off = (torch.randn(batch, 144, h, w, generator=gen) * 2).to(dev)
        mask = torch.rand(batch, 72, h, w, generator=gen).to(dev)
        wt = (torch.randn(c, c, 3, 3, generator=gen) * 0.02).to(dev)
        b = torch.zeros(c, device=dev)

        def fwd(impl: str) -> Callable[[], Any]:
            def run():
                with torch.inference_mode():
                    if impl == "dense":
                        return F.conv2d(x, wt, b, padding=1)
                    return modulated_deform_conv2d(x, off, mask, wt, b, impl=impl)
            return run

        def fwdbwd(impl: str) -> Callable[[], Any]:
            def run():
                xs = x.detach().requires_grad_()
                ws = wt.detach().requires_grad_()
                if impl == "dense":
                    y = F.conv2d(xs, ws, b, padding=1)
                    y.sum().backward()
                    return
                o, m = off.detach().requires_grad_(), mask.detach().requires_grad_()
                y = modulated_deform_conv2d(xs, o, m, ws, b, impl=impl)
                y.sum().backward()
            return run

        f = interleaved_medians({k: fwd(k) for k in fwd_impls}, repeats, device=dev)
        fb = {"reference": float("nan"), "fast": float("nan"), "dense": float("nan")}
        if backward:
            fb = interleaved_medians({k: fwdbwd(k) for k in ("reference", "fast", "dense")},
                                     max(2, repeats // 2), device=dev)
        rows.append(DCNRow(label, *(1000 * f[k] for k in ("reference", "fast", "dense")),
                           *(1000 * fb[k] for k in ("reference", "fast", "dense")),
                           1000 * f.get("cpp", float("nan"))))
    return rows


# ------------------------------------------------------------------------------------------- model bench
@dataclass
class ModelRow:
    model: str
    size: str
    params_m: float
    gflops: float
    latency_ms: float
    peak_mem_mb: float | None


# RMS of the learned offsets (feature pixels) of the bundled fapn_r18_semfpn per FAM, on a 512×1024 sample.
TRAINED_OFFSET_RMS = {2: 12.4, 3: 30.3, 4: 16.9}


def set_trained_like_offsets(model: torch.nn.Module, x: torch.Tensor,
                             rms: dict[int, float] | None = None, rounds: int = 3) -> dict[int, float]:
    """Make a freshly initialised FaPN's offsets as large as trained ones, for honest timing.

    The official init zeroes every ``conv_offset_mask``, so an untrained FaPN samples on the regular grid — the
    cheapest case for a deformable conv (perfect cache locality). This draws random offset weights and rescales
    them, a few rounds top-down, until each level's offsets on ``x`` have the trained RMS (``TRAINED_OFFSET_RMS``).
    The offsets stay spatially structured (they are a conv of the features). Returns the RMS reached per level.
    """
    from .models.deform import ModulatedDeformConv

    rms = rms or TRAINED_OFFSET_RMS
    dcns: dict[int, ModulatedDeformConv] = {}
    for name, m in model.named_modules():
        if isinstance(m, ModulatedDeformConv):
            level = next((int(part[-1]) for part in name.split(".") if part[:-1] == "align" and part[-1].isdigit()), 2)
            dcns[level] = m
    if not dcns:
        return {}
    gen = torch.Generator().manual_seed(0)
    seen: dict[int, float] = {}
    hooks = []
    for level, m in dcns.items():
        w = m.conv_offset_mask.weight
        n_off = w.shape[0] * 2 // 3
        with torch.no_grad():
            w[:n_off].copy_(torch.randn(w[:n_off].shape, generator=gen).to(w))
        def record(mod, inputs, out, level=level, n_off=n_off):
            seen[level] = float(out[:, :n_off].pow(2).mean().sqrt())
        hooks.append(m.conv_offset_mask.register_forward_hook(record))
    try:
        for _ in range(rounds):
            with torch.inference_mode():
                model(x)
            with torch.no_grad():
                for level, m in dcns.items():
                    n_off = m.conv_offset_mask.weight.shape[0] * 2 // 3
                    target = rms.get(level, rms[min(rms)])
                    m.conv_offset_mask.weight[:n_off] *= target / max(seen[level], 1e-12)
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return dict(seen)


def bench_models(names: Sequence[str], sizes: Sequence[str], *, num_classes: int = 19, repeats: int = 3,
                 device: str = "cpu", amp: bool = False, channels_last: bool = False, trained_offsets: bool = True,
                 progress: Callable[[str], None] | None = None,
                 prepare: Callable[[torch.nn.Module, tuple[int, int]], Any] | None = None,
                 **overrides: Any) -> list[ModelRow]:
    """Inference latency (median), peak memory, params and FLOPs of each model at each input size.

    ``trained_offsets``: give FaPN models offsets as large as trained ones (:func:`set_trained_like_offsets`)
    instead of the all-zero offsets of the official initialisation. ``prepare(model, (H, W))`` runs once per
    model and size before timing (e.g. :func:`fapn_core.bench_stages.fix_proposals`).
    """
    dev = torch.device(device)
    rows = []
    models = {n: build_model(n, num_classes=num_classes, **overrides).to(dev).eval() for n in names}
    if channels_last:
        models = {n: m.to(memory_format=torch.channels_last) for n, m in models.items()}
    for size in sizes:
        hw = SIZES[size] if size in SIZES else tuple(int(v) for v in size.split("x"))
        # a synthetic street scene, not noise: learned-like offsets then vary smoothly as they do on images
        from .data.synthetic import make_sample

        x = torch.from_numpy(make_sample(0, seed=2, size=hw).image).permute(2, 0, 1)[None].float().to(dev)
        handles = []
        for m in models.values():
            if trained_offsets:
                set_trained_like_offsets(m, x)
            if prepare is not None:
                handles.append(prepare(m, hw))

        def runner(m: torch.nn.Module) -> Callable[[], Any]:
            def run():
                with torch.inference_mode():
                    if amp and dev.type == "cuda":
                        with torch.autocast("cuda", dtype=torch.bfloat16):
                            return m(x)
                    return m(x)
            return run

        if progress:
            progress(size)
        lat = interleaved_medians({n: runner(m) for n, m in models.items()}, repeats, device=dev)
        for n, m in models.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                runner(m)()
                peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20
            else:
                _peak_rss_reset()
                runner(m)()
                peak = _peak_rss_mb()
            flops = count_flops(m, hw)["total"]
            rows.append(ModelRow(n, size, count_parameters(m) / 1e6, flops / 1e9, lat[n] * 1000, peak))
        for h in handles:
            if hasattr(h, "remove"):
                h.remove()
    return rows


def bench_train_step(names: Sequence[str], *, batch: int = 8, crop: tuple[int, int] = (256, 256),
                     num_classes: int = 10, repeats: int = 3, device: str = "cpu",
                     **overrides: Any) -> dict[str, float]:
    """Median seconds of one optimiser step (forward, backward, AdamW) per model, interleaved."""
    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, *crop), dtype=torch.float32, device=dev)
    y = torch.randint(0, num_classes, (batch, *crop), device=dev)
    fns = {}
    for n in names:
        m = build_model(n, num_classes=num_classes, backbone_norm="BN", **overrides).to(dev).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

        def step(m=m, opt=opt):
            loss = sum(m(x, y).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        fns[n] = step
    return interleaved_medians(fns, repeats, device=dev)


# ------------------------------------------------------------------------------------------------ report
def format_dcn_table(rows: Sequence[DCNRow]) -> str:
    """Forward speed-up is torchvision over the best inference path (compiled where built); f+b uses ``fast``."""
    head = ("| shape | torchvision fwd ms | fast fwd ms | compiled fwd ms | dense 3×3 fwd ms | fwd speed-up "
            "| DCN / dense fwd | torchvision f+b ms | fast f+b ms | dense f+b ms | f+b speed-up |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def ms(v: float, unit: str = "") -> str:
        return "–" if math.isnan(v) else f"{v:.2f}{unit}" if unit else f"{v:.1f}"

    for r in rows:
        lines.append(f"| {r.shape} | {ms(r.ref_fwd_ms)} | {ms(r.fast_fwd_ms)} | {ms(r.cpp_fwd_ms)} | "
                     f"{ms(r.dense_fwd_ms)} | {ms(r.fwd_speedup, '×')} | {ms(r.best_fwd_ms / r.dense_fwd_ms, '×')} | "
                     f"{ms(r.ref_fwdbwd_ms)} | {ms(r.fast_fwdbwd_ms)} | {ms(r.dense_fwdbwd_ms)} | "
                     f"{ms(r.fwdbwd_speedup, '×')} |")
    return "\n".join(lines)


def format_model_table(rows: Sequence[ModelRow]) -> str:
    lines = ["| model | input | params (M) | GFLOPs | latency ms | peak mem MB |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        mem = "" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.0f}"
        lines.append(f"| {r.model} | {r.size} | {r.params_m:.2f} | {r.gflops:.1f} | {r.latency_ms:.0f} | {mem} |")
    return "\n".join(lines)


def ratio_table(rows: Sequence[ModelRow]) -> str:
    """FaPN/FPN latency ratio beside the FLOPs ratio, per backbone/head and size."""
    lines = ["| pair | input | latency ratio | FLOPs ratio | latency / FLOPs ratio |", "|---|---|---:|---:|---:|"]
    by = {(r.model, r.size): r for r in rows}
    for (name, size), r in by.items():
        if not name.startswith("fapn_"):
            continue
        base = by.get(("fpn_" + name[len("fapn_"):], size))
        if base is None:
            continue
        lat, fl = r.latency_ms / base.latency_ms, r.gflops / base.gflops
        lines.append(f"| {name} / {base.model} | {size} | {lat:.2f} | {fl:.2f} | {lat / fl:.2f} |")
    return "\n".join(lines)


def hardware_string(device: str) -> str:
    """The machine in words, for benchmark headers."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"
