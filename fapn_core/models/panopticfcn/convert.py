"""Official PanopticFCN / FaPN-full PanopticFCN checkpoints and configs → native names and settings.

Key mapping (one-to-one; any other key keeps its name: ``semantic_fpn.*``, ``position_head.out_{inst,sem}.*``,
``kernel_head.out_conv.*``, ``{thing,stuff}_generator.embed_extractor.*``):

=====================================================================  ==========================================
official                                                               native
=====================================================================  ==========================================
``backbone.bottom_up.*``                                               ``backbone.*``
``backbone.fpn_lateral<L>.*`` / ``backbone.fan_align5.{weight,bias}``  ``neck.lateral<L>.*``
``backbone.fan_align<L>.{lateral_conv,offset,dcpack_L2}.*``            ``neck.align<L>.{lateral,offset,dcn}.*``
``backbone.fpn_output<L>.*``                                           ``neck.output<L>.*``
``backbone.top_block.{p6,p7}.*``                                       ``top_block.{p6,p7}.*``
``position_head.position_head.position_head_head_<k>.offset_mask_conv``  ``position_head.conv<k>.conv_offset_mask``
``position_head.position_head.position_head_head_<k>.dcnv2.*``         ``position_head.conv<k>.*``
``kernel_head.kernel_head.kernel_head_head_<k>.*``                     ``kernel_head.conv<k>.*``
``feature_encoder.encode_head.encode_head_head_<k>.*``                 ``feature_encoder.conv<k>.*``
=====================================================================  ==========================================

The official configs do not say which neck a model has (the FaPN variant is chosen by an import in FaPN-full's
``backbone_utils.py``): the neck comes from the checkpoint's keys (``fan_align*`` = FaPN, ``fpn_lateral*`` = FPN).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from ..d2_names import PYRAMID_RULES, lateral_to_official, resnet_depth

if TYPE_CHECKING:
    from ..config import ModelConfig

# PanopticFCN-only rules, in the order they must be tried (splice before the generic detectron2 rules)
D2_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^backbone\.top_block\."), "top_block."),
    (re.compile(r"^position_head\.position_head\.position_head_head_(\d+)\.offset_mask_conv\."),
     r"position_head.conv\1.conv_offset_mask."),
    (re.compile(r"^position_head\.position_head\.position_head_head_(\d+)\.dcnv2\."), r"position_head.conv\1."),
    (re.compile(r"^position_head\.position_head\.position_head_head_(\d+)\."), r"position_head.conv\1."),
    (re.compile(r"^kernel_head\.kernel_head\.kernel_head_head_(\d+)\."), r"kernel_head.conv\1."),
    (re.compile(r"^feature_encoder\.encode_head\.encode_head_head_(\d+)\."), r"feature_encoder.conv\1."),
]
_NATIVE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^top_block\."), "backbone.top_block."),
    (re.compile(r"^position_head\.conv(\d+)\.conv_offset_mask\."),
     r"position_head.position_head.position_head_head_\1.offset_mask_conv."),
    (re.compile(r"^kernel_head\.conv(\d+)\."), r"kernel_head.kernel_head.kernel_head_head_\1."),
    (re.compile(r"^feature_encoder\.conv(\d+)\."), r"feature_encoder.encode_head.encode_head_head_\1."),
    (re.compile(r"^neck\.align(\d)\.lateral\."), r"backbone.fan_align\1.lateral_conv."),
    (re.compile(r"^neck\.align(\d)\.offset\."), r"backbone.fan_align\1.offset."),
    (re.compile(r"^neck\.align(\d)\.dcn\."), r"backbone.fan_align\1.dcpack_L2."),
    (re.compile(r"^neck\.output(\d)\."), r"backbone.fpn_output\1."),
    (re.compile(r"^backbone\."), "backbone.bottom_up."),
]
_HEAD_PREFIXES = ("position_head.", "kernel_head.", "feature_encoder.", "thing_generator.", "stuff_generator.",
                  "semantic_fpn.")


def is_panopticfcn_state_dict(keys: Iterable[str]) -> bool:
    """Whether official- or native-named keys are a PanopticFCN's (position head + kernel head + generators)."""
    keys = list(keys)
    return any(k.startswith("position_head.") for k in keys) and any(k.startswith("thing_generator.") for k in keys)


