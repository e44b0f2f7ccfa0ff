"""Capture what FaPN's modules do in one forward pass: FAM offsets and masks, FSM importances, features.

Hooks only read tensors; the model's outputs are unchanged. Only what is asked for is kept, cropped to the
image's valid region (padding removed) and moved to CPU as numpy.

Offset layout (official DCNv2, see :mod:`fapn_core.models.deform`): raw channel ``2·(g·9+k)`` is ``dy`` and
``2·(g·9+k)+1`` is ``dx`` of group ``g``, kernel point ``k`` (row-major 3×3); in feature-map pixels.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn

from .models.deform import ModulatedDeformConv
from .models.maskformer.inference import scores_to_probabilities
from .models.maskformer.pixel_decoder import MaskFormerFeatureAlign, PixelDecoder
from .models.necks import AlignedFPN, FeatureAlign, FeatureSelection
from .models.panopticfcn.captures import PanopticFCNMaps
from .models.rcnn.detector import DetectionResult

CAPTURABLE = ("offsets", "attention", "fsm_inputs", "features", "fam_features", "queries", "positions")


@dataclass
class FAMCapture:
    """One FAM level of one image.

    ``offsets``: (G, K, 2, h, w) float32, (dy, dx) in feature pixels; ``mask``: (G, K, h, w) in [0, 1].
    ``feat_up`` (upsampled coarse input), ``lateral`` (FSM/lateral output) and ``aligned`` (FAM output):
    (C, h, w) when ``fam_features`` was captured.
    """

    level: str
    stride: int
    offsets: np.ndarray
    mask: np.ndarray
    feat_up: np.ndarray | None = None
    lateral: np.ndarray | None = None
    aligned: np.ndarray | None = None

    @property
    def groups(self) -> int:
        return self.offsets.shape[0]

    @property
    def kernel_points(self) -> int:
        return self.offsets.shape[1]

    def offsets_image_px(self) -> np.ndarray:
        """Offsets in input-image pixels (feature pixels × stride)."""
        return self.offsets * float(self.stride)

    def field(
        self, group: int | None = None, point: int | None = None, *, weighted: bool = False, image_px: bool = True
    ) -> np.ndarray:
        """Displacement field (2, h, w) = (dy, dx): one (group, point) or the mean over the unselected ones.

        ``weighted``: mean weighted by the modulation masks (points the DCN switches off count less).
        """
        off = self.offsets_image_px() if image_px else self.offsets
        m = self.mask
        if group is not None:
            off, m = off[group:group + 1], m[group:group + 1]
        if point is not None:
            off, m = off[:, point:point + 1], m[:, point:point + 1]
        if weighted:
            w = m[:, :, None]
            return (off * w).sum(axis=(0, 1)) / np.maximum(w.sum(axis=(0, 1)), 1e-12)
        return off.mean(axis=(0, 1))

    def magnitude(self, group: int | None = None, point: int | None = None, *, weighted: bool = False,
                  image_px: bool = True) -> np.ndarray:
        """|field| (h, w)."""
        f = self.field(group, point, weighted=weighted, image_px=image_px)
        return np.hypot(f[0], f[1])


@dataclass
class FSMCapture:
    """FSM channel importances (sigmoid output) of one level of one image, shape (C_in,); ``inputs``: the
    feature they weigh (backbone ``res_L``, (C_in, h, w)) when ``fsm_inputs`` was captured."""

    level: str
    attention: np.ndarray
    inputs: np.ndarray | None = None

    def top_k(self, k: int) -> np.ndarray:
        """Indices of the ``k`` most important channels, most important first."""
        return np.argsort(-self.attention, kind="stable")[:k]


@dataclass
class QueryCapture:
    """MaskFormer's per-query predictions for one image (the ``queries`` capture).

    ``class_probs``: (Q, K+1) softmax over the K classes and "no object" (last); ``mask_logits``: (Q, h, w) at
    ``stride`` (4) over the image's valid region. ``sem_seg = Σ_q class_probs[q, :K] · sigmoid(mask_logits[q])``
    (upsampled to the image).
    """

    class_probs: np.ndarray
    mask_logits: np.ndarray
    stride: int = 4

    @property
    def num_queries(self) -> int:
        return self.class_probs.shape[0]

    def query_classes(self) -> np.ndarray:
        """(Q,) most likely class of each query; K (= num classes) means "no object"."""
        return self.class_probs.argmax(1)

    def owners(self) -> np.ndarray:
        """(h, w) which query owns each pixel: argmax_q of (its best real-class probability) · sigmoid(mask), as in
        MaskFormer's panoptic inference (no-object probability excluded)."""
        score = self.class_probs[:, :-1].max(1)
        masks = 0.5 * (1.0 + np.tanh(0.5 * self.mask_logits))  # sigmoid without overflow warnings
        return (score[:, None, None] * masks).argmax(0)


