"""One factory over a registry of named configurations: ``build_model("fapn_r50_pointrend", num_classes=19)``.

Names are ``<neck>_<backbone>_<head>``: necks from :data:`fapn_core.models.necks.NECKS`, backbones
``r18 r34 r50 r101``, semantic heads ``semfpn pointrend`` and the detectron2 R-CNN family ``fasterrcnn maskrcnn
panoptic`` (Panoptic FPN) ``pointrend_rcnn`` (Mask R-CNN with PointRend's mask head). MaskFormer (``maskformer``, a
semantic head) takes the pixel decoders ``fpn`` (official) and ``fapn`` (FaPN-full's: FAM without FSM) on ``r50 r101
swinl`` (and ``swint swins swinb``, light ``r18 r34``), with the official configs' defaults (ADE20K-150; R101:
COCO-Stuff-10K-171), and every other ablation neck as a pixel-decoder variant
(:mod:`fapn_core.models.maskformer.pixel_decoder_variants`). Any :class:`ModelConfig` field can be overridden by
keyword.
"""

from __future__ import annotations

import itertools
from typing import Any

from torch import nn

from .backbones import build_resnet, freeze_stages
from .config import (  # noqa: F401  (re-exported: the factory's public names)
    BACKBONES, DETECTOR_HEADS, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, MASKFORMER_BACKBONES, MSRA_BGR_MEAN,
    MSRA_BGR_STD, TASKS, ModelConfig,
)
from .heads import HEADS, SemSegFPNHead, build_head
from .maskformer.model import MaskFormer, build_maskformer
from .maskformer.pixel_decoder import PIXEL_DECODERS
from .necks import NECKS, build_neck
from .panopticfcn.model import PanopticFCN, build_panopticfcn, panopticfcn_config
from .rcnn.detector import Detector
from .rcnn.roi_heads import ROIHeads
from .rcnn.rpn import RPN
from .segmentor import Segmentor
from .swin import SWIN_VARIANTS, SwinTransformer



def _default_config(neck: str, backbone: str, head: str) -> ModelConfig:
    depth = BACKBONES[backbone]
    detector = head in DETECTOR_HEADS
    if depth >= 50:
        # The official FaPN-full / detectron2 configurations (MSRA weights, BGR, FrozenBN); COCO for the R-CNN
        # family (80 thing classes, 53 stuff + "things" for Panoptic FPN, stem and res2 frozen).
        cfg = ModelConfig(neck=neck, depth=depth, head=head)
        if detector:
            cfg = cfg.replace(num_classes=80, freeze_at=2)
    else:
        # Light models trained from scratch here: BatchNorm, torchvision-style RGB normalisation, 128 channels.
        cfg = ModelConfig(
            neck=neck, depth=depth, head=head, backbone_norm="BN", stride_in_1x1=False, res2_out_channels=64,
            neck_channels=128, head_conv_dims=128, point_fc_dim=128, subdivision_num_points=4096,
            pixel_mean=IMAGENET_RGB_MEAN, pixel_std=IMAGENET_RGB_STD, input_format="RGB",
        )
        if detector:
            cfg = cfg.replace(num_classes=80, box_fc_dim=512, mask_conv_dims=128)
            if head == "pointrend_rcnn":
                cfg = cfg.replace(mask_fc_dim=512)
    if head == "pointrend_rcnn":
        # detectron2's PointRend instance configs: 784 points × 5 steps (28² → 224²), 196 training points
        cfg = cfg.replace(subdivision_steps=5, subdivision_num_points=784, train_num_points=196,
                          point_coarse_pred_each_layer=True, train_on_pred_boxes=True)
    return cfg


def _maskformer_config(decoder: str, backbone: str) -> ModelConfig:
    """The official MaskFormer configs: RGB ImageNet normalisation, stride in the 3×3 conv, FrozenBN, GN pixel
    decoder (256), 100 queries, 6 post-norm decoder layers, deep supervision, no-object weight 0.1."""
    cfg = ModelConfig(
        neck=decoder, head="maskformer", num_classes=MASKFORMER_BACKBONES[backbone], stride_in_1x1=False,
        pixel_mean=IMAGENET_RGB_MEAN, pixel_std=IMAGENET_RGB_STD, input_format="RGB", neck_channels=256,
        head_norm="GN",
    )
    if backbone in SWIN_VARIANTS:
        dim, depths, heads, window = SWIN_VARIANTS[backbone]
        return cfg.replace(backbone="swin", depth=0, swin_embed_dim=dim, swin_depths=depths, swin_num_heads=heads,
                           swin_window_size=window)
    if BACKBONES[backbone] < 50:
        # light models trained from scratch here: BatchNorm backbone, a 128-wide decoder, 3 decoder layers, 50 queries
        return cfg.replace(depth=BACKBONES[backbone], backbone_norm="BN", res2_out_channels=64, neck_channels=128,
                           mask_dim=128, hidden_dim=128, nheads=4, dim_feedforward=512, dec_layers=3,
                           num_queries=50)
    return cfg.replace(depth=BACKBONES[backbone])


