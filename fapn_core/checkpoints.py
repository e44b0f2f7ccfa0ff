"""Checkpoints: the native format (safetensors + JSON model card) and import of official checkpoints.

Official FaPN-full / detectron2 checkpoints come as ``.pth`` (a dict with ``"model"``; read with
``torch.load(weights_only=True)``) or detectron2 ``.pkl`` (a pickled dict of numpy arrays; read with a
restricted unpickler that admits numpy arrays and plain containers only). Keys are mapped onto the native
modules (:func:`detectron2_to_native`); missing, unexpected and mis-shaped keys are reported and a partial load
is refused unless ``allow_partial=True``. Nothing is ever downloaded.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .models.d2_names import PYRAMID_RULES, resnet_depth
from .models.maskformer import convert as maskformer_convert
from .models.panopticfcn import convert as panopticfcn_convert
from .models.zoo import ModelConfig, build_from_config, count_parameters, get_model_config

CARD_KEY = "fapn_card"
FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: refuse larger checkpoint files unless the caller raises the limit


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model."""


# ----------------------------------------------------------------------------------------------- key mapping
_D2_RULES: list[tuple[re.Pattern[str], str]] = [
    *panopticfcn_convert.D2_RULES,  # PanopticFCN: top_block, position/kernel heads, feature encoder
    *PYRAMID_RULES,  # backbone and FPN/FaPN neck
    # PointRend instance checkpoints saved before detectron2 renamed the heads (what PointRendROIHeads and
    # ConvFCHead convert when a checkpoint has no version metadata); no-ops on current checkpoints
    (re.compile(r"^roi_heads\.(?:mask_coarse_head|mask_head\.coarse_head)\.coarse_mask_fc(\d+)\."),
     r"roi_heads.mask_head.coarse_head.fc\1."),
    (re.compile(r"^roi_heads\.mask_coarse_head\."), "roi_heads.mask_head.coarse_head."),
    (re.compile(r"^roi_heads\.mask_point_head\."), "roi_heads.mask_head.point_head."),
    (re.compile(r"^sem_seg_head\.coarse_sem_seg_head\."), "head.coarse_sem_seg_head."),
    (re.compile(r"^sem_seg_head\.point_head\."), "head.point_head."),
    *maskformer_convert.D2_RULES,  # MaskFormer: pixel decoder → neck., transformer predictor → head.
    (re.compile(r"^sem_seg_head\."), "head."),
]
_NATIVE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^neck\.align(\d)\.lateral\."), r"backbone.fan_align\1.lateral_conv."),
    (re.compile(r"^neck\.align(\d)\.offset\."), r"backbone.fan_align\1.offset."),
    (re.compile(r"^neck\.align(\d)\.dcn\."), r"backbone.fan_align\1.dcpack_L2."),
    (re.compile(r"^neck\.output(\d)\."), r"backbone.fpn_output\1."),
    (re.compile(r"^head\.coarse_sem_seg_head\."), "sem_seg_head.coarse_sem_seg_head."),
    (re.compile(r"^head\.point_head\."), "sem_seg_head.point_head."),
    (re.compile(r"^head\."), "sem_seg_head."),
    (re.compile(r"^backbone\."), "backbone.bottom_up."),
]
_IGNORED_D2_KEYS = {"pixel_mean", "pixel_std"}


def detectron2_to_native(key: str) -> str | None:
    """Native parameter name for a detectron2/FaPN-full state-dict key (``None`` for keys with no meaning here)."""
    if key in _IGNORED_D2_KEYS:
        return None
    for pattern, repl in _D2_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def native_to_detectron2(key: str, neck: str, head: str = "") -> str:
    """Inverse of :func:`detectron2_to_native` (``neck`` decides how ``neck.lateralL`` is spelled; ``head`` =
    ``"maskformer"`` for MaskFormer keys, whose backbone has no ``bottom_up``)."""
    if head == "maskformer":
        return maskformer_convert.native_to_official(key)
    if head == "panopticfcn":
        return panopticfcn_convert.native_to_official(key, neck)
    m = re.match(r"^neck\.lateral(\d)\.(.*)$", key)
    if m:
        return f"backbone.{'fpn_lateral' if neck.startswith('fpn') else 'fan_align'}{m[1]}.{m[2]}"
    for pattern, repl in _NATIVE_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


# --------------------------------------------------------------------------------------------- safe reading
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays/dtypes/scalars and plain containers; anything else is refused before it runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(
            f"refused to unpickle {module}.{name}: a detectron2 .pkl may only hold numpy arrays and plain "
            "containers (this file could run code when loaded)"
        )


def _check_size(path: Path, max_bytes: int) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    if size > max_bytes:
        raise CheckpointError(f"checkpoint {path.name} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")