@dataclass
class Captures:
    """Everything captured for one image. ``positions``: a PanopticFCN's centre heatmaps, kept peaks, region maps
    and kernel-fusion decisions (the ``positions`` capture; ``None`` for other models)."""

    fam: dict[str, FAMCapture] = field(default_factory=dict)
    fsm: dict[str, FSMCapture] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    has_fam: bool = False
    has_fsm: bool = False
    neck: str = ""
    queries: QueryCapture | None = None
    positions: PanopticFCNMaps | None = None

    def explain_missing(self) -> str | None:
        """Why a view has nothing to show, in words (``None`` when the model has both modules)."""
        if self.has_fam and self.has_fsm:
            return None
        missing = [n for n, has in (("FAM (deformable alignment)", self.has_fam),
                                    ("FSM (feature selection)", self.has_fsm)) if not has]
        return f"the {self.neck or 'model'} neck has no {' and no '.join(missing)}"


def neck_modules(model: nn.Module) -> tuple[dict[str, FeatureAlign | MaskFormerFeatureAlign],
                                             dict[str, FeatureSelection]]:
    """FAM and FSM (or SE) modules of a model's neck (or MaskFormer pixel decoder: ``align_N`` and an FSM/SE
    ``adapter_N`` are level ``p{N+1}``)."""
    neck = getattr(model, "neck", model)
    fams: dict[str, FeatureAlign | MaskFormerFeatureAlign] = {}
    fsms: dict[str, FeatureSelection] = {}
    if isinstance(neck, PixelDecoder):
        for n in (1, 2, 3):
            mod = getattr(neck, f"align_{n}", None)
            if isinstance(mod, MaskFormerFeatureAlign):
                fams[f"p{n + 1}"] = mod
            adapter = getattr(neck, f"adapter_{n}", None)
            if isinstance(adapter, FeatureSelection):
                fsms[f"p{n + 1}"] = adapter
    if isinstance(neck, AlignedFPN):
        for lvl in neck.levels[:-1]:
            mod = getattr(neck, f"align{lvl}")
            if isinstance(mod, FeatureAlign):
                fams[f"p{lvl}"] = mod
            lateral = getattr(mod, "lateral", None)
            if isinstance(lateral, FeatureSelection):
                fsms[f"p{lvl}"] = lateral
    return fams, fsms


def _valid(t: torch.Tensor, hw: tuple[int, int], stride: int) -> torch.Tensor:
    h, w = (math.ceil(hw[0] / stride), math.ceil(hw[1] / stride))
    return t[..., :h, :w]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


