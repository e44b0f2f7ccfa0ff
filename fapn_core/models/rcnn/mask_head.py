"""Mask branch: detectron2 ``MaskRCNNConvUpsampleHead``, its loss, and the mask paste of ``detector_postprocess``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ..layers import c2_msra_fill


class MaskHead(nn.Module):
    """``num_conv`` × (3×3 conv + ReLU) → 2×2 stride-2 transposed conv + ReLU → 1×1 ``predictor`` (K channels)."""

    def __init__(self, in_channels: int, num_classes: int, conv_dims: int = 256, num_conv: int = 4) -> None:
        super().__init__()
        self.num_conv, self.num_classes = num_conv, num_classes
        ch = in_channels
        for k in range(num_conv):
            conv = nn.Conv2d(ch, conv_dims, 3, padding=1)
            c2_msra_fill(conv)
            self.add_module(f"mask_fcn{k + 1}", conv)
            ch = conv_dims
        self.deconv = nn.ConvTranspose2d(ch, conv_dims, 2, stride=2)
        c2_msra_fill(self.deconv)
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(self.num_conv):
            x = F.relu(getattr(self, f"mask_fcn{k + 1}")(x))
        return self.predictor(F.relu(self.deconv(x)))

    @staticmethod
    def probabilities(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``sigmoid`` of each ROI's own class channel: (R, 1, M, M)."""
        idx = torch.arange(len(classes), device=logits.device)
        return logits[idx, classes][:, None].sigmoid()

    @staticmethod
    def loss(logits: torch.Tensor, classes: torch.Tensor, proposal_boxes: torch.Tensor, gt_masks: torch.Tensor,
             matched: torch.Tensor) -> torch.Tensor:
        """Mean BCE on the matched class's channel against the gt mask cropped to the proposal and resized
        (``roi_align(aligned=True)`` on the bitmask, then ≥ 0.5), as detectron2's ``mask_rcnn_loss``."""
        if len(classes) == 0:
            return logits.sum() * 0
        m = logits.shape[-1]
        rois = torch.cat([matched[:, None].to(proposal_boxes.dtype), proposal_boxes], dim=1)
        target = roi_align(gt_masks[:, None].to(torch.float32), rois.float(), (m, m), 1.0, 0, True).squeeze(1) >= 0.5
        pred = logits[torch.arange(len(classes), device=logits.device), classes]
        return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="mean")


def _paste_weights(lo: torch.Tensor, hi: torch.Tensor, out_len: int, in_len: int) -> torch.Tensor:
    """Bilinear weights (R, out_len, in_len) of ``grid_sample(align_corners=False, padding zeros)`` along one axis
    for output pixel centres ``i + 0.5`` mapped onto a box [lo, hi] (computed as detectron2's ``_do_paste_mask``)."""
    centres = torch.arange(out_len, device=lo.device, dtype=torch.float32) + 0.5
    g = (centres[None, :] - lo[:, None]) / (hi - lo)[:, None] * 2 - 1  # normalised grid, as in detectron2
    pos = ((g + 1) * in_len - 1) / 2  # grid_sample's unnormalisation (align_corners=False)
    p0 = torch.floor(pos)
    frac = pos - p0
    p0 = p0.to(torch.int64)
    w = torch.zeros(lo.shape[0], out_len, in_len, device=lo.device, dtype=torch.float32)
    for corner, weight in ((p0, 1 - frac), (p0 + 1, frac)):
        inside = (corner >= 0) & (corner < in_len)
        w.scatter_add_(2, corner.clamp(0, in_len - 1)[..., None], (weight * inside)[..., None])
    return w


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], threshold: float = 0.5,
                max_elements: int = 1 << 25) -> torch.Tensor:
    """Paste (R, 1, M, M) mask probabilities into (R, H, W) bool masks at ``boxes`` (output coordinates).

    Equals ``grid_sample(probs, grid, bilinear, zeros, align_corners=False) >= threshold`` with detectron2's
    pixel-centre grid. Bilinear sampling on a product grid is separable, so each mask is ``Wy · P · Wxᵀ``: batched
    matrix products, no per-mask loop; chunks of masks bound the temporary memory.
    """
    h, w = image_size
    r = probs.shape[0]
    out = torch.zeros((r, h, w), dtype=torch.bool, device=probs.device)
    if r == 0 or h == 0 or w == 0:
        return out
    m = probs.shape[-1]
    p = probs[:, 0].float()
    b = boxes.float()
    chunk = max(1, max_elements // (h * w))
    for s in range(0, r, chunk):
        sl = slice(s, s + chunk)
        wy = _paste_weights(b[sl, 1], b[sl, 3], h, m)  # (r, H, M)
        wx = _paste_weights(b[sl, 0], b[sl, 2], w, m)  # (r, W, M)
        out[sl] = torch.bmm(torch.bmm(wy, p[sl]), wx.transpose(1, 2)) >= threshold
    return out
