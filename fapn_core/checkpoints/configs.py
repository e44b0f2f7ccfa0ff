"""The native :class:`ModelConfig` of an official checkpoint: inferred from its keys and shapes, or read from a
detectron2 ``cfg.dump()`` (settings implemented differently here are refused by name)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..models.d2_names import resnet_depth
from ..models.maskformer import convert as maskformer_convert
from ..models.panopticfcn import convert as panopticfcn_convert
from ..models.zoo import ModelConfig, get_model_config
from .errors import CheckpointError
from .keys import detectron2_to_native

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