class CaptureHooks:
    """Context manager that records neck internals during a forward pass.

    >>> with CaptureHooks(model, ("offsets", "attention")) as hooks:
    ...     logits = model(images)
    >>> caps = hooks.captures(image_size=(h, w))  # list, one per image in the batch
    """

    def __init__(self, model: nn.Module, what: Iterable[str] = ("offsets", "attention")) -> None:
        self.what = set(what)
        unknown = self.what - set(CAPTURABLE)
        if unknown:
            raise ValueError(f"cannot capture {sorted(unknown)}; choose from {CAPTURABLE}")
        self.model = model
        self.fams, self.fsms = neck_modules(model)
        self._raw: dict[str, dict[str, torch.Tensor]] = {}
        self._handles: list = []
        neck = getattr(model, "neck", model)
        strides = {k: v.stride for k, v in neck.output_shape().items()} if hasattr(neck, "output_shape") else {}
        self.strides = strides

    def _store(self, level: str, key: str, value: torch.Tensor) -> None:
        self._raw.setdefault(level, {})[key] = value.detach()

    def __enter__(self) -> "CaptureHooks":
        for level, fam in self.fams.items():
            if "offsets" in self.what:
                self._handles.append(fam.dcn.conv_offset_mask.register_forward_hook(
                    lambda m, i, o, lv=level: self._store(lv, "raw", o)))
            if "fam_features" in self.what:
                self._handles.append(fam.upsample.register_forward_hook(
                    lambda m, i, o, lv=level: self._store(lv, "feat_up", o)))
                if hasattr(fam, "lateral"):
                    self._handles.append(fam.lateral.register_forward_hook(
                        lambda m, i, o, lv=level: self._store(lv, "lateral", o)))
                else:  # MaskFormer's FAM receives the lateral (its adapter's output) as its first input
                    self._handles.append(fam.register_forward_pre_hook(
                        lambda m, args, lv=level: self._store(lv, "lateral", args[0])))
                self._handles.append(fam.register_forward_hook(
                    lambda m, i, o, lv=level: self._store(lv, "aligned", o)))
        if "attention" in self.what or "fsm_inputs" in self.what:
            for level, fsm in self.fsms.items():
                self._handles.append(fsm.sigmoid.register_forward_hook(
                    lambda m, i, o, lv=level: self._store(lv, "attention", o)))
                if "fsm_inputs" in self.what:
                    self._handles.append(fsm.register_forward_pre_hook(
                        lambda m, args, lv=level: self._store(lv, "fsm_input", args[0])))
        if "features" in self.what:
            neck = getattr(self.model, "neck", self.model)
            def store_features(module, inputs, outputs) -> None:  # must return None: hooks may replace outputs
                for k, v in outputs.items():
                    self._store(k, "feature", v)

            self._handles.append(neck.register_forward_hook(store_features))
        if "queries" in self.what and getattr(self.model, "semantic_output", "logits") == "scores":
            def store_queries(module, inputs, outputs) -> None:
                self._store("queries", "class_probs", outputs["pred_logits"].float().softmax(-1))
                self._store("queries", "mask_logits", outputs["pred_masks"])

            self._handles.append(self.model.head.register_forward_hook(store_queries))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def captures(self, image_size: tuple[int, int]) -> list[Captures]:
        """Per-image captures, cropped to ``image_size`` (the unpadded input H, W)."""
        batch = None
        for entries in self._raw.values():
            for t in entries.values():
                batch = t.shape[0]
                break
            if batch:
                break
        neck = getattr(self.model, "neck", self.model)
        neck_name = getattr(getattr(self.model, "config", None), "neck", type(neck).__name__)
        out = [Captures(has_fam=bool(self.fams), has_fsm=bool(self.fsms), neck=neck_name) for _ in range(batch or 1)]
        queries = self._raw.pop("queries", None)
        if queries is not None:
            for b, cap in enumerate(out):
                cap.queries = QueryCapture(_np(queries["class_probs"][b]),
                                           _np(_valid(queries["mask_logits"][b], image_size, 4)))
        for level, entries in self._raw.items():
            stride = self.strides.get(level, 2 ** int(level[1:]))
            for b, cap in enumerate(out):
                if "raw" in entries:
                    raw = _valid(entries["raw"][b], image_size, stride)
                    offset, mask = ModulatedDeformConv.split_offset_mask(raw[None])
                    groups = mask.shape[1] // 9
                    h, w = raw.shape[-2:]
                    fam = FAMCapture(level, stride, _np(offset[0].view(groups, 9, 2, h, w)),
                                     _np(mask[0].view(groups, 9, h, w)))
                    for key in ("feat_up", "lateral", "aligned"):
                        if key in entries:
                            setattr(fam, key, _np(_valid(entries[key][b], image_size, stride)))
                    cap.fam[level] = fam
                if "attention" in entries:
                    inputs = entries.get("fsm_input")
                    cap.fsm[level] = FSMCapture(level, _np(entries["attention"][b].flatten()),
                                                None if inputs is None else _np(_valid(inputs[b], image_size, stride)))
                if "feature" in entries:
                    cap.features[level] = _np(_valid(entries["feature"][b], image_size, stride))
        self._raw.clear()
        return out


