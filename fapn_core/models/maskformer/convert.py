"""Official MaskFormer checkpoints and configs → native names and :class:`~fapn_core.models.zoo.ModelConfig`.

Key mapping (one-to-one; every other key keeps its name):

=============================================================  ==========================================
official                                                       native
=============================================================  ==========================================
``backbone.*`` (bare ResNet or Swin, no ``bottom_up``)          ``backbone.*``
``sem_seg_head.pixel_decoder.align_N.dcpack_L2.*``              ``neck.align_N.dcn.*``
``sem_seg_head.pixel_decoder.*``                                ``neck.*``
``sem_seg_head.predictor.{transformer,query_embed,…}.*``        ``head.{transformer,query_embed,…}.*``
``criterion.empty_weight`` (persistent buffer)                  ``criterion.empty_weight``
=============================================================  ==========================================

In FaPN checkpoints ``neck.align_N.offset.norm.*`` and ``neck.layer_N.norm.*`` are two keys of one GroupNorm.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .pixel_decoder_variants import decoder_from_keys

if TYPE_CHECKING:
    from ..zoo import ModelConfig

PREDICTOR_CHILDREN = ("transformer", "query_embed", "input_proj", "class_embed", "mask_embed")
_PRED = "|".join(PREDICTOR_CHILDREN)
D2_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^sem_seg_head\.pixel_decoder\.align_(\d)\.dcpack_L2\."), r"neck.align_\1.dcn."),
    (re.compile(r"^sem_seg_head\.pixel_decoder\."), "neck."),
    (re.compile(rf"^sem_seg_head\.predictor\.(?=(?:{_PRED})\.)"), "head."),
]
NATIVE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^neck\.align_(\d)\.dcn\."), r"sem_seg_head.pixel_decoder.align_\1.dcpack_L2."),
    (re.compile(r"^neck\."), "sem_seg_head.pixel_decoder."),
    (re.compile(rf"^head\.(?=(?:{_PRED})\.)"), "sem_seg_head.predictor."),
]
_DECODERS = {"BasePixelFANDecoder": "fapn", "BasePixelDecoder": "fpn"}


def is_maskformer_state_dict(keys) -> bool:
    """Whether official-named keys are a MaskFormer's (pixel decoder + transformer predictor)."""
    return any(k.startswith("sem_seg_head.pixel_decoder.") for k in keys) or any(
        k.startswith("sem_seg_head.predictor.transformer.") for k in keys)


def native_to_official(key: str) -> str:
    """Official MaskFormer key of a native MaskFormer key."""
    for pattern, repl in NATIVE_RULES:
        if pattern.search(key):
            return pattern.sub(repl, key, count=1)
    return key