def _to_tensor_dict(obj: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{source}: state-dict key {k!r} is not a string")
        if isinstance(v, torch.Tensor):
            out[k] = v
        elif isinstance(v, np.ndarray):
            if v.dtype == object:
                raise CheckpointError(f"{source}: entry {k!r} is an object array, not numbers")
            out[k] = torch.from_numpy(np.ascontiguousarray(v))
        elif isinstance(v, (int, float)) and k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(v)
        else:
            raise CheckpointError(f"{source}: entry {k!r} is a {type(v).__name__}, not a tensor or array")
    return out


def read_official_state_dict(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, torch.Tensor]:
    """Read a detectron2 / FaPN-full checkpoint (``.pth``/``.pt`` or ``.pkl``) without running any code from it."""
    p = Path(path)
    _check_size(p, max_bytes)
    data = p.read_bytes()
    if p.suffix == ".pkl":
        try:
            obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
        except CheckpointError:
            raise
        except Exception as e:  # truncated/garbage pickles raise many different errors
            raise CheckpointError(f"{p.name} is not a readable detectron2 .pkl checkpoint: {e}") from None
    else:
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            detail = next((ln.strip() for ln in str(e).splitlines() if "global" in ln.lower()), None)
            if detail is None:
                raise CheckpointError(f"{p.name} is not a readable PyTorch checkpoint (corrupt or not a "
                                      "checkpoint)") from None
            raise CheckpointError(
                f"{p.name} holds objects other than tensors and plain containers; refused "
                f"(loaded with weights_only=True): {detail}"
            ) from None
        except Exception as e:
            raise CheckpointError(f"{p.name} is not a readable PyTorch checkpoint: {e}") from None
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p.name}: expected a state dict (or a dict with 'model'), got {type(obj).__name__}")
    return _to_tensor_dict(obj, p.name)


# ------------------------------------------------------------------------------------------- config inference
def infer_config(state_dict: Mapping[str, torch.Tensor], *, native: bool = False) -> ModelConfig:
    """Guess the :class:`ModelConfig` of a checkpoint from its key names and shapes."""
    sd = dict(state_dict) if native else {
        n: v for k, v in state_dict.items() if (n := detectron2_to_native(k)) is not None
    }
    keys = set(sd)

    def shape(k: str) -> tuple[int, ...]:
        if k not in sd:
            raise CheckpointError(f"cannot infer the model: key {k!r} is missing")
        return tuple(sd[k].shape)

    if "head.query_embed.weight" in keys or any(k.startswith("neck.mask_features.") for k in keys):
        return maskformer_convert.infer_config(sd, shape, CheckpointError)
    if panopticfcn_convert.is_panopticfcn_state_dict(keys):
        cfg, options = panopticfcn_convert.infer_config(sd, shape, CheckpointError)
        return cfg.replace(**options)
    if any(k.startswith("neck.align") for k in keys):
        align_keys = [k for k in keys if k.startswith("neck.align")]
        if any(".dcn.conv_offset_mask" in k for k in align_keys):
            has_ref = any(re.match(r"neck\.align\d\.offset\.", k) for k in align_keys)
            has_att = any(".lateral.conv_atten" in k for k in align_keys)
            neck = "fapn" if has_ref and has_att else ("fam" if has_ref else "fam_noref_fsm")
        else:
            neck = "deconv_fsm"
    elif any(k.startswith("neck.extra") for k in keys):
        neck = "fpn_extra_conv"
    elif any(k.startswith("neck.lateral2") for k in keys):
        neck = "fpn"
    else:
        raise CheckpointError("cannot infer the model: no FPN or FaPN neck keys (fpn_lateral*/fan_align*) found")
    depth, bottleneck = resnet_depth(keys, CheckpointError)
    frozen = "backbone.stem.conv1.norm.num_batches_tracked" not in keys
    head_kwargs = _infer_head(keys, shape)
    head = head_kwargs["head"]
    if head in ("fasterrcnn", "maskrcnn", "panoptic", "pointrend_rcnn") and frozen:
        head_kwargs["freeze_at"] = 2  # detectron2's default; keys cannot tell, and it only matters for training
    kwargs: dict[str, Any] = dict(
        neck=neck, depth=depth, **head_kwargs,
        stem_out_channels=shape("backbone.stem.conv1.weight")[0],
        res2_out_channels=shape("backbone.res2.0.conv1.weight")[0] if not bottleneck
        else shape("backbone.res2.0.conv3.weight")[0],
        neck_channels=shape("neck.output2.weight")[0],
        backbone_norm="FrozenBN" if frozen else "BN",
    )
    if bottleneck:
        kwargs["width_per_group"] = shape("backbone.res2.0.conv1.weight")[0]
    else:
        kwargs.update(stride_in_1x1=False)
    if head == "pointrend":
        kwargs["point_fc_dim"] = shape("head.point_head.fc1.weight")[0]
        kwargs["point_num_fc"] = len({k for k in keys if re.match(r"head\.point_head\.fc\d+\.weight$", k)})
    if neck in ("fapn", "fam", "fam_noref_fsm"):
        raw = shape("neck.align2.dcn.conv_offset_mask.weight")[0]
        kwargs["deformable_groups"] = raw // 27
    base = get_model_config(f"{neck}_r{depth}_{head}")
    return base.replace(**kwargs)


