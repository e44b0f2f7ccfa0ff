"""Box branch of the ROI heads: detectron2 ``FastRCNNConvFCHead`` (fc only) and ``FastRCNNOutputLayers``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ..layers import c2_xavier_fill
from .boxes import BoxCoder, clip_boxes


class BoxHead(nn.Module):
    """Flatten (C·S·S, channel-major) → ``fc1`` + ReLU → ``fc2`` + ReLU."""

    def __init__(self, in_channels: int, resolution: int = 7, fc_dim: int = 1024, num_fc: int = 2) -> None:
        super().__init__()
        dim = in_channels * resolution * resolution
        for k in range(num_fc):
            fc = nn.Linear(dim, fc_dim)
            c2_xavier_fill(fc)
            self.add_module(f"fc{k + 1}", fc)
            dim = fc_dim
        self.num_fc, self.output_dim = num_fc, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for k in range(self.num_fc):
            x = F.relu(getattr(self, f"fc{k + 1}")(x))
        return x


class BoxPredictor(nn.Module):
    """``cls_score`` (K+1 logits, background **last**) and class-specific ``bbox_pred`` (4K deltas)."""

    def __init__(
        self, in_dim: int, num_classes: int, *, box_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)
        self.box_coder = BoxCoder(box_weights)
        self.score_thresh, self.nms_thresh, self.detections_per_image = score_thresh, nms_thresh, detections_per_image

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)

    def inference(
        self, scores: torch.Tensor, deltas: torch.Tensor, proposals: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: softmax, decode per class, clip, keep prob > thresh, per-class NMS, top-k by score."""
        counts = [len(p) for p in proposals]
        boxes_all = self.box_coder.apply_deltas(deltas, torch.cat(proposals)) if sum(counts) else deltas
        probs_all = F.softmax(scores, dim=-1)
        out = []
        for boxes, probs, size in zip(boxes_all.split(counts), probs_all.split(counts), image_sizes):
            out.append(self._inference_single(boxes, probs, size))
        return out

    def _inference_single(self, boxes: torch.Tensor, probs: torch.Tensor, size: tuple[int, int]) -> dict:
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(probs).all(dim=1)
        if not bool(valid.all()):
            boxes, probs = boxes[valid], probs[valid]
        probs = probs[:, :-1]
        boxes = clip_boxes(boxes.reshape(-1, self.num_classes, 4), size)
        keep_mask = probs > self.score_thresh
        inds = torch.nonzero(keep_mask)  # (proposal, class), row-major
        boxes, scores = boxes[keep_mask], probs[keep_mask]
        keep = batched_nms(boxes, scores, inds[:, 1], self.nms_thresh)
        if self.detections_per_image >= 0:
            keep = keep[: self.detections_per_image]
        return {"boxes": boxes[keep], "scores": scores[keep], "classes": inds[keep, 1],
                "proposal_index": inds[keep, 0]}

    def losses(
        self, scores: torch.Tensor, deltas: torch.Tensor, proposal_boxes: torch.Tensor, gt_classes: torch.Tensor,
        gt_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over K+1 (mean) and L1 (smooth-L1, β = 0) on the gt class's deltas of foreground
        proposals, summed / number of sampled proposals."""
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="mean") if len(gt_classes) else scores.sum() * 0
        fg = torch.nonzero((gt_classes >= 0) & (gt_classes < self.num_classes), as_tuple=True)[0]
        pred = deltas.view(-1, self.num_classes, 4)[fg, gt_classes[fg]]
        target = self.box_coder.get_deltas(proposal_boxes[fg], gt_boxes[fg])
        loss_box = F.l1_loss(pred, target, reduction="sum") / max(gt_classes.numel(), 1)
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box}