def official_to_native(key: str) -> str | None:
    """Native name of an official PanopticFCN state-dict key (``None`` for ``pixel_mean``/``pixel_std``)."""
    if key in ("pixel_mean", "pixel_std"):
        return None
    for pattern, repl in D2_RULES + PYRAMID_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def native_to_official(key: str, neck: str, *, deform: bool = True) -> str:
    """Official key of a native PanopticFCN key (``neck`` decides how ``neck.lateral<L>`` is spelled; ``deform``:
    the position head's convs are ``ModulatedDeformConvWithOff`` (``dcnv2.*``), as in every release)."""
    lateral = lateral_to_official(key, neck)
    if lateral is not None:
        return lateral
    m = re.match(r"^position_head\.conv(\d+)\.(?!conv_offset_mask\.)(.*)$", key)
    if m:
        return f"position_head.position_head.position_head_head_{m[1]}.{'dcnv2.' if deform else ''}{m[2]}"
    for pattern, repl in _NATIVE_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def export_official(state_dict: Mapping[str, Any], neck: str, *, deform: bool = True) -> dict[str, Any]:
    """A native PanopticFCN state dict under the official key names (round trips with :func:`official_to_native`)."""
    return {native_to_official(k, neck, deform=deform): v for k, v in state_dict.items()
            if not k.endswith("num_batches_tracked")}


def options_from_state_dict(sd: Mapping[str, Any], shape: Callable[[str], tuple[int, ...]]) -> dict[str, Any]:
    """PanopticFCN options (:class:`~.options.PanopticFCNOptions` fields) a native state dict determines."""
    keys = set(sd)
    num_convs = len({k.split(".")[1] for k in keys if re.match(r"kernel_head\.conv\d+\.weight$", k)})
    return dict(encoder_conv_dims=shape("feature_encoder.conv1.weight")[0], head_num_convs=num_convs,
                position_deform="position_head.conv1.conv_offset_mask.weight" in keys)


def infer_config(sd: Mapping[str, Any], shape: Callable[[str], tuple[int, ...]],
                 error: Callable[[str], Exception]) -> tuple["ModelConfig", dict[str, Any]]:
    """(native config, PanopticFCN options) of a checkpoint with native key names, from its keys and shapes."""
    from .model import panopticfcn_config

    keys = set(sd)
    if any(k.startswith("neck.align") for k in keys):
        if not any(".lateral.conv_atten" in k for k in keys) or not any(".dcn.conv_offset_mask" in k for k in keys):
            raise error("PanopticFCN checkpoints come with the FPN or the full FaPN neck; this neck has FAM keys "
                        "without the FSM or the DCN")
        neck = "fapn"
    elif "neck.lateral2.weight" in keys:
        neck = "fpn"
    else:
        raise error("cannot infer the PanopticFCN neck: no fpn_lateral* / fan_align* keys")
    depth, bottleneck = resnet_depth(keys, error)
    kw: dict[str, Any] = dict(
        stem_out_channels=shape("backbone.stem.conv1.weight")[0],
        res2_out_channels=shape("backbone.res2.0.conv3.weight" if bottleneck else "backbone.res2.0.conv2.weight")[0],
        backbone_norm="FrozenBN" if "backbone.stem.conv1.norm.num_batches_tracked" not in keys else "BN",
        neck_channels=shape("neck.output2.weight")[0], num_classes=shape("position_head.out_inst.weight")[0],
        sem_seg_num_classes=shape("position_head.out_sem.weight")[0],
        head_conv_dims=shape("kernel_head.out_conv.weight")[0],
    )
    if bottleneck:
        kw["width_per_group"] = shape("backbone.res2.0.conv1.weight")[0]
    else:
        kw["stride_in_1x1"] = False
    if neck == "fapn":
        kw["deformable_groups"] = shape("neck.align2.dcn.conv_offset_mask.weight")[0] // 27
    dims = {name: shape(key)[0] for name, key in (("semantic_fpn", "semantic_fpn.p2.0.weight"),
                                                  ("position head", "position_head.out_inst.weight"))}
    if dims["semantic_fpn"] != kw["head_conv_dims"] or shape("position_head.out_inst.weight")[1] != kw[
            "head_conv_dims"]:
        raise error(f"semantic FPN, position and kernel heads of different widths are not supported "
                    f"({dims['semantic_fpn']}, {shape('position_head.out_inst.weight')[1]}, {kw['head_conv_dims']})")
    return panopticfcn_config(neck, depth, **kw), options_from_state_dict(sd, shape)


