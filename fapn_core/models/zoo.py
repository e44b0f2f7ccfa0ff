"""One factory over a registry of named configurations: ``build_model("fapn_r50_pointrend", num_classes=19)``.

Names are ``<neck>_<backbone>_<head>``: necks from :data:`fapn_core.models.necks.NECKS`, backbones
``r18 r34 r50 r101``, semantic heads ``semfpn pointrend`` and the detectron2 R-CNN family ``fasterrcnn maskrcnn
panoptic`` (Panoptic FPN). Any :class:`ModelConfig` field can be overridden by keyword.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .backbones import build_resnet, freeze_stages
from .heads import HEADS, SemSegFPNHead, build_head
from .necks import NECKS, build_neck
from .rcnn.detector import Detector
from .rcnn.roi_heads import ROIHeads
from .rcnn.rpn import RPN
from .segmentor import Segmentor

MSRA_BGR_MEAN = (103.53, 116.28, 123.675)
MSRA_BGR_STD = (1.0, 1.0, 1.0)
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)
BACKBONES = {"r18": 18, "r34": 34, "r50": 50, "r101": 101}
DETECTOR_HEADS = ("fasterrcnn", "maskrcnn", "panoptic")
TASKS = {"semfpn": "semantic", "pointrend": "semantic", "fasterrcnn": "detection", "maskrcnn": "instance",
         "panoptic": "panoptic"}
_TUPLE_FIELDS = ("pixel_mean", "pixel_std", "anchor_sizes", "anchor_aspect_ratios")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model; serialised into every checkpoint's model card."""

    neck: str = "fapn"
    depth: int = 50
    head: str = "pointrend"
    num_classes: int = 19
    # backbone
    backbone_norm: str = "FrozenBN"
    stride_in_1x1: bool = True
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    width_per_group: int = 64
    num_groups: int = 1
    res5_dilation: int = 1
    # neck
    neck_channels: int = 256
    deformable_groups: int = 8
    # head
    head_conv_dims: int = 128
    head_norm: str = "GN"
    common_stride: int = 4
    point_fc_dim: int = 256
    point_num_fc: int = 3
    subdivision_steps: int = 2
    subdivision_num_points: int = 8192
    train_num_points: int = 2048
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # input
    pixel_mean: tuple[float, float, float] = MSRA_BGR_MEAN
    pixel_std: tuple[float, float, float] = MSRA_BGR_STD
    input_format: str = "BGR"
    size_divisibility: int = 32
    ignore_index: int = 255
    # R-CNN family (detectron2 defaults; ``num_classes`` counts thing classes there)
    freeze_at: int = 0
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk_train: int = 2000
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_train: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_batch_size_per_image: int = 256
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    box_fc_dim: int = 1024
    mask_conv_dims: int = 256
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    sem_seg_num_classes: int = 54
    sem_seg_loss_weight: float = 0.5
    panoptic_overlap_thresh: float = 0.5
    panoptic_stuff_area_limit: int = 4096
    panoptic_instances_score_thresh: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def task(self) -> str:
        """``semantic``, ``detection``, ``instance`` or ``panoptic``."""
        return TASKS[self.head]

    @property
    def name(self) -> str:
        back = next((k for k, v in BACKBONES.items() if v == self.depth), f"r{self.depth}")
        return f"{self.neck}_{back}_{self.head}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in _TUPLE_FIELDS:
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {unknown}")
        d = dict(d)
        for key in _TUPLE_FIELDS:
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    def replace(self, **overrides: Any) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown model option(s) {unknown}; valid options: {sorted(known)}")
        for key in _TUPLE_FIELDS:
            if key in overrides:
                overrides[key] = tuple(float(v) for v in overrides[key])
        return dataclasses.replace(self, **overrides)


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
    return cfg


_REGISTRY: dict[str, ModelConfig] = {
    f"{n}_{b}_{h}": _default_config(n, b, h)
    for n, b, h in itertools.product(NECKS, BACKBONES, HEADS + DETECTOR_HEADS)
}


def list_models(pattern: str = "") -> list[str]:
    """Registered model names containing ``pattern``."""
    return sorted(name for name in _REGISTRY if pattern in name)


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n][:8]
        raise KeyError(f"unknown model {name!r}; e.g. {close or list_models()[:8]} (see fapn_core.list_models())")
    return _REGISTRY[name].replace(**overrides) if overrides else _REGISTRY[name]


def build_from_config(cfg: ModelConfig, *, dcn_impl: str = "auto") -> Segmentor | Detector:
    """Build a randomly initialised :class:`Segmentor` (semantic heads) or :class:`Detector` (R-CNN family)."""
    backbone = build_resnet(
        cfg.depth, norm=cfg.backbone_norm, stem_out_channels=cfg.stem_out_channels,
        res2_out_channels=cfg.res2_out_channels, width_per_group=cfg.width_per_group,
        num_groups=cfg.num_groups, stride_in_1x1=cfg.stride_in_1x1, res5_dilation=cfg.res5_dilation,
    )
    freeze_stages(backbone, cfg.freeze_at)
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


def build_model(name: str, num_classes: int | None = None, *, dcn_impl: str = "auto", **overrides: Any
                ) -> Segmentor | Detector:
    """Build a registered model, e.g. ``build_model("fpn_r18_semfpn", num_classes=10, neck_channels=96)``."""
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return build_from_config(get_model_config(name, **overrides), dcn_impl=dcn_impl)


def count_parameters(model, prefix: str = "") -> int:
    """Number of parameter elements (buffers excluded), optionally under a module prefix."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