def _infer_head(keys: set[str], shape) -> dict[str, Any]:
    """Head name and sizes from native key names: semantic (``head.*``) and/or R-CNN (``roi_heads.*``)."""
    if "roi_heads.box_predictor.bbox_pred.weight" in keys:
        out: dict[str, Any] = dict(
            num_classes=shape("roi_heads.box_predictor.bbox_pred.weight")[0] // 4,
            box_fc_dim=shape("roi_heads.box_head.fc1.weight")[0],
        )
        if shape("roi_heads.box_predictor.cls_score.weight")[0] != out["num_classes"] + 1:
            raise CheckpointError("roi_heads.box_predictor: cls_score has "
                                  f"{shape('roi_heads.box_predictor.cls_score.weight')[0]} outputs, expected "
                                  f"{out['num_classes'] + 1} (K classes + background) for a class-specific bbox_pred")
        if any(k.startswith(("roi_heads.mask_head.point_head.", "roi_heads.mask_head.coarse_head.")) for k in keys):
            out.update(_infer_point_rend_head(keys, shape, out["num_classes"]))
            return out
        mask = "roi_heads.mask_head.predictor.weight" in keys
        if mask:
            out["mask_conv_dims"] = shape("roi_heads.mask_head.mask_fcn1.weight")[0]
        if "head.predictor.weight" in keys:
            out.update(head="panoptic", sem_seg_num_classes=shape("head.predictor.weight")[0],
                       head_conv_dims=shape("head.predictor.weight")[1])
            if not mask:
                raise CheckpointError("semantic head and box head but no mask head: not a Panoptic FPN checkpoint")
        else:
            out["head"] = "maskrcnn" if mask else "fasterrcnn"
        return out
    if any(k.startswith("proposal_generator.") for k in keys):
        raise CheckpointError("checkpoint has an RPN (proposal_generator.*) but no ROI box head "
                              "(roi_heads.box_predictor.*): RPN-only models are not supported")
    head = "pointrend" if any(k.startswith("head.point_head.") for k in keys) else "semfpn"
    hp = "head.coarse_sem_seg_head." if head == "pointrend" else "head."
    num_classes, head_dims = shape(hp + "predictor.weight")[:2]
    return dict(head=head, num_classes=num_classes, head_conv_dims=head_dims)


def _infer_point_rend_head(keys: set[str], shape, num_classes: int) -> dict[str, Any]:
    """PointRend instance mask head sizes (``pointrend_rcnn``) from ``roi_heads.mask_head.{coarse,point}_head.*``;
    the subdivision schedule is not in the weights and stays the official one (784 points, 5 steps)."""
    what = "PointRend instance-segmentation checkpoint (roi_heads.mask_head.coarse_head/point_head)"
    ch, ph = "roi_heads.mask_head.coarse_head.", "roi_heads.mask_head.point_head."

    def dims(k: str) -> tuple[int, ...]:
        try:
            return shape(k)
        except CheckpointError:
            raise CheckpointError(f"{what} without PointRend's layout: key {k!r} is missing") from None

    conv_dim = dims(ch + "reduce_spatial_dim_conv.weight")[0]
    num_fc = len({k for k in keys if re.match(re.escape(ch) + r"fc\d+\.weight$", k)})
    fc_dim, fc_in = dims(ch + "fc1.weight")
    pooler = round(2 * math.sqrt(fc_in / conv_dim))
    out_dim = dims(ch + "prediction.weight")[0]
    side = round(math.sqrt(out_dim / num_classes))
    point_num_fc = len({k for k in keys if re.match(re.escape(ph) + r"fc\d+\.weight$", k)})
    point_fc_dim = dims(ph + "fc1.weight")[0]
    predictor = dims(ph + "predictor.weight")
    if conv_dim * pooler * pooler // 4 != fc_in or side * side * num_classes != out_dim or predictor[0] != num_classes:
        raise CheckpointError(f"{what}: coarse head fc1 {fc_in} inputs, prediction {out_dim} outputs and point "
                              f"predictor {predictor[0]} outputs do not fit {num_classes} class-specific masks")
    each_layer = (dims(ph + "fc2.weight") if point_num_fc > 1 else predictor)[1] == point_fc_dim + num_classes
    return dict(head="pointrend_rcnn", mask_conv_dims=conv_dim, mask_fc_dim=fc_dim, mask_num_fc=num_fc,
                mask_pooler_resolution=pooler, mask_coarse_resolution=side, point_fc_dim=point_fc_dim,
                point_num_fc=point_num_fc, point_coarse_pred_each_layer=each_layer)


def config_from_detectron2(cfg: Mapping[str, Any] | str | os.PathLike, *, neck: str | None = None) -> ModelConfig:
    """Native :class:`ModelConfig` from a detectron2 ``cfg.dump()`` (YAML path, text or loaded dict).

    ``neck``: ``"fapn"``/``"fpn"`` for a PanopticFCN dump, which does not name its neck (from the checkpoint's keys).
    """
    import yaml

    if isinstance(cfg, (str, os.PathLike)) and Path(cfg).is_file():
        cfg = yaml.safe_load(Path(cfg).read_text())
    elif isinstance(cfg, str):
        cfg = yaml.safe_load(cfg)
    if not isinstance(cfg, Mapping) or "MODEL" not in cfg:
        raise CheckpointError("not a detectron2 config dump: no MODEL section")
    m = cfg["MODEL"]
    arch = m.get("META_ARCHITECTURE")
    if arch in ("GeneralizedRCNN", "PanopticFPN"):
        return _rcnn_config_from_detectron2(cfg)
    if arch == "MaskFormer":
        return maskformer_convert.config_from_detectron2(cfg, CheckpointError)
    if arch == "PanopticFCN":
        if neck is None:
            raise CheckpointError("a PanopticFCN config dump does not say whether its neck is FPN or FaPN: convert "
                                  "it together with its checkpoint (the keys tell)")
        base, options = panopticfcn_convert.config_from_detectron2(cfg, neck, CheckpointError)
        return base.replace(**options)
    if arch != "SemanticSegmentor":
        raise CheckpointError(
            f"unsupported META_ARCHITECTURE {arch!r}; expected SemanticSegmentor, MaskFormer, GeneralizedRCNN, "
            "PanopticFPN or PanopticFCN"
        )
    s, ph = m["SEM_SEG_HEAD"], m.get("POINT_HEAD", {})
    heads = {"PointRendSemSegHead": "pointrend", "SemSegFPNHead": "semfpn"}
    if s["NAME"] not in heads:
        raise CheckpointError(f"unsupported SEM_SEG_HEAD.NAME {s['NAME']!r}; expected one of {sorted(heads)}")
    head = heads[s["NAME"]]
    kwargs: dict[str, Any] = _backbone_neck_from_detectron2(cfg)
    kwargs.pop("freeze_at")  # semantic models here train every stage (as before); inference is unaffected
    kwargs.update(
        head=head, num_classes=int(s["NUM_CLASSES"]), head_conv_dims=int(s["CONVS_DIM"]), head_norm=s["NORM"],
        common_stride=int(s["COMMON_STRIDE"]), ignore_index=int(s.get("IGNORE_VALUE", 255)),
    )
    if head == "pointrend":
        kwargs.update(
            point_fc_dim=int(ph["FC_DIM"]), point_num_fc=int(ph["NUM_FC"]),
            subdivision_steps=int(ph["SUBDIVISION_STEPS"]), subdivision_num_points=int(ph["SUBDIVISION_NUM_POINTS"]),
            train_num_points=int(ph["TRAIN_NUM_POINTS"]), oversample_ratio=float(ph["OVERSAMPLE_RATIO"]),
            importance_sample_ratio=float(ph["IMPORTANCE_SAMPLE_RATIO"]),
        )
        if int(ph["NUM_CLASSES"]) != kwargs["num_classes"]:
            raise CheckpointError("POINT_HEAD.NUM_CLASSES differs from SEM_SEG_HEAD.NUM_CLASSES")
    return ModelConfig(**kwargs)