_REGISTRY: dict[str, ModelConfig] = {
    f"{n}_{b}_{h}": _default_config(n, b, h)
    for n, b, h in itertools.product(NECKS, BACKBONES, HEADS + DETECTOR_HEADS)
}
# MaskFormer: every ablation neck as a pixel decoder (PIXEL_DECODERS = NECKS; ``fam`` is the same network as ``fapn``)
_REGISTRY.update({f"{n}_{b}_maskformer": _maskformer_config(n, b)
                  for n, b in itertools.product(PIXEL_DECODERS, MASKFORMER_BACKBONES)})
# PanopticFCN: the released configs at R50/R101; light R18/R34 variants trained from scratch here (BatchNorm, RGB
# ImageNet normalisation, 128 channels, instance scales halved for small images)
_REGISTRY.update({f"{n}_{b}_panopticfcn": panopticfcn_config(n, BACKBONES[b])
                  for n, b in itertools.product(NECKS, ("r50", "r101"))})
_REGISTRY.update({f"{n}_{b}_panopticfcn": panopticfcn_config(
    n, BACKBONES[b], backbone_norm="BN", stride_in_1x1=False, res2_out_channels=64, neck_channels=128,
    head_conv_dims=128, encoder_conv_dims=32, pixel_mean=IMAGENET_RGB_MEAN, pixel_std=IMAGENET_RGB_STD,
    input_format="RGB", instance_scales=(1, 32, 16, 64, 32, 128, 64, 256, 128, 2048))
    for n, b in itertools.product(NECKS, ("r18", "r34"))})


def list_models(pattern: str = "") -> list[str]:
    """Registered model names containing ``pattern``."""
    return sorted(name for name in _REGISTRY if pattern in name)


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        raise KeyError(f"unknown model {name!r}; e.g. {close or list_models()[:8]} (see fapn_core.list_models())")
    return _REGISTRY[name].replace(**overrides) if overrides else _REGISTRY[name]


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """ResNet (detectron2 names; ``stride_in_1x1``, norm and frozen stages as configured) or MaskFormer's Swin."""
    if cfg.backbone == "swin":
        return SwinTransformer(
            embed_dim=cfg.swin_embed_dim, depths=cfg.swin_depths, num_heads=cfg.swin_num_heads,
            window_size=cfg.swin_window_size, patch_size=cfg.swin_patch_size, mlp_ratio=cfg.swin_mlp_ratio,
            qkv_bias=cfg.swin_qkv_bias, drop_path_rate=cfg.swin_drop_path_rate,
        )
    if cfg.backbone != "resnet":
        raise ValueError(f"unknown backbone kind {cfg.backbone!r}; expected 'resnet' or 'swin'")
    backbone = build_resnet(
        cfg.depth, norm=cfg.backbone_norm, stem_out_channels=cfg.stem_out_channels,
        res2_out_channels=cfg.res2_out_channels, width_per_group=cfg.width_per_group,
        num_groups=cfg.num_groups, stride_in_1x1=cfg.stride_in_1x1, res5_dilation=cfg.res5_dilation,
    )
    return freeze_stages(backbone, cfg.freeze_at)


def build_from_config(cfg: ModelConfig, *, dcn_impl: str = "auto") -> Segmentor | Detector | MaskFormer | PanopticFCN:
    """Build a randomly initialised :class:`Segmentor` (semantic heads), :class:`Detector` (R-CNN family) or
    :class:`MaskFormer` (``head="maskformer"``)."""
    if cfg.head == "panopticfcn":
        return build_panopticfcn(cfg, build_backbone(cfg), dcn_impl=dcn_impl)
    if cfg.head == "maskformer":
        return build_maskformer(cfg, build_backbone(cfg), dcn_impl=dcn_impl)
    if cfg.backbone != "resnet":
        raise ValueError(f"backbone {cfg.backbone!r} is only available with the maskformer head")
    backbone = build_backbone(cfg)
    neck = build_neck(cfg.neck, backbone.output_shape(), cfg.neck_channels, dcn_impl=dcn_impl)
    if cfg.head in DETECTOR_HEADS:
        return _build_detector(cfg, backbone, neck)
    head_kwargs: dict[str, Any] = dict(
        conv_dims=cfg.head_conv_dims, common_stride=cfg.common_stride, norm=cfg.head_norm,
        ignore_index=cfg.ignore_index,
    )
    if cfg.head == "pointrend":
        head_kwargs.update(
            fc_dim=cfg.point_fc_dim, num_fc=cfg.point_num_fc, subdivision_steps=cfg.subdivision_steps,
            subdivision_num_points=cfg.subdivision_num_points, train_num_points=cfg.train_num_points,
            oversample_ratio=cfg.oversample_ratio, importance_sample_ratio=cfg.importance_sample_ratio,
        )
    head = build_head(cfg.head, neck.output_shape(), cfg.num_classes, **head_kwargs)
    model = Segmentor(
        backbone, neck, head, pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std,
        input_format=cfg.input_format, size_divisibility=cfg.size_divisibility, ignore_index=cfg.ignore_index,
    )
    model.config = cfg
    return model


