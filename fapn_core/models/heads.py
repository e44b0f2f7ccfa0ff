"""Segmentation heads: Semantic-FPN (detectron2 ``SemSegFPNHead``) and PointRend's semantic head.

Both return, in inference, logits at the padded input resolution (stride 1) and, in training, a dict of
losses against a ``(N, H, W)`` int64 target at that resolution (``ignore_index`` pixels excluded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Conv2dNorm, ShapeSpec, c2_msra_fill


class SemSegFPNHead(nn.Module):
    """Per level: ``max(1, log2(stride/4))`` × (3×3 conv → norm → ReLU [→ bilinear ×2]); sum; 1×1 predictor.

    Module names (``p2.0``, ``p4.2``, ``predictor``) match detectron2's state dict.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        num_classes: int,
        *,
        conv_dims: int = 128,
        common_stride: int = 4,
        norm: str = "GN",
        in_features: tuple[str, ...] = ("p2", "p3", "p4", "p5"),
        ignore_index: int = 255,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = tuple(in_features)
        self.common_stride = common_stride
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        for name in self.in_features:
            spec = input_shape[name]
            length = max(1, int(math.log2(spec.stride) - math.log2(common_stride)))
            ops: list[nn.Module] = []
            for k in range(length):
                conv = Conv2dNorm(
                    spec.channels if k == 0 else conv_dims, conv_dims, 3, padding=1, bias=not norm,
                    norm=norm, activation=F.relu,
                )
                c2_msra_fill(conv)
                ops.append(conv)
                if spec.stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(name, nn.Sequential(*ops))
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)
        c2_msra_fill(self.predictor)

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Coarse logits at ``common_stride``."""
        x = None
        for name in self.in_features:
            y = getattr(self, name)(features[name])
            x = y if x is None else x + y
        return self.predictor(x)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.interpolate(self.layers(features), scale_factor=self.common_stride, mode="bilinear",
                             align_corners=False)

    def losses(self, features: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_sem_seg": self.coarse_loss(self.layers(features), targets)}

    def coarse_loss(self, coarse: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = F.interpolate(coarse.float(), scale_factor=self.common_stride, mode="bilinear", align_corners=False)
        return self.loss_weight * F.cross_entropy(logits, targets, ignore_index=self.ignore_index)


def point_sample(x: torch.Tensor, coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """Sample ``x`` (N, C, H, W) at normalised ``coords`` (N, P, 2) in [0, 1] (x, y) → (N, C, P)."""
    return F.grid_sample(x, 2.0 * coords.unsqueeze(2) - 1.0, **kwargs).squeeze(3)


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """PointRend uncertainty: ``top2[1] − top2[0]`` over classes (higher = more uncertain), shape (N, 1, …)."""
    top2 = torch.topk(logits, k=2, dim=1)[0]
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def uncertain_points_on_grid(uncertainty: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (``y·W + x``) and normalised centres (x, y) of the ``num_points`` most uncertain cells."""
    n, _, h, w = uncertainty.shape
    h_step, w_step = 1.0 / float(h), 1.0 / float(w)
    num_points = min(h * w, num_points)
    idx = torch.topk(uncertainty.view(n, h * w), k=num_points, dim=1)[1]
    coords = torch.zeros(n, num_points, 2, dtype=torch.float, device=uncertainty.device)
    coords[:, :, 0] = w_step / 2.0 + (idx % w).to(torch.float) * w_step
    coords[:, :, 1] = h_step / 2.0 + (idx // w).to(torch.float) * h_step
    return idx, coords


def uncertain_points_with_randomness(
    coarse: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float,
    uncertainty_fn: Callable[[torch.Tensor], torch.Tensor] = calculate_uncertainty,
) -> torch.Tensor:
    """PointRend training point selection: oversample, keep the most uncertain, add uniform random points.

    ``uncertainty_fn`` maps the (N, C, P) logits sampled at the oversampled points to (N, 1, P), higher = more
    uncertain: the semantic top-2 margin by default; the instance head passes −|logit of the gt class|.
    """
    n = coarse.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=coarse.device)
    uncertainty = uncertainty_fn(point_sample(coarse, coords, align_corners=False))
    num_uncertain = int(importance_sample_ratio * num_points)
    idx = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]
    idx = idx + num_sampled * torch.arange(n, device=coarse.device)[:, None]
    coords = coords.view(-1, 2)[idx.view(-1)].view(n, num_uncertain, 2)
    if num_points - num_uncertain > 0:
        coords = torch.cat([coords, torch.rand(n, num_points - num_uncertain, 2, device=coarse.device)], dim=1)
    return coords