def config_from_detectron2(cfg: Mapping[str, Any], error: Callable[[str], Exception]) -> "ModelConfig":
    """Native config from a MaskFormer ``cfg.dump()`` (``META_ARCHITECTURE: MaskFormer``); settings implemented
    otherwise here are refused through ``error(message)``."""
    from ..zoo import get_model_config

    m = cfg["MODEL"]
    s, mf = m["SEM_SEG_HEAD"], m["MASK_FORMER"]
    decoder = _DECODERS.get(s.get("PIXEL_DECODER_NAME"))
    expected = {
        "SEM_SEG_HEAD.NAME": (s.get("NAME"), "MaskFormerHead"),
        "SEM_SEG_HEAD.IN_FEATURES": (list(s.get("IN_FEATURES", [])), ["res2", "res3", "res4", "res5"]),
        "MASK_FORMER.TRANSFORMER_IN_FEATURE": (mf.get("TRANSFORMER_IN_FEATURE"), "res5"),
        "MASK_FORMER.TEST.PANOPTIC_ON": (bool(mf.get("TEST", {}).get("PANOPTIC_ON", False)), False),
        "MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": (
            bool(mf.get("TEST", {}).get("SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE", False)), False),
        "SEM_SEG_HEAD.PIXEL_DECODER_NAME known": (decoder is not None, True),
    }
    builder = m["BACKBONE"]["NAME"]
    if builder == "D2SwinTransformer":
        sw = m["SWIN"]
        expected.update({"SWIN.APE": (bool(sw.get("APE", False)), False),
                         "SWIN.QK_SCALE": (sw.get("QK_SCALE"), None),
                         "SWIN.OUT_FEATURES": (list(sw.get("OUT_FEATURES", [])), ["res2", "res3", "res4", "res5"])})
    elif builder == "build_resnet_backbone":
        r = m["RESNETS"]
        expected.update({"RESNETS.STEM_TYPE": (r.get("STEM_TYPE", "basic"), "basic"),
                         "RESNETS.DEFORM_ON_PER_STAGE": ([bool(v) for v in r.get("DEFORM_ON_PER_STAGE", [])],
                                                         [False] * 4),
                         "RESNETS.RES4_DILATION": (int(r.get("RES4_DILATION", 1)), 1)})
    else:
        raise error(f"unsupported MaskFormer backbone {builder!r}; expected build_resnet_backbone or D2SwinTransformer")
    wrong = [f"{k} = {got!r} (supported: {want!r})" for k, (got, want) in expected.items() if got != want]
    if wrong:
        raise error(f"unsupported MaskFormer config setting(s): {'; '.join(wrong)}")
    kw: dict[str, Any] = dict(
        neck=decoder, head="maskformer", num_classes=int(s["NUM_CLASSES"]), neck_channels=int(s["CONVS_DIM"]),
        mask_dim=int(s["MASK_DIM"]), head_norm=s["NORM"], ignore_index=int(s.get("IGNORE_VALUE", 255)),
        hidden_dim=int(mf["HIDDEN_DIM"]), num_queries=int(mf["NUM_OBJECT_QUERIES"]), nheads=int(mf["NHEADS"]),
        dim_feedforward=int(mf["DIM_FEEDFORWARD"]), enc_layers=int(mf["ENC_LAYERS"]),
        dec_layers=int(mf["DEC_LAYERS"]), pre_norm=bool(mf["PRE_NORM"]), transformer_dropout=float(mf["DROPOUT"]),
        deep_supervision=bool(mf["DEEP_SUPERVISION"]), enforce_input_proj=bool(mf["ENFORCE_INPUT_PROJ"]),
        no_object_weight=float(mf["NO_OBJECT_WEIGHT"]), mask_weight=float(mf["MASK_WEIGHT"]),
        dice_weight=float(mf["DICE_WEIGHT"]), size_divisibility=int(mf.get("SIZE_DIVISIBILITY", 32)),
        pixel_mean=tuple(m["PIXEL_MEAN"]), pixel_std=tuple(m["PIXEL_STD"]),
        input_format=cfg.get("INPUT", {}).get("FORMAT", "RGB"), freeze_at=int(m["BACKBONE"].get("FREEZE_AT", 0)),
    )
    if builder == "D2SwinTransformer":
        sw = m["SWIN"]
        kw.update(backbone="swin", depth=0, swin_embed_dim=int(sw["EMBED_DIM"]),
                  swin_depths=tuple(int(v) for v in sw["DEPTHS"]),
                  swin_num_heads=tuple(int(v) for v in sw["NUM_HEADS"]), swin_window_size=int(sw["WINDOW_SIZE"]),
                  swin_patch_size=int(sw["PATCH_SIZE"]), swin_mlp_ratio=float(sw["MLP_RATIO"]),
                  swin_qkv_bias=bool(sw["QKV_BIAS"]), swin_drop_path_rate=float(sw["DROP_PATH_RATE"]))
        base = "r50"
    else:
        r = m["RESNETS"]
        depth = int(r["DEPTH"])
        if depth not in (18, 34, 50, 101):
            raise error(f"unsupported ResNet depth {depth}")
        kw.update(depth=depth, backbone_norm=r["NORM"], stride_in_1x1=bool(r["STRIDE_IN_1X1"]),
                  stem_out_channels=int(r["STEM_OUT_CHANNELS"]), res2_out_channels=int(r["RES2_OUT_CHANNELS"]),
                  width_per_group=int(r["WIDTH_PER_GROUP"]), num_groups=int(r["NUM_GROUPS"]),
                  res5_dilation=int(r["RES5_DILATION"]))
        base = "r101" if depth == 101 else "r50"
    return get_model_config(f"{decoder}_{base}_maskformer").replace(**kw)