def _build_detector(cfg: ModelConfig, backbone: nn.Module, neck: nn.Module) -> Detector:
    shapes = neck.output_shape()
    roi_heads = ROIHeads(
        shapes, cfg.num_classes, box_fc_dim=cfg.box_fc_dim, mask_on=cfg.head != "fasterrcnn",
        mask_conv_dims=cfg.mask_conv_dims, batch_size_per_image=cfg.roi_batch_size_per_image,
        positive_fraction=cfg.roi_positive_fraction, score_thresh=cfg.score_thresh_test,
        nms_thresh=cfg.nms_thresh_test, detections_per_image=cfg.detections_per_image,
        point_rend=_point_rend_options(cfg) if cfg.head == "pointrend_rcnn" else None,
        train_on_pred_boxes=cfg.train_on_pred_boxes,
    )
    head = None
    if cfg.head == "panoptic":
        head = SemSegFPNHead(shapes, cfg.sem_seg_num_classes, conv_dims=cfg.head_conv_dims,
                             common_stride=cfg.common_stride, norm=cfg.head_norm, ignore_index=cfg.ignore_index,
                             loss_weight=cfg.sem_seg_loss_weight)
    rpn = RPN(
        shapes, anchor_sizes=[(s,) for s in cfg.anchor_sizes], aspect_ratios=cfg.anchor_aspect_ratios,
        pre_nms_topk=(cfg.rpn_pre_nms_topk_train, cfg.rpn_pre_nms_topk_test),
        post_nms_topk=(cfg.rpn_post_nms_topk_train, cfg.rpn_post_nms_topk_test),
        nms_thresh=cfg.rpn_nms_thresh, batch_size_per_image=cfg.rpn_batch_size_per_image,
    )
    model = Detector(
        backbone, neck, rpn, roi_heads, head, pixel_mean=cfg.pixel_mean,
        pixel_std=cfg.pixel_std, input_format=cfg.input_format, size_divisibility=cfg.size_divisibility,
        ignore_index=cfg.ignore_index, overlap_thresh=cfg.panoptic_overlap_thresh,
        stuff_area_limit=cfg.panoptic_stuff_area_limit, instances_score_thresh=cfg.panoptic_instances_score_thresh,
    )
    model.config = cfg
    return model


def _point_rend_options(cfg: ModelConfig) -> dict[str, Any]:
    """:class:`~fapn_core.models.rcnn.point_rend.PointRendMaskHead` options of a ``pointrend_rcnn`` config."""
    return dict(
        conv_dim=cfg.mask_conv_dims, fc_dim=cfg.mask_fc_dim, num_fc=cfg.mask_num_fc,
        pooler_resolution=cfg.mask_pooler_resolution, output_resolution=cfg.mask_coarse_resolution,
        point_fc_dim=cfg.point_fc_dim, point_num_fc=cfg.point_num_fc,
        coarse_pred_each_layer=cfg.point_coarse_pred_each_layer, subdivision_steps=cfg.subdivision_steps,
        subdivision_num_points=cfg.subdivision_num_points, train_num_points=cfg.train_num_points,
        oversample_ratio=cfg.oversample_ratio, importance_sample_ratio=cfg.importance_sample_ratio,
    )


def build_model(name: str, num_classes: int | None = None, *, dcn_impl: str = "auto", **overrides: Any
                ) -> Segmentor | Detector | MaskFormer | PanopticFCN:
    """Build a registered model, e.g. ``build_model("fpn_r18_semfpn", num_classes=10, neck_channels=96)``."""
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return build_from_config(get_model_config(name, **overrides), dcn_impl=dcn_impl)


def count_parameters(model, prefix: str = "") -> int:
    """Number of parameter elements (buffers excluded), optionally under a module prefix."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
