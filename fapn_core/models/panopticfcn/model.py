"""``PanopticFCN`` = preprocess → backbone → neck (+ P6/P7 from p5) → semantic FPN → feature encoder; position
and kernel heads on p3..p7 → per-image inference (or training losses). The meta-architecture only wires the parts.

It keeps the :class:`~fapn_core.models.rcnn.detector.Detector` contract, so every consumer of a Panoptic FPN reads
it unchanged: RGB 0–255 images in (normalised and padded exactly as ``Detector.preprocess``), ``task ==
"panoptic"``, ``predict(image)`` → :class:`~fapn_core.models.rcnn.detector.DetectionResult` with instances
(boxes, scores, classes, masks), ``sem_seg`` (S+1, H, W) and ``panoptic_seg`` / ``segments_info``.
Its ``sem_seg`` holds sigmoid **probabilities** (``semantic_output == "probabilities"``; 0 for classes without a
kernel), not logits: the label is the argmax; normalise by the sum over channels rather than a softmax.

Extra captures: ``with model.capture_maps() as maps: model.predict(image)`` fills ``maps`` with one
:class:`~fapn_core.models.panopticfcn.captures.PanopticFCNMaps` per image (centre heatmaps and kept peaks, region
maps, candidates and fusion decisions). The neck's FAM/FSM are captured as for every FaPN neck (``model.neck``).

Official quirk kept on purpose: the released configs subtract the RGB-ordered ImageNet mean from a BGR image
(``input_format="BGR"``, ``pixel_mean=(123.675, 116.28, 103.53)`` in BGR order), see :func:`panopticfcn_config`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..necks import build_neck
from ..rcnn.detector import DetectionResult, Detector
from ..segmentor import ImageModel
from .captures import PanopticFCNMaps
from .encoder import FeatureEncoder, SemanticFPN, TopBlockP6P7
from .generators import StuffGenerator, ThingGenerator
from .inference import Combine, ImageHeads, infer_image
from .kernel_head import KernelHead
from .options import HEAD_LEVELS, PanopticFCNOptions
from .position_head import PositionHead

# The official PanopticFCN normalisation: ImageNet means in RGB order, applied to BGR images as they are.
OFFICIAL_PIXEL_MEAN = (123.675, 116.28, 103.53)


class PanopticFCN(ImageModel):
    """Box-free panoptic segmentation (Li et al., CVPR 2021) on an FPN or FaPN pyramid."""

    task = "panoptic"
    semantic_output = "probabilities"
    head_levels = HEAD_LEVELS
    preprocess = Detector.preprocess  # the same batching, normalisation and zero padding as every detector

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        top_block: TopBlockP6P7,
        semantic_fpn: SemanticFPN,
        feature_encoder: FeatureEncoder,
        position_head: PositionHead,
        kernel_head: KernelHead,
        thing_generator: ThingGenerator,
        stuff_generator: StuffGenerator,
        *,
        options: PanopticFCNOptions,
        ignore_index: int = 255,
        common_stride: int = 4,
        combine: Combine | None = None,
        **image_options: Any,
    ) -> None:
        """``image_options``: :class:`~fapn_core.models.segmentor.ImageModel`'s (pixel mean/std, input format,
        size divisibility)."""
        super().__init__(**{"input_format": "BGR", **image_options})
        self.backbone = backbone
        self.neck = neck
        self.top_block = top_block
        self.semantic_fpn = semantic_fpn
        self.feature_encoder = feature_encoder
        self.position_head = position_head
        self.kernel_head = kernel_head
        self.thing_generator = thing_generator
        self.stuff_generator = stuff_generator
        self.options = options
        self.ignore_index = ignore_index
        self.common_stride = common_stride
        self.combine = combine or Combine()
        self._maps_sink: list[PanopticFCNMaps] | None = None

    @property
    def num_classes(self) -> int:
        """Number of thing classes (centre heatmaps)."""
        return self.position_head.out_inst.out_channels

    @property
    def num_stuff_classes(self) -> int:
        """Stuff channels of ``sem_seg`` (channel 0 = all things)."""
        return self.position_head.out_sem.out_channels

    def pyramid(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """p2..p5 of the neck and p6, p7 of the top block for a normalised, padded batch."""
        feats = self.neck(self.backbone(x))
        feats["p6"], feats["p7"] = self.top_block(feats["p5"])
        return feats

    def extract_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """p2..p7 for RGB images (N, 3, H, W) (normalised and padded here)."""
        return self.pyramid(self.preprocess(images)[0])

    def heads(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor],
                                                             list[torch.Tensor]]:
        """(encode_feat (N, E, H/4, W/4), centre logits, region logits, kernels per head level)."""
        encode = self.feature_encoder(self.semantic_fpn(feats))
        centres, regions, kernels = [], [], []
        for name in self.head_levels:
            c, r = self.position_head(feats[name])
            centres.append(c)
            regions.append(r)
            kernels.append(self.kernel_head(feats[name]))
        return encode, centres, regions, kernels

    def forward(
        self, images: torch.Tensor | Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]] | None = None,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[DetectionResult] | dict[str, torch.Tensor]:
        """Eval: one :class:`DetectionResult` per image at ``output_sizes`` (default the input sizes).

        Training with ``targets`` (per image, as for Panoptic FPN: ``boxes`` (M, 4) XYXY, ``classes`` (M,),
        ``masks`` (M, H, W) bool and ``sem_seg`` (H, W) int64 with 0 = things, ``ignore_index`` ignored): losses
        ``loss_pos_th``, ``loss_pos_st``, ``loss_seg_th``, ``loss_seg_st``.
        """
        x, sizes = self.preprocess(images)
        feats = self.pyramid(x)
        encode, centres, regions, kernels = self.heads(feats)
        if self.training:
            from .losses import panopticfcn_losses

            if targets is None or len(targets) != len(sizes):
                raise ValueError("training forward needs one target dict per image")
            return panopticfcn_losses(self, encode, centres, regions, kernels, targets, tuple(x.shape[-2:]))
        out_sizes = list(output_sizes) if output_sizes is not None else sizes
        if len(out_sizes) != len(sizes):
            raise ValueError(f"{len(out_sizes)} output sizes for {len(sizes)} images")
        strides = {n: 2 ** int(n[1:]) for n in self.head_levels}
        results = []
        for i, (size, out) in enumerate(zip(sizes, out_sizes)):
            heads = ImageHeads([c[i] for c in centres], [r[i] for r in regions], [k[i] for k in kernels], encode[i])
            res, maps = infer_image(
                heads, self.thing_generator, self.stuff_generator, self.options, self.combine,
                num_stuff_channels=self.num_stuff_classes, common_stride=self.common_stride, image_size=size,
                output_size=(int(out[0]), int(out[1])), strides=strides, keep_maps=self._maps_sink is not None)
            if maps is not None and self._maps_sink is not None:
                self._maps_sink.append(maps)
            results.append(res)
        return results

    @contextlib.contextmanager
    def capture_maps(self) -> Iterator[list[PanopticFCNMaps]]:
        """Collect one :class:`PanopticFCNMaps` per image of every inference inside the block."""
        sink: list[PanopticFCNMaps] = []
        previous, self._maps_sink = self._maps_sink, sink
        try:
            yield sink
        finally:
            self._maps_sink = previous

    @torch.inference_mode()
    def predict(self, image: np.ndarray | torch.Tensor, *, amp: bool = False,
                output_size: tuple[int, int] | None = None) -> DetectionResult:
        """One RGB image (H, W, 3) uint8 or (3, H, W) → :class:`DetectionResult` (float32, on the model's device)."""
        x = self.image_tensor(image).to(self.device, torch.float32)
        with self.autocast(amp):
            res = self([x], output_sizes=None if output_size is None else [output_size])[0]
        for name in ("boxes", "scores", "sem_seg"):
            v = getattr(res, name)
            if v is not None and v.is_floating_point():
                setattr(res, name, v.float())
        return res


def panopticfcn_config(neck: str = "fapn", depth: int = 50, **overrides: Any) -> ModelConfig:
    """The released PanopticFCN R50 ``*-FAST`` configs (COCO: 80 thing classes, 53 stuff + "things") as a
    :class:`ModelConfig` with ``head="panopticfcn"`` (what the zoo registers as ``<neck>_r<depth>_panopticfcn``)."""
    cfg = ModelConfig(
        neck=neck, depth=depth, head="panopticfcn", num_classes=80, sem_seg_num_classes=54, freeze_at=2,
        head_conv_dims=256, head_norm="GN", common_stride=4, neck_channels=256, pixel_mean=OFFICIAL_PIXEL_MEAN,
        pixel_std=(1.0, 1.0, 1.0), input_format="BGR", panoptic_overlap_thresh=0.5, panoptic_stuff_area_limit=4096,
        panoptic_instances_score_thresh=0.2, detections_per_image=100,
    )
    return cfg.replace(**overrides) if overrides else cfg


def build_panopticfcn(cfg: ModelConfig, backbone: nn.Module, *, dcn_impl: str = "auto") -> PanopticFCN:
    """A randomly initialised :class:`PanopticFCN` from a ``head="panopticfcn"`` config on ``backbone`` (a ResNet
    as :func:`fapn_core.models.zoo.build_backbone` makes it); its :class:`PanopticFCNOptions` come from the
    config's fields of those names."""
    if cfg.backbone != "resnet":
        raise ValueError(f"PanopticFCN is built on a ResNet here, not {cfg.backbone!r}")
    opts = PanopticFCNOptions.from_config(cfg)
    neck = build_neck(cfg.neck, backbone.output_shape(), cfg.neck_channels, top_block=False, dcn_impl=dcn_impl)
    shapes = neck.output_shape()
    c, dims = cfg.neck_channels, cfg.head_conv_dims
    model = PanopticFCN(
        backbone, neck, TopBlockP6P7(c),
        SemanticFPN(shapes, dims, common_stride=cfg.common_stride, norm=cfg.head_norm),
        FeatureEncoder(dims, opts.encoder_conv_dims, opts.head_num_convs),
        PositionHead(c, cfg.num_classes, cfg.sem_seg_num_classes, conv_dims=dims, num_convs=opts.head_num_convs,
                     norm=cfg.head_norm, deform=opts.position_deform, bias_value=opts.center_bias_value,
                     dcn_impl=dcn_impl),
        KernelHead(c, dims, opts.head_num_convs, norm=cfg.head_norm),
        ThingGenerator(dims, opts.encoder_conv_dims), StuffGenerator(dims, opts.encoder_conv_dims),
        options=opts, pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std, input_format=cfg.input_format,
        size_divisibility=cfg.size_divisibility, ignore_index=cfg.ignore_index, common_stride=cfg.common_stride,
        combine=Combine(cfg.panoptic_overlap_thresh, cfg.panoptic_stuff_area_limit,
                        cfg.panoptic_instances_score_thresh),
    )
    model.config = cfg
    return model
