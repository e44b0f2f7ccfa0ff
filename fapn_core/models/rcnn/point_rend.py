"""PointRend's instance mask head (detectron2 ``PointRendMaskHead``): a coarse head and a point head.

Inference (per detection, all detections at once): the coarse head (``ConvFCHead``) predicts K×7×7 logits from a
14×14 grid of p2 samples; the point head then predicts a regular ``init``×``init`` grid of points from p2 features
and the coarse logits sampled there, and each refinement step doubles the map (bilinear) and re-predicts the
``subdivision_num_points`` cells whose predicted-class logit is closest to 0. Training: the coarse logits get
Mask R-CNN's loss at 7×7, and the point head a BCE at points drawn by oversampling + importance sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import StandardPointHead
from ..layers import ShapeSpec, c2_msra_fill, c2_xavier_fill
from .mask_head import MaskHead
from .point_features import (
    box_points_to_image, instance_uncertainty, point_sample, regular_grid, sample_image_features,
    sample_mask_labels, subdivision_schedule, uncertain_points_on_grid, uncertain_points_with_randomness,
)


class CoarseMaskHead(nn.Module):
    """detectron2 PointRend ``ConvFCHead``: [1×1 ``reduce_channel_dim_conv`` + ReLU if C > ``conv_dim``] →
    2×2 stride-2 ``reduce_spatial_dim_conv`` + ReLU → flatten (channel-major) → ``num_fc`` × (Linear + ReLU) →
    ``prediction`` Linear, viewed as (R, K, S, S)."""

    def __init__(self, in_channels: int, num_classes: int, *, conv_dim: int = 256, fc_dim: int = 1024,
                 num_fc: int = 2, input_resolution: int = 14, output_resolution: int = 7) -> None:
        super().__init__()
        if in_channels < conv_dim:
            raise ValueError(f"coarse mask head: {in_channels} input channels < conv_dim {conv_dim} (detectron2 "
                             "only reduces channels, it never widens them)")
        self.output_shape = (num_classes, output_resolution, output_resolution)
        self.conv_layers: list[nn.Conv2d] = []
        if in_channels > conv_dim:
            self.reduce_channel_dim_conv = nn.Conv2d(in_channels, conv_dim, 1)
            self.conv_layers.append(self.reduce_channel_dim_conv)
        self.reduce_spatial_dim_conv = nn.Conv2d(conv_dim, conv_dim, 2, stride=2)
        self.conv_layers.append(self.reduce_spatial_dim_conv)
        for conv in self.conv_layers:
            c2_msra_fill(conv)
        dim = conv_dim * input_resolution * input_resolution // 4
        self.num_fc = num_fc
        for k in range(num_fc):
            fc = nn.Linear(dim, fc_dim)
            c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            dim = fc_dim
        self.prediction = nn.Linear(dim, num_classes * output_resolution * output_resolution)
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.constant_(self.prediction.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        for conv in self.conv_layers:
            x = F.relu(conv(x))
        x = x.flatten(1)
        for k in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{k + 1}")(x))
        return self.prediction(x).view(n, *self.output_shape)


@dataclass
class SubdivisionStep:
    """One pass of the subdivision inference for R detections.

    ``grid_side`` W of the W×W map this step writes; ``point_coords`` (R, P, 2) box-normalised (x, y) cell centres;
    ``point_indices`` (R, P) flat ``y·W + x`` in top-k order (``None`` for the initial regular grid, where point
    ``p`` is cell ``p``); ``point_logits`` (R, K, P). ``fine_features`` (R, C, P) and ``coarse_features``
    (R, K, P) only when asked for (``keep_features``).
    """

    grid_side: int
    point_coords: torch.Tensor
    point_logits: torch.Tensor
    point_indices: torch.Tensor | None = None
    fine_features: torch.Tensor | None = None
    coarse_features: torch.Tensor | None = None


@dataclass
class PointRendOutput:
    """What the head computes for R detections: final ``mask_logits`` (R, 1, S, S) of each detection's class, the
    coarse head's ``coarse_logits`` (R, K, 7, 7) and every subdivision step."""

    mask_logits: torch.Tensor
    coarse_logits: torch.Tensor
    steps: list[SubdivisionStep] = field(default_factory=list)


