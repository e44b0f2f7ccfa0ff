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


def _paste_weights(lo: torch.Tensor, hi: torch.Tensor, start: torch.Tensor, out_len: int, in_len: int) -> torch.Tensor:
    """Bilinear weights (R, out_len, in_len) of ``grid_sample(align_corners=False, padding zeros)`` along one axis
    for output pixel centres ``start[r] + i + 0.5`` mapped onto box r's [lo, hi] (computed as detectron2's
    ``_do_paste_mask``: integer pixel index, + 0.5, in float32)."""
    centres = (start[:, None] + torch.arange(out_len, device=lo.device)[None, :]).to(torch.float32) + 0.5
    g = (centres - lo[:, None]) / (hi - lo)[:, None] * 2 - 1  # normalised grid, as in detectron2
    pos = ((g + 1) * in_len - 1) / 2  # grid_sample's unnormalisation (align_corners=False)
    p0 = torch.floor(pos)
    frac = pos - p0
    p0 = p0.to(torch.int64)
    w = torch.zeros(lo.shape[0], out_len, in_len, device=lo.device, dtype=torch.float32)
    for corner, weight in ((p0, 1 - frac), (p0 + 1, frac)):
        inside = (corner >= 0) & (corner < in_len)
        w.scatter_add_(2, corner.clamp(0, in_len - 1)[..., None], (weight * inside)[..., None])
    return w


def paste_windows(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(R, 4) integer windows ``x0, y0, x1, y1`` each mask can touch: its box expanded to whole pixels plus one
    on each side, clamped to the image (detectron2's ``skip_empty`` window; outside it every sample weight is 0)."""
    h, w = image_size
    x0y0 = (boxes[:, :2].floor() - 1).clamp(min=0)
    x1 = (boxes[:, 2].ceil() + 1).clamp(max=w)
    y1 = (boxes[:, 3].ceil() + 1).clamp(max=h)
    return torch.stack([x0y0[:, 0], x0y0[:, 1], x1, y1], 1).to(torch.int64)


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], threshold: float = 0.5,
                max_elements: int = 1 << 25) -> torch.Tensor:
    """Paste (R, 1, M, M) mask probabilities into (R, H, W) bool masks at ``boxes`` (output coordinates).

    Equals ``grid_sample(probs, grid, bilinear, zeros, align_corners=False) >= threshold`` with detectron2's
    pixel-centre grid. Each mask is computed only inside its box window (:func:`paste_windows`; zero outside, as
    detectron2's paste on the CPU), and bilinear sampling on a product grid is separable: ``Wy · P · Wxᵀ`` per
    mask, batched over masks whose windows share a size bound (chunks keep the temporaries under
    ``max_elements``). The cost grows with box area, not image area.
    """
    h, w = image_size
    r = probs.shape[0]
    out = torch.zeros((r, h, w), dtype=torch.bool, device=probs.device)
    if r == 0 or h == 0 or w == 0:
        return out
    m = probs.shape[-1]
    p = probs[:, 0].float()
    b = boxes.float()
    win = paste_windows(b, image_size)
    sizes = (win[:, 3] - win[:, 1]).clamp(min=0), (win[:, 2] - win[:, 0]).clamp(min=0)
    order = torch.argsort(sizes[0] * sizes[1], descending=True).tolist()  # similar windows batch together
    s = 0
    while s < r:
        area = int(sizes[0][order[s]] * sizes[1][order[s]])  # the largest window of this chunk
        n = max(1, min(r - s, max_elements // max(1, area)))
        idx = order[s:s + n]
        s += n
        sel = torch.as_tensor(idx, device=probs.device)
        hh, ww = int(sizes[0][sel].max()), int(sizes[1][sel].max())  # a frame that holds every window
        if hh == 0 or ww == 0:
            continue
        # weights over each mask's own window, in a common (hh, ww) frame anchored at its window's corner
        wy = _paste_weights(b[sel, 1], b[sel, 3], win[sel, 1], hh, m)  # (n, hh, M)
        wx = _paste_weights(b[sel, 0], b[sel, 2], win[sel, 0], ww, m)  # (n, ww, M)
        res = torch.bmm(torch.bmm(wy, p[sel]), wx.transpose(1, 2)) >= threshold  # (n, hh, ww)
        for k, i in enumerate(idx):
            ya, xa = int(win[i, 1]), int(win[i, 0])
            hy, wx_ = int(win[i, 3]) - ya, int(win[i, 2]) - xa
            if hy > 0 and wx_ > 0:
                out[i, ya:ya + hy, xa:xa + wx_] = res[k, :hy, :wx_]
    return out