def _backbone_neck_from_detectron2(cfg: Mapping[str, Any]) -> dict[str, Any]:
    m = cfg["MODEL"]
    builder = m["BACKBONE"]["NAME"]
    necks = {"build_resnet_fan_backbone": "fapn", "build_resnet_fpn_backbone": "fpn"}
    if builder not in necks:
        raise CheckpointError(f"unsupported backbone builder {builder!r}; expected one of {sorted(necks)}")
    if m.get("FPN", {}).get("NORM", "") != "":
        raise CheckpointError(f"FPN.NORM {m['FPN']['NORM']!r} is not supported (official configs use '')")
    r = m["RESNETS"]
    depth = int(r["DEPTH"])
    if depth not in (18, 34, 50, 101):
        raise CheckpointError(f"unsupported ResNet depth {depth}")
    return dict(
        neck=necks[builder], depth=depth, backbone_norm=r["NORM"], stride_in_1x1=bool(r["STRIDE_IN_1X1"]),
        stem_out_channels=int(r["STEM_OUT_CHANNELS"]), res2_out_channels=int(r["RES2_OUT_CHANNELS"]),
        width_per_group=int(r["WIDTH_PER_GROUP"]), num_groups=int(r["NUM_GROUPS"]),
        res5_dilation=int(r["RES5_DILATION"]), neck_channels=int(m["FPN"]["OUT_CHANNELS"]),
        pixel_mean=tuple(m["PIXEL_MEAN"]), pixel_std=tuple(m["PIXEL_STD"]),
        input_format=cfg.get("INPUT", {}).get("FORMAT", "BGR"),
        freeze_at=int(m["BACKBONE"].get("FREEZE_AT", 0)),
    )