def infer_config(sd: Mapping[str, Any], shape: Callable[[str], tuple[int, ...]],
                 error: Callable[[str], Exception]) -> "ModelConfig":
    """Native config of a MaskFormer checkpoint (native key names) from its keys and shapes."""
    from ..zoo import get_model_config

    keys = set(sd)
    decoder = decoder_from_keys(keys)
    if decoder is None:
        raise error("cannot infer the MaskFormer pixel decoder from its neck.adapter_1/align_1/extra_1 keys")
    n_dec = len({k.split(".")[4] for k in keys if k.startswith("head.transformer.decoder.layers.")})
    n_enc = len({k.split(".")[4] for k in keys if k.startswith("head.transformer.encoder.layers.")})
    hidden = shape("head.query_embed.weight")[1]
    kw: dict[str, Any] = dict(
        neck=decoder, head="maskformer", num_classes=shape("head.class_embed.weight")[0] - 1,
        neck_channels=shape("neck.mask_features.weight")[1], mask_dim=shape("neck.mask_features.weight")[0],
        hidden_dim=hidden, num_queries=shape("head.query_embed.weight")[0],
        dim_feedforward=shape("head.transformer.decoder.layers.0.linear1.weight")[0], dec_layers=n_dec,
        enc_layers=n_enc, enforce_input_proj="head.input_proj.weight" in keys and (
            shape("head.input_proj.weight")[1] == hidden),
    )
    if n_enc and "head.transformer.encoder.norm.weight" in keys:
        kw["pre_norm"] = True
    if "criterion.empty_weight" in sd:
        # the shortest decimal of the float32 value (0.1, not 0.10000000149…)
        kw["no_object_weight"] = float(str(np.float32(sd["criterion.empty_weight"][-1].item())))
    if "backbone.patch_embed.proj.weight" in keys:
        n_layers = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("backbone.layers."))
        depths = tuple(len({k.split(".")[4] for k in keys if k.startswith(f"backbone.layers.{i}.blocks.")})
                       for i in range(n_layers))
        heads = tuple(shape(f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table")[1]
                      for i in range(n_layers))
        table = shape("backbone.layers.0.blocks.0.attn.relative_position_bias_table")[0]
        window = (round(table ** 0.5) + 1) // 2
        embed, _, patch, _ = shape("backbone.patch_embed.proj.weight")
        kw.update(backbone="swin", depth=0, swin_embed_dim=embed, swin_depths=depths, swin_num_heads=heads,
                  swin_window_size=window, swin_patch_size=patch,
                  swin_mlp_ratio=shape("backbone.layers.0.blocks.0.mlp.fc1.weight")[0] / embed,
                  swin_qkv_bias="backbone.layers.0.blocks.0.attn.qkv.bias" in keys)
        base = "r50"
    else:
        n_res4 = len({k.split(".")[2] for k in keys if k.startswith("backbone.res4.")})
        bottleneck = "backbone.res2.0.conv3.weight" in keys
        depth = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}.get((bottleneck, n_res4))
        if depth is None:
            raise error(f"cannot infer the ResNet depth ({n_res4} res4 blocks, bottleneck={bottleneck})")
        kw.update(depth=depth, stem_out_channels=shape("backbone.stem.conv1.weight")[0],
                  res2_out_channels=shape("backbone.res2.0.conv3.weight" if bottleneck
                                          else "backbone.res2.0.conv2.weight")[0],
                  backbone_norm="FrozenBN" if "backbone.stem.conv1.norm.num_batches_tracked" not in keys else "BN")
        if bottleneck:
            kw["width_per_group"] = shape("backbone.res2.0.conv1.weight")[0]
        base = "r101" if depth == 101 else "r50"
    if "neck.align_1.dcn.conv_offset_mask.weight" in keys:
        kw["deformable_groups"] = shape("neck.align_1.dcn.conv_offset_mask.weight")[0] // 27
    # MaskFormer's ResNet always has the stride in the 3×3 conv; keys cannot tell, the official configs say so
    return get_model_config(f"{decoder}_{base}_maskformer").replace(**kw)
