"""Attribution maps for segmentation models (captum): Integrated Gradients, LayerGradCAM and Occlusion.

One call, :func:`attribute`, works the same way for FPN and FaPN models (any :class:`Segmentor`), so an app can
show the two side by side. The quantity explained is a scalar per image:

    ``score(x) = mean over the target region R of logits(x)[class_id]``

(:class:`RegionScore`; the mean, not the sum, so that pixel, box and mask targets and models give scores of the
same scale, "one logit"; a sum is ``mean × region_pixels``, which every result reports in ``extra``).

Methods (maps are (H, W) float32 at the input size):

- ``"integrated_gradients"``: captum ``IntegratedGradients`` on the RGB input in 0–255 units from a baseline
  image (``"black"``, ``"blur"`` (Gaussian, ``blur_sigma``), ``"mean"`` (the model's pixel mean), a grey level
  or an RGB colour) with ``n_steps`` Gauss–Legendre points, ``internal_batch_size`` path points per
  forward/backward. Map: attributions summed over the 3 channels, signed. ``extra["delta"]`` is the
  completeness error ``sum(map) − (score(x) − score(baseline))``.
- ``"gradcam"``: captum ``LayerGradCam`` on the module that produces neck level ``level`` (see
  :func:`level_module`), ReLU'd, bilinearly upsampled to the padded input size and cropped to the image.
- ``"occlusion"``: captum ``Occlusion`` with a ``window``×``window`` patch (all channels) moved by ``stride``,
  filled with ``baseline``; map: ``score(x) − score(occluded)`` averaged over the windows covering each pixel
  (positive: the pixel's neighbourhood supports the class).

Progress, deadline and cancellation: captum has no progress callback, so :class:`RegionScore` counts its own
forward calls. Before each call it checks the deadline/cancel flag and reports the fraction of the estimated
work done (cost of a call = batch size, ×3 when gradients are taken; the totals follow captum's batching:
``ceil(n_steps / internal_batch_size)`` gradient batches for IG, one initial + ``ceil(windows / batch)``
forwards for occlusion). The deadline and cancel flag are also checked before every submodule's forward (a
forward pre-hook active only for the calling thread) and, in backward passes, whenever the gradient of a module
output is ready (a tensor hook), so a run stops within about one module's forward or backward of the deadline.
Do not run attributions on one model from two threads at once.
"""

from __future__ import annotations

import math
import operator
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion
from torch import nn

METHODS = ("integrated_gradients", "gradcam", "occlusion")
LEVELS = ("p2", "p3", "p4", "p5")
BASELINES = ("black", "blur", "mean")

BaselineSpec = Union[str, float, Sequence[float]]
CancelSpec = Union[threading.Event, Callable[[], bool], None]


class AttributionInterrupted(RuntimeError):
    """An attribution stopped before it finished (base of the timeout and cancel errors)."""


class AttributionTimeout(AttributionInterrupted, TimeoutError):
    """The run took longer than ``deadline_s``."""


class AttributionCancelled(AttributionInterrupted):
    """The ``cancel`` event was set (or the ``cancel`` callable returned True)."""


