"""Region proposal network (detectron2 ``StandardRPNHead`` + ``RPN``): head, proposals, training losses."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ..layers import ShapeSpec
from .anchors import AnchorGenerator
from .boxes import BoxCoder, clip_boxes, nonempty, pairwise_iou
from .sampling import Matcher, subsample_labels


class RPNHead(nn.Module):
    """3×3 conv + ReLU shared over levels, then 1×1 objectness (A channels) and 1×1 deltas (4·A channels)."""

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Proposals per image: per-level top-k by logit, decode, clip, drop empty, NMS per level, top-k overall.

    Proposals keep their objectness **logits** (no sigmoid), sorted descending.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5", "p6"),
        anchor_sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        pre_nms_topk: tuple[int, int] = (2000, 1000),
        post_nms_topk: tuple[int, int] = (1000, 1000),
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        iou_thresholds: tuple[float, float] = (0.3, 0.7),
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = tuple(in_features)
        channels = {input_shape[f].channels for f in self.in_features}
        if len(channels) != 1:
            raise ValueError(f"RPN needs one channel count on all levels, got {sorted(channels)}")
        self.anchor_generator = AnchorGenerator(
            anchor_sizes, aspect_ratios, [input_shape[f].stride for f in self.in_features])
        self.rpn_head = RPNHead(channels.pop(), self.anchor_generator.num_anchors)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh, self.min_box_size = nms_thresh, min_box_size
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.anchor_matcher = Matcher(iou_thresholds, [0, -1, 1], allow_low_quality_matches=True)
        self.loss_weight = loss_weight

    def forward(
        self, features: dict[str, torch.Tensor], image_sizes: Sequence[tuple[int, int]],
        gt_boxes: Sequence[torch.Tensor] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """(proposals per image as ``{"boxes", "objectness_logits"}``, losses (training only))."""
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator([tuple(x.shape[-2:]) for x in feats])
        raw_logits, raw_deltas = self.rpn_head(feats)
        n = feats[0].shape[0]
        logits = [s.permute(0, 2, 3, 1).flatten(1) for s in raw_logits]  # (N, Hi·Wi·A)
        deltas = [d.view(n, -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                  for d in raw_deltas]  # (N, Hi·Wi·A, 4)
        losses: dict[str, torch.Tensor] = {}
        if self.training:
            if gt_boxes is None:
                raise ValueError("RPN training needs ground-truth boxes")
            losses = self.losses(anchors, logits, deltas, gt_boxes)
        with torch.no_grad():
            proposals = self.find_top_proposals(
                [self.box_coder.apply_deltas(d.reshape(-1, 4), a.repeat(n, 1)).view(n, -1, 4)
                 for d, a in zip(deltas, anchors)],
                [lg.detach() for lg in logits], image_sizes)
        return proposals, losses

    def find_top_proposals(
        self, proposals: list[torch.Tensor], logits: list[torch.Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        pre_k, post_k = self.pre_nms_topk[self.training], self.post_nms_topk[self.training]
        n = proposals[0].shape[0]
        device = proposals[0].device
        batch_idx = torch.arange(n, device=device)
        top_boxes, top_scores, levels = [], [], []
        for lvl, (boxes_l, logits_l) in enumerate(zip(proposals, logits)):
            k = min(pre_k, logits_l.shape[1])
            scores, idx = logits_l.sort(descending=True, dim=1)
            top_scores.append(scores[:, :k])
            top_boxes.append(boxes_l[batch_idx[:, None], idx[:, :k]])
            levels.append(torch.full((k,), lvl, dtype=torch.int64, device=device))
        boxes_all, scores_all, levels_all = torch.cat(top_boxes, 1), torch.cat(top_scores, 1), torch.cat(levels)
        results = []
        for i, size in enumerate(image_sizes):
            boxes, scores, lvl = boxes_all[i], scores_all[i], levels_all
            valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            if not bool(valid.all()):
                if self.training:
                    raise FloatingPointError("predicted boxes or scores contain Inf/NaN: training has diverged")
                boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
            boxes = clip_boxes(boxes, size)
            keep = nonempty(boxes, self.min_box_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[:post_k]
            results.append({"boxes": boxes[keep], "objectness_logits": scores[keep], "levels": lvl[keep]})
        return results

    def label_anchors(
        self, anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: anchor labels (1 fg, 0 bg, -1 ignore) after sampling, and the matched gt box per anchor."""
        labels, matched = [], []
        for gt in gt_boxes:
            idx, lab = self.anchor_matcher(pairwise_iou(gt, anchors))
            lab = lab.to(torch.int64)
            pos, neg = subsample_labels(lab, self.batch_size_per_image, self.positive_fraction, 0)
            lab = torch.full_like(lab, -1)
            lab[pos], lab[neg] = 1, 0
            labels.append(lab)
            matched.append(torch.zeros_like(anchors) if gt.numel() == 0 else gt[idx])
        return labels, matched

    def losses(
        self, anchors: list[torch.Tensor], logits: list[torch.Tensor], deltas: list[torch.Tensor],
        gt_boxes: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Objectness BCE and L1 box regression (smooth-L1 with β = 0), both summed / (256·N)."""
        all_anchors = torch.cat(anchors)
        with torch.no_grad():
            labels, matched = self.label_anchors(all_anchors, [g.to(all_anchors) for g in gt_boxes])
            gt_labels = torch.stack(labels)
            gt_deltas = torch.stack([self.box_coder.get_deltas(all_anchors, m) for m in matched])
        pred_logits, pred_deltas = torch.cat(logits, 1), torch.cat(deltas, 1)
        pos = gt_labels == 1
        valid = gt_labels >= 0
        loc = F.l1_loss(pred_deltas[pos], gt_deltas[pos], reduction="sum")
        cls = F.binary_cross_entropy_with_logits(pred_logits[valid], gt_labels[valid].float(), reduction="sum")
        norm = self.batch_size_per_image * len(gt_boxes)
        return {"loss_rpn_cls": self.loss_weight * cls / norm, "loss_rpn_loc": self.loss_weight * loc / norm}
