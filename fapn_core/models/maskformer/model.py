"""``MaskFormer`` = preprocess → backbone → pixel decoder (``neck``) → transformer predictor (``head``) →
semantic inference; the meta-architecture only wires the parts.

It keeps the :class:`~fapn_core.models.segmentor.Segmentor` contract, so the semantic pipeline, metrics and app
treat it as a semantic model: RGB 0–255 images in, ``forward(images)`` → (N, K, H, W) at the input size in eval,
``forward(images, targets)`` → weighted losses in training (``targets``: (N, H, W) label maps, 255 = ignore),
``predict(image)`` → (K, H, W). Its semantic output is MaskFormer's ``sem_seg``: scores Σ_q p_q(c)·sigmoid(m_q) in
[0, Q], **not logits** (``semantic_output == "scores"``; the label is the argmax; normalise with
:func:`~fapn_core.models.maskformer.inference.scores_to_probabilities` rather than a softmax).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..segmentor import Segmentor
from .criterion import SetCriterion
from .inference import semantic_inference
from .pixel_decoder import PixelDecoder
from .predictor import TransformerPredictor

if TYPE_CHECKING:
    from ..config import ModelConfig


def semantic_targets(label_maps: torch.Tensor, num_classes: int, ignore_index: int = 255
                     ) -> list[dict[str, torch.Tensor]]:
    """Per-image mask-classification targets from label maps (N, H, W), as MaskFormer's semantic dataset mapper
    builds them: one binary mask per class present (ignore excluded), classes in ascending order."""
    out = []
    for t in label_maps:
        classes = torch.unique(t)
        classes = classes[classes != ignore_index]
        if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"labels must be 0..{num_classes - 1} or {ignore_index}; got {classes.tolist()}")
        out.append({"labels": classes.to(torch.int64), "masks": (t[None] == classes[:, None, None]).float()})
    return out


class MaskFormer(Segmentor):
    """Mask-classification semantic segmentation (MaskFormer, with the plain or FaPN pixel decoder): a
    :class:`Segmentor` whose head classifies masks and whose training loss is the set criterion."""

    semantic_output = "scores"

    def __init__(self, backbone: nn.Module, neck: PixelDecoder, head: TransformerPredictor,
                 criterion: SetCriterion, **image_options) -> None:
        super().__init__(backbone, neck, head, **image_options)
        self.criterion = criterion

    @property
    def num_queries(self) -> int:
        return self.head.num_queries

    def forward_outputs(self, x: torch.Tensor, *, with_aux: bool | None = None) -> dict[str, object]:
        """Raw MaskFormer outputs for a normalised, padded batch ``x``: ``pred_logits`` (N, Q, K+1), ``pred_masks``
        (N, Q, Hp/4, Wp/4) mask logits, ``aux_outputs`` (earlier decoder layers; by default only in training)."""
        feats = self.backbone(x)
        levels = self.neck(feats)
        mask_features = self.neck.mask_features(levels["p2"])
        return self.head(feats["res5"], mask_features, with_aux=with_aux)

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Eval: semantic scores (N, K, H, W) at the input size. Training with ``targets`` (N, H, W): losses."""
        h, w = images.shape[-2:]
        x = self.pad(self.normalize(images))
        outputs = self.forward_outputs(x)
        if self.training:
            if targets is None:
                raise ValueError("training forward needs targets (N, H, W) int64")
            t = self.pad(targets.to(x.device, torch.long).unsqueeze(1), self.ignore_index).squeeze(1)
            return self.criterion(outputs, semantic_targets(t, self.num_classes, self.ignore_index))
        return semantic_inference(outputs["pred_logits"], outputs["pred_masks"], x.shape[-2:], (h, w))


def build_maskformer(cfg: "ModelConfig", backbone: nn.Module, *, dcn_impl: str = "auto") -> MaskFormer:
    """A randomly initialised :class:`MaskFormer` from a ``head="maskformer"`` config on ``backbone`` (a module
    with ``res2..res5`` and ``output_shape()``, as :func:`fapn_core.models.zoo.build_backbone` makes)."""
    shapes = backbone.output_shape()
    neck = PixelDecoder(shapes, kind=cfg.neck, conv_dim=cfg.neck_channels, mask_dim=cfg.mask_dim,
                        norm=cfg.head_norm, deformable_groups=cfg.deformable_groups, dcn_impl=dcn_impl)
    head = TransformerPredictor(
        shapes["res5"].channels, cfg.num_classes, hidden_dim=cfg.hidden_dim, num_queries=cfg.num_queries,
        nheads=cfg.nheads, dropout=cfg.transformer_dropout, dim_feedforward=cfg.dim_feedforward,
        enc_layers=cfg.enc_layers, dec_layers=cfg.dec_layers, pre_norm=cfg.pre_norm,
        deep_supervision=cfg.deep_supervision, mask_dim=cfg.mask_dim, enforce_input_project=cfg.enforce_input_proj,
    )
    criterion = SetCriterion(cfg.num_classes, no_object_weight=cfg.no_object_weight, mask_weight=cfg.mask_weight,
                             dice_weight=cfg.dice_weight)
    model = MaskFormer(backbone, neck, head, criterion, pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std,
                       input_format=cfg.input_format, size_divisibility=cfg.size_divisibility,
                       ignore_index=cfg.ignore_index)
    model.config = cfg
    return model