@dataclass
class Target:
    """What to explain: class ``class_id`` over one region, given by at most one of

    - ``pixel``: ``(y, x)``;
    - ``box``: ``(y0, x0, y1, x1)``, end-exclusive like slicing (``y0 <= y < y1``), inside the image;
    - ``mask``: boolean (or 0/1 integer) array of the image's shape (H, W).

    None of them: the whole image.
    """

    class_id: int
    pixel: tuple[int, int] | None = None
    box: tuple[int, int, int, int] | None = None
    mask: np.ndarray | torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return "pixel" if self.pixel is not None else "box" if self.box is not None else (
            "mask" if self.mask is not None else "image")

    def region(self, height: int, width: int, num_classes: int | None = None) -> np.ndarray:
        """The validated region as a boolean (H, W) array; ``ValueError`` for a bad target."""
        try:
            c = _as_int(self.class_id)
        except TypeError:
            raise ValueError(f"class_id must be an integer, got {self.class_id!r}") from None
        if c < 0 or (num_classes is not None and c >= num_classes):
            raise ValueError(f"class_id {c} out of range: the model has {num_classes} classes (0..{num_classes - 1})"
                             if num_classes is not None else f"class_id must be >= 0, got {c}")
        given = [k for k in ("pixel", "box", "mask") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of pixel, box, mask; got {given}")
        region = np.zeros((height, width), dtype=bool)
        if self.pixel is not None:
            y, x = _int_tuple(self.pixel, 2, "pixel")
            if not (0 <= y < height and 0 <= x < width):
                raise ValueError(f"pixel (y={y}, x={x}) is outside the {height}x{width} image")
            region[y, x] = True
        elif self.box is not None:
            y0, x0, y1, x1 = _int_tuple(self.box, 4, "box")
            if y1 <= y0 or x1 <= x0:
                raise ValueError(f"empty box (y0={y0}, x0={x0}, y1={y1}, x1={x1}): need y0 < y1 and x0 < x1 "
                                 "(end-exclusive)")
            if y0 < 0 or x0 < 0 or y1 > height or x1 > width:
                raise ValueError(f"box (y0={y0}, x0={x0}, y1={y1}, x1={x1}) is not inside the {height}x{width} "
                                 "image (end-exclusive: 0 <= y0 < y1 <= H, 0 <= x0 < x1 <= W)")
            region[y0:y1, x0:x1] = True
        elif self.mask is not None:
            m = self.mask.detach().cpu().numpy() if isinstance(self.mask, torch.Tensor) else np.asarray(self.mask)
            if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
                raise ValueError(f"mask must be boolean (or 0/1 integers), got dtype {m.dtype}")
            if m.shape != (height, width):
                raise ValueError(f"mask has shape {m.shape}, the image is {(height, width)}")
            region = m.astype(bool)
            if not region.any():
                raise ValueError("empty mask: no pixel selected")
        else:
            region[:] = True
        return region


@dataclass
class AttributionResult:
    """``map``: (H, W) float32; ``extra``: method details (``delta`` for IG, ``score``, ``region_pixels``…)."""

    map: np.ndarray
    method: str
    target: Target
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delta(self) -> float | None:
        """IG completeness error ``sum(map) − (score(x) − score(baseline))`` (None for other methods)."""
        return self.extra.get("delta")


class RegionScore(nn.Module):
    """``forward(x) → (N,)``: mean of ``model(x)[:, class_id]`` over the region (a boolean (H, W) mask).

    ``monitor`` (internal) is told about every call, for progress, deadline and cancellation;
    ``first_scores`` keeps the (detached) output of the first call.
    """

    def __init__(self, model: nn.Module, class_id: int, region: np.ndarray | torch.Tensor,
                 monitor: "_Monitor | None" = None) -> None:
        super().__init__()
        self.model = model
        self.class_id = int(class_id)
        r = torch.as_tensor(np.asarray(region) if not isinstance(region, torch.Tensor) else region).bool()
        ys, xs = torch.nonzero(r, as_tuple=True)
        if ys.numel() == 0:
            raise ValueError("empty region")
        self.bbox = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        y0, x0, y1, x1 = self.bbox
        self.region_pixels = int(ys.numel())
        self.register_buffer("crop_mask", r[y0:y1, x0:x1].clone(), persistent=False)
        self.monitor = monitor
        self.first_scores: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.monitor is not None:
            self.monitor.on_call(x.shape[0], torch.is_grad_enabled())
        y0, x0, y1, x1 = self.bbox
        logits = self.model(x)[:, self.class_id, y0:y1, x0:x1]
        scores = (logits * self.crop_mask.to(logits)).sum(dim=(1, 2)) / self.region_pixels
        if self.first_scores is None:
            self.first_scores = scores.detach()
        return scores


class _Monitor:
    """Progress/deadline/cancel bookkeeping driven by :class:`RegionScore`'s calls and module pre-hooks."""

    def __init__(self, progress: Callable[[float], None] | None, deadline_s: float | None, cancel: CancelSpec,
                 total_cost: float) -> None:
        self.progress = progress
        self.cancel = cancel
        self.start = time.monotonic()
        self.deadline_s = deadline_s
        self.deadline = None if deadline_s is None else self.start + deadline_s
        self.total = max(float(total_cost), 1e-9)
        self.done = 0.0  # cost of the finished calls
        self.running = 0.0  # cost of the call in progress
        self.last: float | None = None
        self.thread = threading.get_ident()

    def check(self) -> None:
        if self.cancel is not None:
            cancelled = self.cancel.is_set() if isinstance(self.cancel, threading.Event) else bool(self.cancel())
            if cancelled:
                raise AttributionCancelled(f"attribution cancelled after {time.monotonic() - self.start:.2f} s "
                                           f"({self.fraction():.0%} done)")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise AttributionTimeout(f"attribution exceeded its deadline of {self.deadline_s:g} s after "
                                     f"{time.monotonic() - self.start:.2f} s ({self.fraction():.0%} done)")

    def fraction(self) -> float:
        return min(self.done / self.total, 0.999)

    def emit(self, value: float) -> None:
        if self.progress is not None and (self.last is None or value > self.last):
            self.last = value
            self.progress(value)

    def on_call(self, batch: int, grad: bool) -> None:
        self.done += self.running
        self.running = batch * (3.0 if grad else 1.0)
        self.check()
        self.emit(self.fraction())

    def module_hook(self, module: nn.Module, args: Any) -> None:
        if threading.get_ident() == self.thread:
            self.check()

    def module_output_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        # Checks during backward too: a gradient hook on each module output of this thread's graph.
        if (threading.get_ident() == self.thread and torch.is_grad_enabled() and isinstance(output, torch.Tensor)
                and output.requires_grad):
            output.register_hook(self._grad_hook)

    def _grad_hook(self, grad: torch.Tensor) -> None:
        self.check()

    def finish(self) -> None:
        self.check()
        self.emit(1.0)


def level_module(model: nn.Module, level: str) -> tuple[str, nn.Module]:
    """The module LayerGradCAM hooks for ``level``, as ``(dotted name, module)``.

    ``"p2".."p5"``: the module whose output *is* that neck level: ``neck.output{L}`` (FPN: L = 2..5, FaPN:
    2..4), else ``neck.lateral{L}`` (FaPN's p5 is its 1×1 lateral conv; note that this tensor also feeds FaPN's
    top-down path, so its gradient includes effects through p4..p2, whereas FPN's ``output5`` feeds only the
    head and p6), else ``neck.layer_{L-1}`` (a MaskFormer pixel decoder, whose levels reach its output only
    through p2's mask features). Any other string is a dotted submodule name, e.g. ``"neck.align3"``.
    """
    if level in LEVELS:
        neck = getattr(model, "neck", None)
        if neck is None:
            raise ValueError("model has no .neck; pass a dotted module name as level")
        lvl = level[1:]
        # MaskFormer's pixel decoder: level p{N+1} is the output of its layer_N (3×3 conv + norm + ReLU)
        for name in (f"output{lvl}", f"lateral{lvl}", f"layer_{int(lvl) - 1}"):
            module = getattr(neck, name, None)
            if isinstance(module, nn.Module):
                return f"neck.{name}", module
        raise ValueError(f"neck {type(neck).__name__} has no output{lvl}, lateral{lvl} or layer_{int(lvl) - 1} "
                         f"module for {level}")
    try:
        return level, model.get_submodule(level)
    except AttributeError:
        raise ValueError(f"unknown level {level!r}: expected one of {LEVELS} or a dotted submodule name") from None


def normalize_map(map: np.ndarray | torch.Tensor, signed: bool | None = None, percentile: float = 99.0) -> np.ndarray:
    """Scale an attribution map for display, float32.

    ``signed=True``: ``map / q`` clipped to [−1, 1]; ``signed=False``: ``|map| / q`` clipped to [0, 1]; ``q`` is
    the ``percentile`` of ``|map|`` (outliers saturate instead of washing out the rest). ``None``: signed when
    the map has negative values. Non-finite values count as 0; an all-zero map stays zero.
    """
    m = map.detach().cpu().numpy() if isinstance(map, torch.Tensor) else np.asarray(map)
    m = np.nan_to_num(m.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if signed is None:
        signed = bool((m < 0).any())
    a = np.abs(m)
    q = float(np.percentile(a, percentile)) if a.size else 0.0
    if q <= 0:
        q = float(a.max()) if a.size else 0.0
    if q <= 0:
        return np.zeros(m.shape, dtype=np.float32)
    out = np.clip(m / q, -1.0, 1.0) if signed else np.clip(a / q, 0.0, 1.0)
    return out.astype(np.float32)


def attribute(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    target: Target,
    method: str = "integrated_gradients",
    *,
    level: str = "p2",
    baseline: BaselineSpec = "black",
    blur_sigma: float = 10.0,
    n_steps: int = 32,
    internal_batch_size: int = 4,
    window: int = 32,
    stride: int = 16,
    progress: Callable[[float], None] | None = None,
    deadline_s: float | None = None,
    cancel: CancelSpec = None,
) -> AttributionResult:
    """Attribution map of ``target`` for one RGB image (H, W, 3) uint8 (or (3, H, W) tensor in 0–255).

    Args:
        method: ``"integrated_gradients"``, ``"gradcam"`` or ``"occlusion"`` (see the module docstring).
        level: GradCAM layer, ``"p2".."p5"`` or a dotted module name (:func:`level_module`).
        baseline: IG start point / occlusion fill: ``"black"``, ``"blur"``, ``"mean"``, a grey level or an RGB
            triple in 0–255.
        blur_sigma: Gaussian sigma in pixels for ``baseline="blur"``.
        n_steps: IG path points (Gauss–Legendre).
        internal_batch_size: images per forward pass (IG path points, occlusion windows): bounds memory.
        window, stride: occlusion patch size and step in pixels (clipped to the image size).
        progress: called with increasing fractions in [0, 1], the last one 1.0.
        deadline_s: seconds allowed; beyond it :class:`AttributionTimeout` is raised.
        cancel: a ``threading.Event`` or a callable returning True to stop (:class:`AttributionCancelled`).

    The model runs in eval mode (restored afterwards), on its device, in its parameters' dtype (``model.double()``
    gives a float64 attribution).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    for name, value in (("n_steps", n_steps), ("internal_batch_size", internal_batch_size), ("window", window),
                        ("stride", stride)):
        try:
            ok = _as_int(value) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if deadline_s is not None and deadline_s < 0:
        raise ValueError(f"deadline_s must be >= 0, got {deadline_s}")
    if not isinstance(target, Target):
        raise TypeError(f"target must be a Target, got {type(target).__name__}")

    device, dtype = _model_device_dtype(model)
    x = _image_tensor(image).to(device, dtype)
    h, w = x.shape[-2:]
    region = target.region(h, w, getattr(model, "num_classes", None))
    layer_name, layer = level_module(model, level) if method == "gradcam" else (None, None)

    # Work estimate in units of "one image forward" (a forward+backward counts 3).
    if method == "integrated_gradients":
        total = 3.0 * n_steps + 2.0
    elif method == "gradcam":
        total = 3.0
    else:
        wh, ww, sh, sw = _occlusion_geometry(h, w, window, stride)
        n_windows = _windows(h, wh, sh) * _windows(w, ww, sw)
        total = 1.0 + n_windows
    monitor = _Monitor(progress, deadline_s, cancel, total)
    scorer = RegionScore(model, target.class_id, region, monitor).to(device)
    modes = [(m, m.training) for m in model.modules()]
    hooks = [m.register_forward_pre_hook(monitor.module_hook) for m in model.modules()]
    hooks += [m.register_forward_hook(monitor.module_output_hook) for m in model.modules()]
    t0 = time.perf_counter()
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            monitor.check()
            if method == "integrated_gradients":
                b = _baseline(model, x, baseline, blur_sigma)
                ig = IntegratedGradients(scorer)
                attr = ig.attribute(x, baselines=b, n_steps=int(n_steps), method="gausslegendre",
                                    internal_batch_size=int(internal_batch_size))
                with torch.no_grad():
                    s = scorer(torch.cat([x, b]))
                a_map = attr[0].sum(0)
                attr_sum = float(attr.detach().double().sum())
                score, base_score = float(s[0]), float(s[1])
                extra = dict(delta=attr_sum - (score - base_score), attribution_sum=attr_sum, score=score,
                             baseline_score=base_score, baseline=_baseline_name(baseline), n_steps=int(n_steps),
                             internal_batch_size=int(internal_batch_size), quadrature="gausslegendre")
            elif method == "gradcam":
                cam = LayerGradCam(scorer, layer).attribute(x, relu_attributions=True)
                feat = cam.detach()
                d = int(getattr(model, "size_divisibility", 1) or 1)
                hp, wp = math.ceil(h / d) * d, math.ceil(w / d) * d
                a_map = F.interpolate(feat, size=(hp, wp), mode="bilinear", align_corners=False)[0, 0, :h, :w]
                a_map = a_map.clamp_min(0)
                extra = dict(level=level, layer=layer_name, feature_size=tuple(feat.shape[-2:]),
                             score=float(scorer.first_scores[0]))
            else:
                fill = _baseline(model, x, baseline, blur_sigma)
                occ = Occlusion(scorer).attribute(
                    x, sliding_window_shapes=(3, wh, ww), strides=(3, sh, sw), baselines=fill,
                    perturbations_per_eval=int(internal_batch_size))
                a_map = occ[0].mean(0)
                # captum's first forward is the unoccluded image
                extra = dict(score=float(scorer.first_scores[0]), window=(wh, ww), stride=(sh, sw),
                             n_windows=n_windows, baseline=_baseline_name(baseline),
                             internal_batch_size=int(internal_batch_size))
        monitor.finish()
    finally:
        for hook in hooks:
            hook.remove()
        for m, mode in modes:
            m.training = mode
    seconds = time.perf_counter() - t0
    extra["region_pixels"] = scorer.region_pixels
    extra["reduction"] = "mean"
    out = a_map.detach().float().cpu().numpy().astype(np.float32)
    return AttributionResult(map=out, method=method, target=target, seconds=seconds, extra=extra)


def _as_int(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("bool is not an integer here")
    if isinstance(value, torch.Tensor):
        value = value.item()
    return operator.index(value)


def _int_tuple(values: Any, n: int, what: str) -> tuple[int, ...]:
    try:
        out = tuple(_as_int(v) for v in values)
    except TypeError:
        raise ValueError(f"{what} must be {n} integers, got {values!r}") from None
    if len(out) != n:
        raise ValueError(f"{what} must be {n} integers, got {values!r}")
    return out


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be an H×W×3 RGB array; got shape {image.shape}")
        return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    if isinstance(image, torch.Tensor):
        x = image.unsqueeze(0) if image.dim() == 3 else image
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"image tensor must be (3, H, W) or (1, 3, H, W) RGB; got {tuple(image.shape)}")
        return x.detach().float()
    raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")


def _baseline_name(baseline: BaselineSpec) -> str | float | tuple[float, ...]:
    if isinstance(baseline, str):
        return baseline
    if isinstance(baseline, (int, float)):
        return float(baseline)
    return tuple(float(v) for v in baseline)


def _baseline(model: nn.Module, x: torch.Tensor, baseline: BaselineSpec, blur_sigma: float) -> torch.Tensor:
    """The baseline image (1, 3, H, W) in RGB 0–255 units."""
    if isinstance(baseline, str):
        if baseline == "black":
            return torch.zeros_like(x)
        if baseline == "blur":
            return gaussian_blur(x, blur_sigma)
        if baseline == "mean":
            mean = getattr(model, "pixel_mean", None)
            if mean is None:
                raise ValueError("baseline='mean' needs a model with pixel_mean")
            rgb = mean.reshape(3).flip(0) if getattr(model, "input_format", "RGB") == "BGR" else mean.reshape(3)
            return rgb.to(x).view(1, 3, 1, 1).expand_as(x).clone()
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}, a grey level or an RGB triple")
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    vals = [float(v) for v in baseline]
    if len(vals) != 3:
        raise ValueError(f"an RGB baseline needs 3 values, got {baseline!r}")
    return torch.tensor(vals, dtype=x.dtype, device=x.device).view(1, 3, 1, 1).expand_as(x).clone()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with replicate padding (radius ``ceil(3σ)``); σ <= 0: a copy."""
    if sigma <= 0:
        return x.clone()
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _occlusion_geometry(h: int, w: int, window: int, stride: int) -> tuple[int, int, int, int]:
    wh, ww = min(int(window), h), min(int(window), w)
    return wh, ww, min(int(stride), wh), min(int(stride), ww)


def _windows(size: int, window: int, stride: int) -> int:
    """Window positions along one axis, as captum's Occlusion counts them."""
    return int(math.ceil((size - window) / stride)) + 1
