"""detectron2 ``StandardROIHeads``: proposal sampling in training, box branch, optional mask branch (Mask R-CNN's
or PointRend's)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..layers import ShapeSpec
from .box_head import BoxHead, BoxPredictor
from .boxes import pairwise_iou
from .mask_head import MaskHead
from .point_rend import PointRendMaskHead
from .poolers import ROIPooler
from .sampling import Matcher, subsample_labels


class ROIHeads(nn.Module):
    """Box head (7×7 ROIAlignV2 → fc → predictor) and, with ``mask_on``, mask head: Mask R-CNN's (14×14 →
    28×28 logits) or, with ``point_rend`` (the :class:`PointRendMaskHead` options), PointRend's.

    ``train_on_pred_boxes`` (ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES, set by the PointRend configs): in training the
    mask branch sees each proposal's box as regressed for its gt class instead of the proposal box.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        num_classes: int,
        *,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        box_fc_dim: int = 1024,
        mask_on: bool = True,
        mask_conv_dims: int = 256,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        iou_threshold: float = 0.5,
        proposal_append_gt: bool = True,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        point_rend: dict[str, Any] | None = None,
        train_on_pred_boxes: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = tuple(in_features)
        self.num_classes = num_classes
        strides = [input_shape[f].stride for f in self.in_features]
        channels = input_shape[self.in_features[0]].channels
        self.box_pooler = ROIPooler(7, strides)
        self.box_head = BoxHead(channels, 7, box_fc_dim)
        self.box_predictor = BoxPredictor(
            self.box_head.output_dim, num_classes, score_thresh=score_thresh, nms_thresh=nms_thresh,
            detections_per_image=detections_per_image)
        self.mask_on = mask_on
        if mask_on and point_rend is not None:
            self.mask_head = PointRendMaskHead(input_shape, num_classes, **point_rend)
        elif mask_on:
            self.mask_pooler = ROIPooler(14, strides)
            self.mask_head = MaskHead(channels, num_classes, mask_conv_dims)
        self.train_on_pred_boxes = train_on_pred_boxes
        self.proposal_matcher = Matcher([iou_threshold], [0, 1], allow_low_quality_matches=False)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.proposal_append_gt = proposal_append_gt

    def _features(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [features[f] for f in self.in_features]

    def forward(
        self, features: dict[str, torch.Tensor], proposals: list[dict[str, torch.Tensor]],
        image_sizes: Sequence[tuple[int, int]], targets: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Inference: detections per image (input coordinates, mask logits of the detected class as
        ``mask_probs``; PointRend adds its ``point_rend`` capture). Training: ``([], losses)``."""
        feats = self._features(features)
        if self.training:
            if targets is None:
                raise ValueError("ROI heads training needs targets")
            return [], self.losses(feats, proposals, targets, features)
        boxes = [p["boxes"] for p in proposals]
        scores, deltas = self.box_predictor(self.box_head(self.box_pooler(feats, boxes)))
        detections = self.box_predictor.inference(scores, deltas, boxes, image_sizes)
        if self.mask_on:
            det_boxes = [d["boxes"] for d in detections]
            counts = [len(b) for b in det_boxes]
            classes = torch.cat([d["classes"] for d in detections])
            if isinstance(self.mask_head, PointRendMaskHead):
                out = self.mask_head(features, det_boxes, classes)
                probs = out.mask_logits.sigmoid()  # already each detection's own class
                captures = self.mask_head.capture(out, torch.cat(det_boxes), classes).split(counts)
                for d, cap in zip(detections, captures):
                    d["point_rend"] = cap
            else:
                probs = MaskHead.probabilities(self.mask_head(self.mask_pooler(feats, det_boxes)), classes)
            for d, pr in zip(detections, probs.split(counts)):
                d["mask_probs"] = pr
        return detections, {}

    @torch.no_grad()
    def sample_proposals(
        self, proposals: list[dict[str, torch.Tensor]], targets: Sequence[dict[str, torch.Tensor]]
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: append gt boxes, match at IoU 0.5, sample 512 with ≤ 25 % foreground; background class = K."""
        out = []
        for props, tgt in zip(proposals, targets):
            gt_boxes, gt_classes = tgt["boxes"].to(props["boxes"]), tgt["classes"].to(torch.int64)
            boxes = torch.cat([props["boxes"], gt_boxes]) if self.proposal_append_gt else props["boxes"]
            matched, labels = self.proposal_matcher(pairwise_iou(gt_boxes, boxes))
            if gt_classes.numel():
                classes = gt_classes[matched].clone()
                classes[labels == 0] = self.num_classes
                classes[labels == -1] = -1
            else:
                classes = torch.full_like(matched, self.num_classes)
            fg, bg = subsample_labels(classes, self.batch_size_per_image, self.positive_fraction, self.num_classes)
            idx = torch.cat([fg, bg])
            sampled = {"boxes": boxes[idx], "classes": classes[idx], "matched": matched[idx],
                       "num_fg": torch.tensor(len(fg))}
            sampled["gt_boxes"] = gt_boxes[matched[idx]] if gt_classes.numel() else boxes[idx]
            out.append(sampled)
        return out

    def losses(
        self, feats: list[torch.Tensor], proposals: list[dict[str, torch.Tensor]],
        targets: Sequence[dict[str, torch.Tensor]], features: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        sampled = self.sample_proposals(proposals, targets)
        boxes = [s["boxes"] for s in sampled]
        scores, deltas = self.box_predictor(self.box_head(self.box_pooler(feats, boxes)))
        classes = torch.cat([s["classes"] for s in sampled])
        losses = self.box_predictor.losses(
            scores, deltas, torch.cat(boxes), classes, torch.cat([s["gt_boxes"] for s in sampled]))
        if self.mask_on and self.train_on_pred_boxes:
            with torch.no_grad():  # detectron2's predict_boxes_for_gt_classes (background rows: class K−1)
                pred = self.box_predictor.box_coder.apply_deltas(deltas.detach(), torch.cat(boxes))
                rows = torch.arange(len(classes), device=pred.device)
                pred = pred.view(len(classes), -1, 4)[rows, classes.clamp(0, self.num_classes - 1)]
            for s, b in zip(sampled, pred.split([len(b) for b in boxes])):
                s["boxes"] = b.to(s["boxes"].dtype)
        if self.mask_on:
            fg_boxes, fg_classes, fg_masks, fg_matched, offset = [], [], [], [], 0
            for s, tgt in zip(sampled, targets):
                n = int(s["num_fg"])  # foreground proposals come first in each image's sample
                if "masks" not in tgt:
                    raise ValueError("Mask R-CNN training needs instance masks (targets['masks'])")
                fg_boxes.append(s["boxes"][:n])
                fg_classes.append(s["classes"][:n])
                fg_matched.append(s["matched"][:n] + offset)
                fg_masks.append(tgt["masks"])
                offset += len(tgt["masks"])
            fg = torch.cat(fg_boxes)
            masks = _stack_masks(fg_masks, feats[0].device)
            if isinstance(self.mask_head, PointRendMaskHead):
                if features is None:
                    raise ValueError("PointRend's mask head needs the feature dict")
                losses.update(self.mask_head.losses(features, fg_boxes, torch.cat(fg_classes), masks,
                                                    torch.cat(fg_matched)))
                return losses
            logits = self.mask_head(self.mask_pooler(feats, fg_boxes)) if len(fg) else \
                self.mask_head(feats[0].new_zeros((0, feats[0].shape[1], 14, 14)))
            losses["loss_mask"] = MaskHead.loss(logits, torch.cat(fg_classes), fg, masks, torch.cat(fg_matched))
        return losses


def _stack_masks(masks: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Concatenate per-image (M_i, H_i, W_i) masks, zero-padding to the largest size (the padded batch)."""
    h = max((m.shape[-2] for m in masks), default=1)
    w = max((m.shape[-1] for m in masks), default=1)
    out = torch.zeros((sum(len(m) for m in masks), h, w), dtype=torch.bool, device=device)
    i = 0
    for m in masks:
        out[i:i + len(m), : m.shape[-2], : m.shape[-1]] = m.to(device=device, dtype=torch.bool)
        i += len(m)
    return out