def _rcnn_config_from_detectron2(cfg: Mapping[str, Any]) -> ModelConfig:
    """Faster/Mask R-CNN (``GeneralizedRCNN``) and Panoptic FPN configs; refuses settings implemented otherwise."""
    m = cfg["MODEL"]
    kw = _backbone_neck_from_detectron2(cfg)
    rpn, roi, box = m["RPN"], m["ROI_HEADS"], m["ROI_BOX_HEAD"]
    mask_head = m.get("ROI_MASK_HEAD", {})
    # PointRend instance: detectron2's own configs name PointRendMaskHead; old-format ones (FaPN-full's) name
    # PointRendROIHeads, whose build rewrites any mask head to PointRendMaskHead with POOLER_TYPE "" (as here)
    point_rend = bool(m.get("MASK_ON")) and (
        roi.get("NAME") == "PointRendROIHeads" or mask_head.get("NAME") == "PointRendMaskHead")
    expected = {
        "PROPOSAL_GENERATOR.NAME": (m.get("PROPOSAL_GENERATOR", {}).get("NAME"), "RPN"),
        "RPN.HEAD_NAME": (rpn.get("HEAD_NAME"), "StandardRPNHead"),
        "ANCHOR_GENERATOR.NAME": (m.get("ANCHOR_GENERATOR", {}).get("NAME"), "DefaultAnchorGenerator"),
        "ANCHOR_GENERATOR.OFFSET": (float(m.get("ANCHOR_GENERATOR", {}).get("OFFSET", 0.0)), 0.0),
        # PointRendROIHeads is StandardROIHeads plus the legacy renames (detectron2_to_native applies them)
        "ROI_HEADS.NAME": ("StandardROIHeads" if roi.get("NAME") == "PointRendROIHeads" else roi.get("NAME"),
                           "StandardROIHeads"),
        "ROI_BOX_HEAD.NAME": (box.get("NAME"), "FastRCNNConvFCHead"),
        "ROI_BOX_HEAD.NUM_CONV": (int(box.get("NUM_CONV", 0)), 0),
        "ROI_BOX_HEAD.NUM_FC": (int(box.get("NUM_FC", 2)), 2),
        "ROI_BOX_HEAD.POOLER_TYPE": (box.get("POOLER_TYPE"), "ROIAlignV2"),
        "ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": (bool(box.get("CLS_AGNOSTIC_BBOX_REG", False)), False),
        "ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ([float(v) for v in box.get("BBOX_REG_WEIGHTS", [])], [10.0, 10.0, 5.0, 5.0]),
        "RPN.BBOX_REG_WEIGHTS": ([float(v) for v in rpn.get("BBOX_REG_WEIGHTS", [])], [1.0, 1.0, 1.0, 1.0]),
        "ROI_BOX_HEAD.USE_SIGMOID_CE": (bool(box.get("USE_SIGMOID_CE", False)), False),
        "ROI_BOX_HEAD.USE_FED_LOSS": (bool(box.get("USE_FED_LOSS", False)), False),
    }
    if point_rend:
        expected.update(_point_rend_expected(m))
    elif m.get("MASK_ON"):
        expected.update({
            "ROI_MASK_HEAD.NAME": (mask_head.get("NAME"), "MaskRCNNConvUpsampleHead"),
            "ROI_MASK_HEAD.NUM_CONV": (int(mask_head.get("NUM_CONV", 4)), 4),
            "ROI_MASK_HEAD.POOLER_TYPE": (mask_head.get("POOLER_TYPE"), "ROIAlignV2"),
            "ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": (bool(mask_head.get("CLS_AGNOSTIC_MASK", False)), False),
        })
    wrong = [f"{k} = {got!r} (supported: {want!r})" for k, (got, want) in expected.items() if got != want]
    if wrong:
        raise CheckpointError(f"unsupported R-CNN config setting(s): {'; '.join(wrong)}")
    sizes = m["ANCHOR_GENERATOR"]["SIZES"]
    if any(len(s) != 1 for s in sizes) or len(sizes) != 5:
        raise CheckpointError(f"ANCHOR_GENERATOR.SIZES must give one size for each of p2..p6, got {sizes}")
    ratios = m["ANCHOR_GENERATOR"]["ASPECT_RATIOS"]
    ratios = ratios[0] if ratios and isinstance(ratios[0], list) else ratios
    arch = m["META_ARCHITECTURE"]
    head = "panoptic" if arch == "PanopticFPN" else ("maskrcnn" if m.get("MASK_ON") else "fasterrcnn")
    if point_rend:
        if arch != "GeneralizedRCNN":
            raise CheckpointError(f"PointRend's instance mask head under {arch}: not supported")
        head = "pointrend_rcnn"
    if head == "panoptic" and not m.get("MASK_ON"):
        raise CheckpointError("PanopticFPN config with MASK_ON false: not supported")
    kw.update(
        head=head, num_classes=int(roi["NUM_CLASSES"]),
        anchor_sizes=tuple(float(s[0]) for s in sizes), anchor_aspect_ratios=tuple(float(r) for r in ratios),
        rpn_pre_nms_topk_train=int(rpn["PRE_NMS_TOPK_TRAIN"]), rpn_pre_nms_topk_test=int(rpn["PRE_NMS_TOPK_TEST"]),
        rpn_post_nms_topk_train=int(rpn["POST_NMS_TOPK_TRAIN"]),
        rpn_post_nms_topk_test=int(rpn["POST_NMS_TOPK_TEST"]), rpn_nms_thresh=float(rpn["NMS_THRESH"]),
        rpn_batch_size_per_image=int(rpn["BATCH_SIZE_PER_IMAGE"]),
        roi_batch_size_per_image=int(roi["BATCH_SIZE_PER_IMAGE"]),
        roi_positive_fraction=float(roi["POSITIVE_FRACTION"]), box_fc_dim=int(box["FC_DIM"]),
        score_thresh_test=float(roi["SCORE_THRESH_TEST"]), nms_thresh_test=float(roi["NMS_THRESH_TEST"]),
        detections_per_image=int(cfg.get("TEST", {}).get("DETECTIONS_PER_IMAGE", 100)),
        train_on_pred_boxes=bool(box.get("TRAIN_ON_PRED_BOXES", False)),
    )
    if m.get("MASK_ON"):
        kw["mask_conv_dims"] = int(mask_head["CONV_DIM"])
    if point_rend:
        ph = m["POINT_HEAD"]
        kw.update(
            mask_fc_dim=int(mask_head["FC_DIM"]), mask_num_fc=int(mask_head["NUM_FC"]),
            mask_pooler_resolution=int(mask_head["POOLER_RESOLUTION"]),
            mask_coarse_resolution=int(mask_head["OUTPUT_SIDE_RESOLUTION"]), point_fc_dim=int(ph["FC_DIM"]),
            point_num_fc=int(ph["NUM_FC"]), point_coarse_pred_each_layer=bool(ph["COARSE_PRED_EACH_LAYER"]),
            subdivision_steps=int(ph["SUBDIVISION_STEPS"]), subdivision_num_points=int(ph["SUBDIVISION_NUM_POINTS"]),
            train_num_points=int(ph["TRAIN_NUM_POINTS"]), oversample_ratio=float(ph["OVERSAMPLE_RATIO"]),
            importance_sample_ratio=float(ph["IMPORTANCE_SAMPLE_RATIO"]),
        )
    if head == "panoptic":
        s, comb = m["SEM_SEG_HEAD"], m.get("PANOPTIC_FPN", {}).get("COMBINE", {})
        if s["NAME"] != "SemSegFPNHead":
            raise CheckpointError(f"unsupported Panoptic FPN SEM_SEG_HEAD.NAME {s['NAME']!r}")
        kw.update(
            sem_seg_num_classes=int(s["NUM_CLASSES"]), head_conv_dims=int(s["CONVS_DIM"]), head_norm=s["NORM"],
            common_stride=int(s["COMMON_STRIDE"]), ignore_index=int(s.get("IGNORE_VALUE", 255)),
            sem_seg_loss_weight=float(s.get("LOSS_WEIGHT", 0.5)),
            panoptic_overlap_thresh=float(comb.get("OVERLAP_THRESH", 0.5)),
            panoptic_stuff_area_limit=int(comb.get("STUFF_AREA_LIMIT", 4096)),
            panoptic_instances_score_thresh=float(comb.get("INSTANCES_CONFIDENCE_THRESH", 0.5)),
        )
    return get_model_config(f"{kw['neck']}_r{kw['depth']}_{head}").replace(**kw)


