"""MaskFormer's ``SetCriterion``: class cross-entropy with a down-weighted "no object" class, and sigmoid focal +
dice losses on the matched masks (upsampled bilinearly to the ground truth's padded size), repeated for every
decoder layer under deep supervision (keys suffixed ``_0``, ``_1`` …). Weights as the official configs:
``loss_ce`` 1, ``loss_mask`` 20, ``loss_dice`` 1; the returned losses are already weighted.

``empty_weight`` ([K+1], ones and ``no_object_weight`` last) is a **persistent** buffer, as in official
checkpoints (``criterion.empty_weight``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .matcher import HungarianMatcher


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Σ over masks of ``1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)``, divided by ``num_masks``."""
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def sigmoid_focal_loss(inputs: torch.Tensor, targets: torch.Tensor, num_masks: float, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """RetinaNet focal loss, averaged over pixels, summed over masks, divided by ``num_masks``."""
    prob = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


class SetCriterion(nn.Module):
    """``forward(outputs, targets)`` → weighted losses; ``targets``: per image ``{"labels" (M,), "masks" (M, H, W)}``
    with masks at the padded input size."""

    def __init__(self, num_classes: int, *, no_object_weight: float = 0.1, mask_weight: float = 20.0,
                 dice_weight: float = 1.0, class_weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = HungarianMatcher(cost_class=1.0, cost_mask=mask_weight, cost_dice=dice_weight)
        self.weight_dict = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, outputs: dict, targets: list[dict], indices: list) -> dict[str, torch.Tensor]:
        logits = outputs["pred_logits"].float()
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src.to(logits.device)] = targets[b]["labels"][tgt.to(logits.device)]
        return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight)}

    def loss_masks(self, outputs: dict, targets: list[dict], indices: list, num_masks: float
                   ) -> dict[str, torch.Tensor]:
        pred = outputs["pred_masks"].float()
        src = torch.cat([pred[b, s.to(pred.device)] for b, (s, _) in enumerate(indices)])
        tgt = torch.cat([targets[b]["masks"][t.to(pred.device)] for b, (_, t) in enumerate(indices)]).to(src)
        if src.shape[0] == 0:
            zero = pred.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero}
        src = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        src, tgt = src.flatten(1), tgt.flatten(1)
        return {"loss_mask": sigmoid_focal_loss(src, tgt, num_masks), "loss_dice": dice_loss(src, tgt, num_masks)}

    def _num_masks(self, targets: list[dict], device: torch.device) -> float:
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            world = dist.get_world_size()
        return torch.clamp(n / world, min=1).item()

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        num_masks = self._num_masks(targets, outputs["pred_logits"].device)
        losses: dict[str, torch.Tensor] = {}
        stages = [("", outputs)] + [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        for suffix, out in stages:
            indices = self.matcher(out, targets)
            parts = {**self.loss_labels(out, targets, indices), **self.loss_masks(out, targets, indices, num_masks)}
            for k, v in parts.items():
                losses[k + suffix] = v * self.weight_dict[k]
        return losses