class StandardPointHead(nn.Module):
    """PointRend point head: ``fc1..fcN`` (Conv1d k=1 + ReLU) on ``cat(fine, coarse)``, then ``predictor``.

    ``coarse_pred_each_layer`` (COARSE_PRED_EACH_LAYER; the instance configs set it, the semantic ones do not):
    the coarse features are concatenated again after every fc layer, so each layer sees ``fc_dim + K`` channels.
    """

    def __init__(self, in_channels: int, num_classes: int, *, fc_dim: int = 256, num_fc: int = 3,
                 coarse_pred_each_layer: bool = False) -> None:
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        dim_in = in_channels + num_classes
        self.fc_layers = []
        for k in range(num_fc):
            fc = nn.Conv1d(dim_in, fc_dim, 1)
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(fc.bias)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            dim_in = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim_in, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """``fine`` (R, C, P), ``coarse`` (R, K, P) → point logits (R, K, P).

        The 1×1 convs run as matrix products over the R·P points as rows, and a layer's weight is split at the
        concatenation: ``W·cat(x, coarse) = W_x·x + W_c·coarse`` (the same sums, without the concatenated copies;
        half the time of ``Conv1d`` at 100 instances × 784 points on the CPU).
        """
        r, _, p = fine.shape
        x = fine.transpose(1, 2).reshape(r * p, fine.shape[1])
        c = coarse.transpose(1, 2).reshape(r * p, coarse.shape[1]).to(x.dtype)
        layers = [*self.fc_layers, self.predictor]
        for k, layer in enumerate(layers):
            w = layer.weight[:, :, 0]
            n = x.shape[1]
            y = torch.addmm(layer.bias, x, w[:, :n].t())
            if k == 0 or self.coarse_pred_each_layer:  # this layer's input had the coarse features appended
                y.addmm_(c, w[:, n:].t())  # in place: addmm's backward needs neither its output nor this one's
            x = y.relu_() if k < len(layers) - 1 else y
        return x.view(r, p, -1).transpose(1, 2)


@dataclass
class PointRendStep:
    """Internals of one subdivision step (for introspection and tests)."""

    point_indices: torch.Tensor
    point_coords: torch.Tensor
    point_logits: torch.Tensor


class PointRendSemSegHead(nn.Module):
    """PointRend semantic head: a ``SemSegFPNHead`` (``coarse_sem_seg_head``) refined by a ``point_head`` with
    ``subdivision_steps`` × (bilinear ×2, re-predict the ``subdivision_num_points`` most uncertain cells)."""

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        num_classes: int,
        *,
        conv_dims: int = 128,
        common_stride: int = 4,
        norm: str = "GN",
        fc_dim: int = 256,
        num_fc: int = 3,
        point_in_features: tuple[str, ...] = ("p2",),
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
        train_num_points: int = 2048,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.coarse_sem_seg_head = SemSegFPNHead(
            input_shape, num_classes, conv_dims=conv_dims, common_stride=common_stride, norm=norm,
            ignore_index=ignore_index,
        )
        self.point_in_features = tuple(point_in_features)
        in_ch = sum(input_shape[f].channels for f in self.point_in_features)
        self.point_head = StandardPointHead(in_ch, num_classes, fc_dim=fc_dim, num_fc=num_fc)
        self.num_classes = num_classes
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.ignore_index = ignore_index
        self.common_stride = common_stride

    def _fine(self, features: dict[str, torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        return torch.cat([point_sample(features[f], coords, align_corners=False) for f in self.point_in_features], 1)

    def inference(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[PointRendStep]]:
        """Returns (final logits at stride ``common_stride / 2**steps``, coarse logits, per-step internals)."""
        coarse = self.coarse_sem_seg_head.layers(features)
        logits = coarse.clone()
        steps: list[PointRendStep] = []
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            idx, coords = uncertain_points_on_grid(calculate_uncertainty(logits), self.subdivision_num_points)
            point_logits = self.point_head(
                self._fine(features, coords), point_sample(coarse, coords, align_corners=False)
            )
            n, c, h, w = logits.shape
            logits = logits.reshape(n, c, h * w).scatter_(
                2, idx.unsqueeze(1).expand(-1, c, -1), point_logits.to(logits.dtype)
            ).view(n, c, h, w)
            steps.append(PointRendStep(idx, coords, point_logits))
        return logits, coarse, steps

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.inference(features)[0]
        scale = self.common_stride // 2 ** self.subdivision_steps
        if scale > 1:
            logits = F.interpolate(logits, scale_factor=scale, mode="bilinear", align_corners=False)
        return logits

    def losses(self, features: dict[str, torch.Tensor], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        coarse = self.coarse_sem_seg_head.layers(features)
        losses = {"loss_sem_seg": self.coarse_sem_seg_head.coarse_loss(coarse, targets)}
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                coarse.float(), self.train_num_points, self.oversample_ratio, self.importance_sample_ratio
            )
        point_logits = self.point_head(self._fine(features, coords), point_sample(coarse, coords, align_corners=False))
        point_targets = point_sample(
            targets.unsqueeze(1).to(torch.float), coords, mode="nearest", align_corners=False
        ).squeeze(1).to(torch.long)
        losses["loss_sem_seg_point"] = F.cross_entropy(
            point_logits.float(), point_targets, ignore_index=self.ignore_index
        )
        return losses


HEADS = ("semfpn", "pointrend")


def build_head(kind: str, input_shape: dict[str, ShapeSpec], num_classes: int, **kwargs) -> nn.Module:
    """Head by name: ``semfpn`` or ``pointrend``."""
    if kind == "semfpn":
        allowed = {"conv_dims", "common_stride", "norm", "ignore_index"}
        return SemSegFPNHead(input_shape, num_classes, **{k: v for k, v in kwargs.items() if k in allowed})
    if kind == "pointrend":
        return PointRendSemSegHead(input_shape, num_classes, **kwargs)
    raise ValueError(f"unknown head {kind!r}; expected one of {HEADS}")