@dataclass
class PointRendCapture:
    """PointRend internals per instance of a result (the ``DetectionResult.point_rend`` capture).

    ``points[s]`` (N, P_s, 2): the (x, y) points step ``s`` evaluated, in pixels of the result's image (step 0:
    the regular ``grid_sides[0]``² grid; later steps: the most uncertain cells of the doubled map, most uncertain
    first); ``coarse_logits`` (N, 7, 7): the coarse head's logits of each instance's class (the coarse mask the
    point head reads); ``initial_logits`` (N, g, g), g = ``grid_sides[0]``: the mask before any refinement step.
    """

    points: list[torch.Tensor]
    grid_sides: tuple[int, ...]
    coarse_logits: torch.Tensor
    initial_logits: torch.Tensor

    def __len__(self) -> int:
        return int(self.coarse_logits.shape[0])

    def to(self, device: str | torch.device) -> "PointRendCapture":
        return PointRendCapture([p.to(device) for p in self.points], self.grid_sides,
                                self.coarse_logits.to(device), self.initial_logits.to(device))

    def select(self, keep: torch.Tensor) -> "PointRendCapture":
        """The instances in ``keep`` (index or bool mask)."""
        return PointRendCapture([p[keep] for p in self.points], self.grid_sides, self.coarse_logits[keep],
                                self.initial_logits[keep])

    def scaled(self, sx: float, sy: float) -> "PointRendCapture":
        """Points in an image resized by (sx, sy)."""
        factor = torch.tensor([sx, sy], dtype=torch.float32)
        return PointRendCapture([p * factor.to(p) for p in self.points], self.grid_sides, self.coarse_logits,
                                self.initial_logits)

    def split(self, counts: Sequence[int]) -> list["PointRendCapture"]:
        """One capture per image of a batch with ``counts`` detections each."""
        parts = [p.split(list(counts)) for p in self.points]
        return [PointRendCapture([pp[i] for pp in parts], self.grid_sides, c, g) for i, (c, g) in enumerate(
            zip(self.coarse_logits.split(list(counts)), self.initial_logits.split(list(counts))))]