def _point_rend_expected(m: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The PointRend instance settings implemented here: (config value, supported value) by key."""
    mask_head, ph = m.get("ROI_MASK_HEAD", {}), m.get("POINT_HEAD", {})
    # PointRendROIHeads rewrites POOLER_TYPE to "" together with a mask head name other than PointRendMaskHead
    rewritten = m["ROI_HEADS"].get("NAME") == "PointRendROIHeads" and mask_head.get("NAME") != "PointRendMaskHead"
    pooler_type = "" if rewritten else mask_head.get("POOLER_TYPE")
    return {
        "ROI_MASK_HEAD.POOLER_TYPE": (pooler_type, ""),
        "ROI_MASK_HEAD.POINT_HEAD_ON": (bool(mask_head.get("POINT_HEAD_ON", True)), True),
        "ROI_MASK_HEAD.IN_FEATURES": (list(mask_head.get("IN_FEATURES", ["p2"])), ["p2"]),
        "ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": (bool(mask_head.get("CLS_AGNOSTIC_MASK", False)), False),
        "POINT_HEAD.NAME": (ph.get("NAME"), "StandardPointHead"),
        "POINT_HEAD.IN_FEATURES": (list(ph.get("IN_FEATURES", ["p2"])), ["p2"]),
        "POINT_HEAD.CLS_AGNOSTIC_MASK": (bool(ph.get("CLS_AGNOSTIC_MASK", False)), False),
        "POINT_HEAD.NUM_CLASSES": (int(ph.get("NUM_CLASSES", -1)), int(m["ROI_HEADS"]["NUM_CLASSES"])),
    }


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class LoadReport:
    """What happened when a state dict was matched against a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 8) -> str:
        parts = [f"{self.loaded} tensors loaded"]
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                more = f" … (+{len(items) - limit})" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
        if self.shape_mismatch:
            shown = [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatch[:limit]]
            parts.append(f"{len(self.shape_mismatch)} shape mismatches: {'; '.join(shown)}")
        return "; ".join(parts)


def load_state_dict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, allow_partial: bool = False
) -> LoadReport:
    """Copy ``state_dict`` (native names) into ``model``; refuse anything but an exact match unless asked."""
    target = model.state_dict()
    report = LoadReport()
    usable: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k not in target:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(target[k].shape):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(target[k].shape)))
        else:
            usable[k] = v
    # ``criterion.empty_weight`` (MaskFormer's no-object loss weight) is a constant of the config, rebuilt when absent
    report.missing = [k for k in target if k not in state_dict
                      and not k.endswith("num_batches_tracked") and k != "criterion.empty_weight"]
    _check_shared_aliases(target, usable)
    if not report.ok and not allow_partial:
        raise CheckpointError(f"checkpoint does not match the model ({report.summary()}); "
                              "pass allow_partial=True to load what matches")
    with torch.no_grad():
        for k, v in usable.items():
            target[k].copy_(v.to(target[k].dtype))
    report.loaded = len(usable)
    return report


def _check_shared_aliases(target: Mapping[str, torch.Tensor], usable: Mapping[str, torch.Tensor]) -> None:
    """Keys that are one tensor in the model (e.g. MaskFormer+FaPN's GroupNorm shared by ``align_N.offset`` and
    ``layer_N``) must arrive with equal values; otherwise the load would silently keep only the last one."""
    by_storage: dict[tuple[int, int], list[str]] = {}
    for k, t in target.items():
        if t.numel():
            by_storage.setdefault((t.data_ptr(), t.numel()), []).append(k)
    for keys in by_storage.values():
        given = [k for k in keys if k in usable]
        if len(given) > 1 and any(not torch.equal(usable[given[0]], usable[k]) for k in given[1:]):
            raise CheckpointError(f"keys {given} are one shared parameter in the model but hold different values "
                                  "in the checkpoint")


def import_official(
    path: str | os.PathLike,
    *,
    config: ModelConfig | str | os.PathLike | Mapping[str, Any] | None = None,
    allow_partial: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    dcn_impl: str = "auto",
) -> tuple[torch.nn.Module, LoadReport]:
    """Build the native model for an official checkpoint and load it.

    ``config``: a :class:`ModelConfig`, a detectron2 config dump (path/dict) or ``None`` to infer from the keys.
    """
    raw = read_official_state_dict(path, max_bytes=max_bytes)
    native = {n: v for k, v in raw.items() if (n := detectron2_to_native(k)) is not None}
    if config is None:
        cfg = infer_config(native, native=True)
    elif isinstance(config, ModelConfig):
        cfg = config
    else:
        cfg = config_from_detectron2(config, neck="fapn" if any(k.startswith("neck.align") for k in native) else "fpn")
    model = build_from_config(cfg, dcn_impl=dcn_impl)
    report = load_state_dict(model, native, allow_partial=allow_partial)
    model.eval()
    return model, report