def config_from_detectron2(cfg: Mapping[str, Any], neck: str, error: Callable[[str], Exception]
                           ) -> tuple["ModelConfig", dict[str, Any]]:
    """(native config, PanopticFCN options) of an official PanopticFCN ``cfg.dump()``.

    ``neck`` (``"fapn"`` or ``"fpn"``) must come from elsewhere (the checkpoint's keys): the config does not say.
    Settings implemented otherwise here are refused through ``error(message)``.
    """
    from .model import panopticfcn_config

    if neck not in ("fapn", "fpn"):
        raise error(f"PanopticFCN neck must be 'fapn' or 'fpn' (from the checkpoint's keys), got {neck!r}")
    m = cfg["MODEL"]
    r, ph, kh, fe, sf = (m["RESNETS"], m["POSITION_HEAD"], m["KERNEL_HEAD"], m["FEATURE_ENCODER"],
                         m["SEMANTIC_FPN"])
    inf, comb, lw = m["INFERENCE"], m["INFERENCE"]["COMBINE"], m.get("LOSS_WEIGHT", {})
    num_convs = int(kh["NUM_CONVS"])
    expected = {
        "META_ARCHITECTURE": (m.get("META_ARCHITECTURE"), "PanopticFCN"),
        "FPN.NORM": (m.get("FPN", {}).get("NORM", ""), ""),
        "FPN.FUSE_TYPE": (m.get("FPN", {}).get("FUSE_TYPE", "sum"), "sum"),
        "FPN.IN_FEATURES": (list(m.get("FPN", {}).get("IN_FEATURES", [])), ["res2", "res3", "res4", "res5"]),
        "SEMANTIC_FPN.IN_FEATURES": (list(sf["IN_FEATURES"]), ["p2", "p3", "p4", "p5"]),
        "FEATURE_ENCODER.IN_FEATURES": (list(fe["IN_FEATURES"]), list(("p3", "p4", "p5", "p6", "p7"))),
        "SEMANTIC_FPN / POSITION_HEAD / KERNEL_HEAD .CONVS_DIM equal": (
            len({int(sf["CONVS_DIM"]), int(ph["CONVS_DIM"]), int(kh["CONVS_DIM"])}), 1),
        "SEMANTIC_FPN / POSITION_HEAD / KERNEL_HEAD .NORM equal": (len({sf["NORM"], ph["NORM"], kh["NORM"]}), 1),
        "POSITION_HEAD / FEATURE_ENCODER .NUM_CONVS = KERNEL_HEAD.NUM_CONVS": (
            {int(ph["NUM_CONVS"]), int(fe["NUM_CONVS"])}, {num_convs}),
        "POSITION_HEAD.COORD": (bool(ph["COORD"]), False),
        "KERNEL_HEAD.COORD / DEFORM": ((bool(kh["COORD"]), bool(kh["DEFORM"])), (True, False)),
        "FEATURE_ENCODER.COORD / DEFORM / NORM": ((bool(fe["COORD"]), bool(fe["DEFORM"]), fe["NORM"]),
                                                  (True, False, "")),
        "POSITION_HEAD.STUFF.WITH_THING": (bool(ph["STUFF"]["WITH_THING"]), True),
        "POSITION_HEAD.STUFF.NUM_CLASSES = SEM_SEG_HEAD.NUM_CLASSES": (
            int(ph["STUFF"]["NUM_CLASSES"]), int(m.get("SEM_SEG_HEAD", {}).get("NUM_CLASSES",
                                                                               ph["STUFF"]["NUM_CLASSES"]))),
        "INFERENCE.SIMILAR_TYPE": (inf["SIMILAR_TYPE"], "cosine"),
        "INFERENCE.COMBINE.ENABLE": (bool(comb.get("ENABLE", True)), True),
    }
    wrong = [f"{k} = {got!r} (supported: {want!r})" for k, (got, want) in expected.items() if got != want]
    if wrong:
        raise error(f"unsupported PanopticFCN config setting(s): {'; '.join(wrong)}")
    depth = int(r["DEPTH"])
    if depth not in (18, 34, 50, 101):
        raise error(f"unsupported ResNet depth {depth}")
    kw: dict[str, Any] = dict(
        backbone_norm=r["NORM"], stride_in_1x1=bool(r["STRIDE_IN_1X1"]),
        stem_out_channels=int(r["STEM_OUT_CHANNELS"]), res2_out_channels=int(r["RES2_OUT_CHANNELS"]),
        width_per_group=int(r["WIDTH_PER_GROUP"]), num_groups=int(r["NUM_GROUPS"]),
        res5_dilation=int(r["RES5_DILATION"]), neck_channels=int(m["FPN"]["OUT_CHANNELS"]),
        freeze_at=int(m["BACKBONE"].get("FREEZE_AT", 0)), pixel_mean=tuple(float(v) for v in m["PIXEL_MEAN"]),
        pixel_std=tuple(float(v) for v in m["PIXEL_STD"]), input_format=cfg.get("INPUT", {}).get("FORMAT", "BGR"),
        num_classes=int(ph["THING"]["NUM_CLASSES"]), sem_seg_num_classes=int(ph["STUFF"]["NUM_CLASSES"]),
        head_conv_dims=int(kh["CONVS_DIM"]), head_norm=kh["NORM"], common_stride=int(sf["COMMON_STRIDE"]),
        ignore_index=int(m.get("IGNORE_VALUE", 255)), panoptic_overlap_thresh=float(comb["OVERLAP_THRESH"]),
        panoptic_stuff_area_limit=int(comb["STUFF_AREA_LIMIT"]),
        panoptic_instances_score_thresh=float(comb["INST_THRESH"]),
        detections_per_image=int(ph["THING"]["TOP_NUM"]),
    )
    th = ph["THING"]
    options = dict(
        encoder_conv_dims=int(fe["CONVS_DIM"]), head_num_convs=num_convs, position_deform=bool(ph["DEFORM"]),
        center_thresh=float(th["THRES"]), stuff_thresh=float(ph["STUFF"]["THRES"]), center_top_num=int(th["TOP_NUM"]),
        mask_thresh=float(inf["INST_THRES"]), similar_thresh=float(inf["SIMILAR_THRES"]),
        similar_type=inf["SIMILAR_TYPE"], class_specific=bool(inf["CLASS_SPECIFIC"]),
        center_bias_value=float(th["BIAS_VALUE"]), pos_num=int(th["POS_NUM"]),
        gaussian_sigma=float(th["GAUSSIAN_SIGMA"]), min_overlap=float(th["MIN_OVERLAP"]),
        center_type=th["CENTER_TYPE"],
        instance_scales=tuple((float(a), float(b)) for a, b in kh["INSTANCE_SCALES"]),
        focal_alpha=float(lw.get("FOCAL_LOSS_ALPHA", 0.25)), focal_gamma=float(lw.get("FOCAL_LOSS_GAMMA", 2.0)),
        position_loss_weight=float(lw.get("POSITION", 1.0)), segment_loss_weight=float(lw.get("SEGMENT", 3.0)),
        tensor_dim=int(m.get("TENSOR_DIM", 100)),
    )
    return panopticfcn_config(neck, depth, **kw), options


def is_panopticfcn_config(cfg: Mapping[str, Any]) -> bool:
    """Whether a detectron2 ``cfg.dump()`` (loaded) is a PanopticFCN's."""
    return isinstance(cfg, Mapping) and cfg.get("MODEL", {}).get("META_ARCHITECTURE") == "PanopticFCN"


__all__ = ["D2_RULES", "config_from_detectron2", "export_official", "infer_config", "is_panopticfcn_config",
           "is_panopticfcn_state_dict", "native_to_official", "official_to_native", "options_from_state_dict"]