class PointRendMaskHead(nn.Module):
    """``point_head`` (registered first, as in detectron2's state dict) and ``coarse_head`` on ``in_features``.

    ``output_resolution`` (OUTPUT_SIDE_RESOLUTION) is both the coarse logits' side and the start of the
    subdivision schedule (:func:`subdivision_schedule`).
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        num_classes: int,
        *,
        in_features: Sequence[str] = ("p2",),
        conv_dim: int = 256,
        fc_dim: int = 1024,
        num_fc: int = 2,
        pooler_resolution: int = 14,
        output_resolution: int = 7,
        point_fc_dim: int = 256,
        point_num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
        subdivision_steps: int = 5,
        subdivision_num_points: int = 784,
        train_num_points: int = 196,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.in_features = tuple(in_features)
        self.scales = [1.0 / input_shape[f].stride for f in self.in_features]
        channels = sum(input_shape[f].channels for f in self.in_features)
        self.num_classes = num_classes
        self.point_head = StandardPointHead(channels, num_classes, fc_dim=point_fc_dim, num_fc=point_num_fc,
                                            coarse_pred_each_layer=coarse_pred_each_layer)
        self.coarse_head = CoarseMaskHead(channels, num_classes, conv_dim=conv_dim, fc_dim=fc_dim, num_fc=num_fc,
                                          input_resolution=pooler_resolution, output_resolution=output_resolution)
        self.pooler_resolution = pooler_resolution
        self.subdivision_num_points = subdivision_num_points
        self.init_resolution, self.refine_steps = subdivision_schedule(
            output_resolution, subdivision_steps, subdivision_num_points)
        self.train_num_points = train_num_points
        self.oversample_ratio, self.importance_sample_ratio = oversample_ratio, importance_sample_ratio

    @property
    def output_resolution(self) -> int:
        """Side of the final mask logits (56 for 196 points / 3 steps, 224 for the official 784 / 5)."""
        return self.init_resolution * 2 ** self.refine_steps

    def _features(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [features[f] for f in self.in_features]

    def coarse_logits(self, feats: list[torch.Tensor], boxes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Coarse head on a ``pooler_resolution``² grid of p2 samples per box (``grid_sample``, not ROIAlign)."""
        r, s = sum(len(b) for b in boxes), self.pooler_resolution
        device = feats[0].device
        pooled = sample_image_features(feats, self.scales, boxes, regular_grid(r, s, device))
        return self.coarse_head(pooled.view(r, pooled.shape[1], s, s))

    def point_logits(self, feats: list[torch.Tensor], boxes: Sequence[torch.Tensor], coords: torch.Tensor,
                     coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(point logits (R, K, P), fine features (R, C, P), coarse features (R, K, P)) at box-normalised points."""
        fine = sample_image_features(feats, self.scales, boxes, coords)
        coarse_at = point_sample(coarse, coords.to(coarse.dtype), align_corners=False)
        return self.point_head(fine, coarse_at), fine, coarse_at

    def forward(self, features: dict[str, torch.Tensor], boxes: Sequence[torch.Tensor], classes: torch.Tensor,
                *, keep_features: bool = False) -> PointRendOutput:
        """Subdivision inference for the detections ``boxes`` (per image, input pixels) of ``classes`` (ΣR,).

        detectron2 carries all K channels through the steps (upsampling each, scattering the point logits into
        each), but only the detection's own class is ever read (the uncertainty, the final probabilities), and
        bilinear upsampling works channel by channel: carrying that one channel gives the same mask logits with
        1/K of the memory (1.6 GB → 20 MB for 100 COCO detections at 224²). The point head still predicts all K.
        """
        feats = self._features(features)
        r, k = int(classes.shape[0]), self.num_classes
        rows = torch.arange(r, device=classes.device)
        coarse = self.coarse_logits(feats, boxes)
        side = self.init_resolution
        coords = regular_grid(r, side, coarse.device)
        if r == 0:  # detectron2 stops after the initial step when there is nothing to refine
            logits = coarse.new_zeros((0, 1, side, side))
            return PointRendOutput(logits, coarse, [SubdivisionStep(side, coords, coarse.new_zeros((0, k, side ** 2)))])
        steps: list[SubdivisionStep] = []

        def evaluate(coords: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
            """Point logits of the detections' own classes (R, P); the step is recorded."""
            pl, fine, at = self.point_logits(feats, boxes, coords, coarse)
            kept = (fine, at) if keep_features else (None, None)
            steps.append(SubdivisionStep(side, coords, pl, idx, *kept))
            return pl[rows, classes]

        logits = evaluate(coords, None).reshape(r, 1, side, side)
        for _ in range(self.refine_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            side = logits.shape[-1]
            idx, coords = uncertain_points_on_grid(instance_uncertainty(logits, classes), self.subdivision_num_points)
            own = evaluate(coords, idx).to(logits.dtype)
            logits = logits.reshape(r, side * side).scatter(1, idx, own).view(r, 1, side, side)
        return PointRendOutput(logits, coarse, steps)

    @staticmethod
    def capture(out: PointRendOutput, boxes: torch.Tensor, classes: torch.Tensor) -> PointRendCapture:
        """The per-instance capture of an output, points in input pixels of ``boxes`` (R, 4)."""
        rows = torch.arange(len(classes), device=classes.device)
        init = out.steps[0]
        g = init.grid_side
        initial = init.point_logits[rows, classes].reshape(len(classes), g, g)
        points = [box_points_to_image(boxes.to(s.point_coords.dtype), s.point_coords).float() for s in out.steps]
        return PointRendCapture(points, tuple(s.grid_side for s in out.steps),
                                out.coarse_logits[rows, classes].float(), initial.float())

    def losses(self, features: dict[str, torch.Tensor], boxes: Sequence[torch.Tensor], classes: torch.Tensor,
               gt_masks: torch.Tensor, matched: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_mask`` (Mask R-CNN's BCE on the coarse logits at 7×7) and ``loss_mask_point`` (BCE at
        ``train_num_points`` points per foreground proposal: 3× oversampled, 75 % most uncertain, 25 % uniform).

        ``boxes`` per image (foreground proposals, input pixels), ``classes`` their gt classes, ``gt_masks``
        (M, H, W) bool, ``matched`` (ΣR,) the gt mask of each proposal.
        """
        feats = self._features(features)
        cat_boxes = torch.cat(list(boxes)) if len(boxes) else feats[0].new_zeros((0, 4))
        if len(cat_boxes) == 0:
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return {"loss_mask": zero, "loss_mask_point": zero}
        coarse = self.coarse_logits(feats, boxes)
        losses = {"loss_mask": MaskHead.loss(coarse, classes, cat_boxes, gt_masks, matched)}
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                coarse.float(), self.train_num_points, self.oversample_ratio, self.importance_sample_ratio,
                lambda logits: instance_uncertainty(logits, classes))
            labels = sample_mask_labels(gt_masks, matched, box_points_to_image(cat_boxes.float(), coords))
        pl = self.point_logits(feats, boxes, coords, coarse)[0]
        pl = pl[torch.arange(len(classes), device=pl.device), classes]
        losses["loss_mask_point"] = F.binary_cross_entropy_with_logits(
            pl.float(), labels, weight=(labels != -1).to(labels.dtype), reduction="mean")
        return losses
