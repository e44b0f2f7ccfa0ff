"""``ModelConfig``: everything needed to build a model, serialised into every checkpoint's card.

Pure data (no module is built here): the factory in :mod:`fapn_core.models.zoo` and every model family read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .swin import swin_variant

MSRA_BGR_MEAN = (103.53, 116.28, 123.675)
MSRA_BGR_STD = (1.0, 1.0, 1.0)
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)
BACKBONES = {"r18": 18, "r34": 34, "r50": 50, "r101": 101}
DETECTOR_HEADS = ("fasterrcnn", "maskrcnn", "panoptic", "pointrend_rcnn")
TASKS = {"semfpn": "semantic", "pointrend": "semantic", "fasterrcnn": "detection", "maskrcnn": "instance",
         "panoptic": "panoptic", "maskformer": "semantic", "pointrend_rcnn": "instance",
         "panopticfcn": "panoptic"}
_TUPLE_FIELDS = ("pixel_mean", "pixel_std", "anchor_sizes", "anchor_aspect_ratios", "instance_scales")
_INT_TUPLE_FIELDS = ("swin_depths", "swin_num_heads")
# MaskFormer: backbone name → num_classes of its official configs (ADE20K-150; R101: COCO-Stuff-10K-171); r18/r34
# are light models trained from scratch here (the synthetic benchmark's 10 classes by default)
MASKFORMER_BACKBONES = {"r18": 10, "r34": 10, "r50": 150, "r101": 171, "swint": 150, "swins": 150, "swinb": 150,
                        "swinl": 150}


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
    # PointRend instance head (``pointrend_rcnn``; its point head reads point_fc_dim, point_num_fc, subdivision_*,
    # train_num_points, oversample_ratio, importance_sample_ratio above, its coarse head mask_conv_dims):
    # ROI_MASK_HEAD.FC_DIM / NUM_FC / POOLER_RESOLUTION / OUTPUT_SIDE_RESOLUTION, POINT_HEAD.COARSE_PRED_EACH_LAYER
    mask_fc_dim: int = 1024
    mask_num_fc: int = 2
    mask_pooler_resolution: int = 14
    mask_coarse_resolution: int = 7
    point_coarse_pred_each_layer: bool = False
    train_on_pred_boxes: bool = False  # ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES (any R-CNN mask head; PointRend sets it)
    # backbone kind: "resnet" (``depth``) or "swin" (``swin_*``; MaskFormer's D2SwinTransformer)
    backbone: str = "resnet"
    swin_embed_dim: int = 96
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_num_heads: tuple[int, ...] = (3, 6, 12, 24)
    swin_window_size: int = 7
    swin_patch_size: int = 4
    swin_mlp_ratio: float = 4.0
    swin_qkv_bias: bool = True
    swin_drop_path_rate: float = 0.3
    # MaskFormer (MODEL.MASK_FORMER.*; the pixel decoder uses neck_channels = CONVS_DIM and head_norm = NORM)
    mask_dim: int = 256
    hidden_dim: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    enc_layers: int = 0
    dec_layers: int = 6
    pre_norm: bool = False
    transformer_dropout: float = 0.1
    deep_supervision: bool = True
    enforce_input_proj: bool = False
    no_object_weight: float = 0.1
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    # PanopticFCN (fapn_core.models.panopticfcn.options.PanopticFCNOptions: the released *-FAST values)
    encoder_conv_dims: int = 64
    head_num_convs: int = 3
    position_deform: bool = True
    center_thresh: float = 0.2
    stuff_thresh: float = 0.1
    center_top_num: int = 100
    mask_thresh: float = 0.4
    similar_thresh: float = 0.9
    similar_type: str = "cosine"
    class_specific: bool = True
    center_bias_value: float = -2.19
    pos_num: int = 7
    gaussian_sigma: float = 3.0
    min_overlap: float = 0.7
    center_type: str = "mass"
    instance_scales: tuple[float, ...] = (1.0, 64.0, 32.0, 128.0, 64.0, 256.0, 128.0, 512.0, 256.0, 2048.0)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    position_loss_weight: float = 1.0
    segment_loss_weight: float = 3.0
    tensor_dim: int = 100
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def task(self) -> str:
        """``semantic``, ``detection``, ``instance`` or ``panoptic``."""
        return TASKS[self.head]

    @property
    def backbone_name(self) -> str:
        """``r50``, ``swinl``, … (``swin`` for a Swin that is none of the four named variants)."""
        if self.backbone == "swin":
            return swin_variant(self.swin_embed_dim, self.swin_depths, self.swin_num_heads) or "swin"
        return next((k for k, v in BACKBONES.items() if v == self.depth), f"r{self.depth}")

    @property
    def name(self) -> str:
        return f"{self.neck}_{self.backbone_name}_{self.head}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in _TUPLE_FIELDS + _INT_TUPLE_FIELDS:
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {unknown}")
        return cls(**_as_tuples(d))

    def replace(self, **overrides: Any) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown model option(s) {unknown}; valid options: {sorted(known)}")
        return dataclasses.replace(self, **_as_tuples(overrides))


def _as_tuples(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with its list-valued tuple fields as tuples of floats (normalisation, anchors) or ints (Swin)."""
    d = dict(d)
    for keys, kind in ((_TUPLE_FIELDS, float), (_INT_TUPLE_FIELDS, int)):
        for key in keys:
            if key in d:
                flat = [x for v in d[key] for x in (v if isinstance(v, (tuple, list)) else (v,))]  # (min, max) pairs
                d[key] = tuple(kind(v) for v in flat)
    return d