# ------------------------------------------------------------------------------------------- native format
def make_card(model: torch.nn.Module, **fields: Any) -> dict[str, Any]:
    """A model card: config, classes, palette, normalisation, training data, metrics and counts."""
    cfg: ModelConfig = model.config
    card: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "config": cfg.to_dict(),
        "num_params": count_parameters(model),
        "normalization": {"input_format": cfg.input_format, "pixel_mean": list(cfg.pixel_mean),
                          "pixel_std": list(cfg.pixel_std)},
        "task": cfg.task,
        "classes": [f"class_{i}" for i in range(cfg.num_classes)],
        "palette": None,
        "training_data": None,
        "metrics": {},
    }
    if cfg.task != "semantic":
        # thing classes are ``classes`` (ROI class ids 0..K-1); dataset category ids where known (COCO JSON)
        card["thing_category_ids"] = None
    if cfg.task == "panoptic":
        card["stuff_classes"] = ["things"] + [f"stuff_{i}" for i in range(1, cfg.sem_seg_num_classes)]
        card["stuff_category_ids"] = None
    card.update(fields)
    if len(card["classes"]) != cfg.num_classes:
        raise ValueError(f"card lists {len(card['classes'])} classes, model has {cfg.num_classes}")
    if cfg.task == "panoptic" and len(card["stuff_classes"]) != cfg.sem_seg_num_classes:
        raise ValueError(f"card lists {len(card['stuff_classes'])} semantic classes (channel 0 = things), "
                         f"the semantic head has {cfg.sem_seg_num_classes}")
    for key, n in (("thing_category_ids", cfg.num_classes), ("stuff_category_ids", cfg.sem_seg_num_classes)):
        ids = card.get(key)
        if ids is not None and len(ids) != n:
            raise ValueError(f"card's {key} has {len(ids)} entries, expected {n}")
    return card


def save_native(
    model: torch.nn.Module, path: str | os.PathLike, card: dict[str, Any] | None = None, *, half: bool = False
) -> Path:
    """Write ``path`` (``.safetensors``, card embedded in its metadata) and ``path`` with ``.json`` (the card).

    Written atomically (temporary file + rename), so an interrupted save leaves the previous file intact.
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    card = card or make_card(model)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point():
            v = v.half()
        tensors[k] = v.clone()
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(card, indent=2, sort_keys=False, default=_json_default)
    for target, writer in ((p, lambda f: save_file(tensors, f, metadata={CARD_KEY: text})),
                           (p.with_suffix(".json"), lambda f: Path(f).write_text(text + "\n"))):
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            writer(tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are meant to be shared
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return p


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """The model card embedded in a native ``.safetensors`` checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"{Path(path).name} is not a readable safetensors file: {e}") from None
    if CARD_KEY not in meta:
        raise CheckpointError(f"{Path(path).name} has no FaPN Lab model card (metadata key {CARD_KEY!r})")
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{Path(path).name}: model card is not valid JSON: {e}") from None
    if not isinstance(card, dict) or "config" not in card:
        raise CheckpointError(f"{Path(path).name}: model card has no 'config'")
    return card