@dataclass
class Prediction:
    """One inference of one model on one image: what every page and metric reads.

    Semantic models fill ``logits``/``labels``/``probabilities_max`` (MaskFormer: ``logits`` holds its ``sem_seg``
    scores, and the probabilities are those scores normalised over classes); detectors fill ``detections`` (a
    :class:`~fapn_core.models.rcnn.DetectionResult` on the CPU), and Panoptic FPN both (its semantic head's
    logits; channel 0 = all things). ``captures`` are the neck's, whatever the head; a PointRend instance model's
    head internals travel with its instances, in ``detections.point_rend``
    (:class:`~fapn_core.models.rcnn.point_rend.PointRendCapture`: each subdivision step's points in image pixels,
    the coarse mask).
    """

    logits: np.ndarray | None  # (C, H, W) float32
    labels: np.ndarray | None  # (H, W) uint8/int64 argmax
    probabilities_max: np.ndarray | None  # (H, W) max softmax probability (confidence)
    latency_ms: float
    device: str
    captures: Captures
    detections: "DetectionResult | None" = None

    @property
    def task(self) -> str:
        if self.detections is None:
            return "semantic"
        if self.detections.panoptic_seg is not None:
            return "panoptic"
        return "instance" if self.detections.masks is not None else "detection"


@torch.inference_mode()
def predict_with_captures(
    model: nn.Module, image: np.ndarray, what: Iterable[str] = ("offsets", "attention", "fam_features"),
    *, amp: bool = False,
) -> Prediction:
    """Run ``model`` on one RGB uint8 image (H, W, 3) with capture hooks; timings exclude the copy back.

    ``positions`` (a model with ``capture_maps()``, i.e. PanopticFCN) fills ``captures.positions`` with the image's
    :class:`~fapn_core.models.panopticfcn.captures.PanopticFCNMaps`; the latency then includes copying them.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H×W×3 uint8 RGB; got {image.shape} {image.dtype}")
    what = tuple(what)
    device = model.pixel_mean.device
    capture_maps = getattr(model, "capture_maps", None) if "positions" in what else None
    with CaptureHooks(model, what) as hooks, \
            (capture_maps() if capture_maps is not None else contextlib.nullcontext([])) as maps:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = model.predict(image, amp=amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        latency = (time.perf_counter() - t0) * 1000
    caps = hooks.captures(image.shape[:2])[0]
    caps.positions = maps[0] if maps else None
    detections = None
    if isinstance(out, DetectionResult):
        detections, logits = out.to("cpu"), out.sem_seg
    else:
        logits = out
    if logits is None:
        return Prediction(None, None, None, latency, str(device), caps, detections)
    if getattr(model, "semantic_output", "logits") in ("scores", "probabilities"):
        # MaskFormer: sums of probabilities; PanopticFCN: per-class sigmoids. Neither is a logit: normalise
        probs = scores_to_probabilities(logits, 0)
    else:
        probs = torch.softmax(logits, 0)
    conf, labels = probs.max(0)
    dtype = np.uint8 if logits.shape[0] <= 255 else np.int64
    return Prediction(_np(logits), labels.cpu().numpy().astype(dtype), _np(conf), latency, str(device), caps,
                      detections)