def load_native(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", allow_partial: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES, dcn_impl: str = "auto",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Model (eval mode, float32) and card from a native checkpoint."""
    p = Path(path)
    _check_size(p, max_bytes)
    card = read_card(p)
    cfg = ModelConfig.from_dict(card["config"])
    model = build_from_config(cfg, dcn_impl=dcn_impl)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(p), framework="pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    load_state_dict(model, tensors, allow_partial=allow_partial)
    model.card = card
    return model.to(device).eval(), card


def load_checkpoint(
    path: str | os.PathLike, *, config: Any = None, device: str | torch.device = "cpu",
    allow_partial: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, dcn_impl: str = "auto",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load any supported checkpoint (native ``.safetensors``, official ``.pth``/``.pkl``) → (model, card)."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return load_native(p, device=device, allow_partial=allow_partial, max_bytes=max_bytes, dcn_impl=dcn_impl)
    if p.suffix not in (".pth", ".pt", ".pkl"):
        raise CheckpointError(f"unsupported checkpoint type {p.suffix!r}: use .safetensors, .pth, .pt or .pkl")
    model, report = import_official(p, config=config, allow_partial=allow_partial, max_bytes=max_bytes,
                                    dcn_impl=dcn_impl)
    card = make_card(model, source={"file": p.name, "format": "detectron2", "load_report": report.summary()},
                     **official_class_fields(model.config))
    model.card = card
    return model.to(device).eval(), card


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, *, config: Any = None, allow_partial: bool = False,
    half: bool = False, **card_fields: Any,
) -> tuple[Path, LoadReport]:
    """Official checkpoint → native safetensors + card (what ``fapn convert IN OUT`` runs)."""
    model, report = import_official(src, config=config, allow_partial=allow_partial)
    fields = {**official_class_fields(model.config), **card_fields}
    card = make_card(model, source={"file": Path(src).name, "format": "detectron2", "load_report": report.summary()},
                     **fields)
    return save_native(model, dst, card, half=half), report


def detector_from_panoptic(model: torch.nn.Module, card: Mapping[str, Any], head: str = "maskrcnn"
                           ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The Mask R-CNN (or Faster R-CNN) inside a Panoptic FPN: same backbone, neck, RPN and ROI heads and
    weights, without the semantic head (and, for ``fasterrcnn``, without the mask head). Its detections equal
    the Panoptic FPN's instances; the card keeps classes, thing ids and training data and records the source."""
    if getattr(model.config, "head", None) != "panoptic":
        raise CheckpointError(f"detector_from_panoptic needs a Panoptic FPN, got {model.config.name} "
                              f"({model.config.task}): only Panoptic FPN has a Mask R-CNN inside")
    if head not in ("maskrcnn", "fasterrcnn"):
        raise CheckpointError(f"head must be 'maskrcnn' or 'fasterrcnn', got {head!r}")
    cfg = model.config.replace(head=head)
    new = build_from_config(cfg)
    drop = ("head.",) + (("roi_heads.mask_head.",) if head == "fasterrcnn" else ())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(drop)}
    new.load_state_dict(state, strict=True)
    keep = {k: card[k] for k in ("classes", "palette", "thing_category_ids", "training_data", "normalization")
            if k in card}
    out = make_card(new, **keep, source={"derived_from": card.get("name"), "dropped": list(drop)})
    out["name"] = f"{card.get('name', cfg.name)}-{head}"
    new.card = out
    return new.to(next(model.parameters()).device).eval(), out


def semantic_classes(card: Mapping[str, Any]) -> tuple[list[str], list[list[int]] | None] | None:
    """The semantic label space a model's predictions can be read in: its classes and palette for a semantic
    model; for Panoptic FPN the dataset classes its thing and stuff category ids point to (names and colours at
    those ids); ``None`` for detectors without a semantic output or without category ids."""
    task = card.get("task", "semantic")
    if task == "semantic":
        return list(card.get("classes") or []), card.get("palette")
    things, stuff = card.get("thing_category_ids"), card.get("stuff_category_ids")
    if task != "panoptic" or not things or not stuff or any(i is None for i in stuff[1:]):
        return None
    ids = [int(i) for i in things] + [int(i) for i in stuff[1:]]
    if min(ids) < 0 or len(set(ids)) != len(ids) or max(ids) >= 4096:
        return None
    names = [f"class_{i}" for i in range(max(ids) + 1)]
    pal: list[list[int]] | None = [[128, 128, 128] for _ in names]
    for i, name in zip(things, card.get("classes", [])):
        names[int(i)] = str(name)
    for i, name in zip(stuff[1:], card.get("stuff_classes", [])[1:]):
        names[int(i)] = str(name)
    for ids_, key, skip in ((things, "palette", 0), (stuff, "stuff_palette", 1)):
        colours = card.get(key)
        if colours is None:
            pal = None
            break
        for i, c in zip(ids_[skip:], colours[skip:]):
            pal[int(i)] = [int(v) for v in c]
    return names, pal


def official_class_fields(cfg: ModelConfig) -> dict[str, Any]:
    """Class names (and ids, palettes) of an official release, from its class counts: COCO 2017 for 80 thing
    classes (and 54 Panoptic FPN channels); for semantic models Cityscapes (19), ADE20K SceneParsing (150) or
    COCO-Stuff (171, MaskFormer's contiguous ids); ``{}`` otherwise."""
    from .data.cityscapes import cityscapes_card_fields
    from .data.coco_meta import coco_card_fields, coco_stuff_171
    from .data.palettes import ADE20K_CLASSES, ADE20K_PALETTE

    if cfg.task != "semantic":
        return coco_card_fields(cfg.task, cfg.num_classes, cfg.sem_seg_num_classes)
    if cfg.num_classes == 19:
        return {**cityscapes_card_fields(), "training_data": "Cityscapes (assumed from the 19 classes)"}
    if cfg.num_classes == len(ADE20K_CLASSES):
        return {"classes": list(ADE20K_CLASSES), "palette": np.asarray(ADE20K_PALETTE).tolist(),
                "training_data": "ADE20K SceneParsing (assumed from the 150 classes)"}
    if cfg.num_classes == 171:
        names, colours = coco_stuff_171()
        return {"classes": names, "palette": colours,
                "training_data": "COCO-Stuff (assumed from the 171 classes; FaPN-full's R101 release: COCO-Stuff-10K)"}
    return {}


def export_detectron2_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Native state dict renamed to detectron2/FaPN-full keys (for round-trip tests and interop)."""
    neck, head = model.config.neck, model.config.head
    return {native_to_detectron2(k, neck, head): v for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


# ------------------------------------------------------------------------------------------ bundled models
def assets_dir() -> Path:
    """Folder of bundled models and samples: ``$FAPN_ASSETS`` or ``<repo>/assets``."""
    env = os.environ.get("FAPN_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "assets"


def bundled_models() -> dict[str, Path]:
    """Bundled native checkpoints by name (``assets/models/<name>.safetensors``)."""
    folder = assets_dir() / "models"
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}


def resolve_model(spec: str | os.PathLike, *, device: str | torch.device = "cpu", config: Any = None,
                  allow_partial: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A bundled model's name or a checkpoint path → (model in eval mode, card)."""
    path = Path(spec)
    if path.is_file():
        return load_checkpoint(path, config=config, device=device, allow_partial=allow_partial)
    bundled = bundled_models()
    if str(spec) in bundled:
        return load_checkpoint(bundled[str(spec)], device=device)
    raise CheckpointError(
        f"no checkpoint file or bundled model named {str(spec)!r}; bundled: {sorted(bundled) or 'none'}"
    )
