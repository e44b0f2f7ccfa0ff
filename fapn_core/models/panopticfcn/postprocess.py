"""From mask logits to the outputs (official ``process_inst`` and the semantic part of ``inference``).

Rescoring: ``p = σ(thing logits)`` on the padded stride-4 map, ``mask = p > thresh`` (strict),
``score *= sum(p·mask) / (sum(mask) + 1e-6)`` (an empty mask gives 0); sort, keep ``score >= 0.05`` (hard-coded),
first ``top_num``. Masks: the kept *probabilities* go bilinear ×stride → crop to the image → bilinear to the output
size → ``> thresh``; boxes ``[x_min, y_min, x_max + 1, y_max + 1]`` of the mask (``[0, 0, 0, 0]`` when empty).
Semantic: ``σ(stuff logits)`` upsampled, cropped and resized the same way into channel ``class`` of a zero
``(S+1, H, W)`` map (classes without a kernel stay 0): probabilities, not logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import INSTANCE_SCORE_FLOOR

# instances upsampled to the output size at a time (bounds memory at large outputs: 16 × 800 × 1344 floats)
UPSAMPLE_CHUNK = 16


def rescore(thing_logits: torch.Tensor, scores: torch.Tensor, mask_thresh: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, h, w) logits, (n,) centre scores → (probabilities, mask areas, seg_score, rescored scores), in float32
    (a mask's cell count can exceed float16's range)."""
    probs = thing_logits.float().sigmoid()
    mask = probs > mask_thresh
    area = mask.sum(dim=(1, 2))
    seg_score = (probs * mask).sum(dim=(1, 2)) / (area.to(probs.dtype) + 1e-6)
    return probs, area, seg_score, scores.float() * seg_score


def keep_instances(scores: torch.Tensor, top_num: int, floor: float = INSTANCE_SCORE_FLOOR) -> torch.Tensor:
    """Indices of the instances kept, best first: descending score, ``score >= floor``, at most ``top_num``."""
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[scores[order] >= floor]
    return order[:top_num]


def to_output_size(maps: torch.Tensor, stride: int, image_size: tuple[int, int], output_size: tuple[int, int],
                   threshold: float | None = None) -> torch.Tensor:
    """(n, h, w) stride-``stride`` maps of the padded input → bilinear ×stride → crop to ``image_size`` →
    bilinear to ``output_size`` (``align_corners=False`` both times). With ``threshold``: the bool ``> threshold``
    of that, computed a chunk of maps at a time (no float (n, H, W) is held)."""
    if maps.shape[0] == 0:
        return maps.new_zeros((0, *output_size), dtype=torch.bool if threshold is not None else maps.dtype)
    out = []
    for chunk in maps.split(UPSAMPLE_CHUNK):
        x = F.interpolate(chunk[None], scale_factor=stride, mode="bilinear", align_corners=False)
        x = x[..., : image_size[0], : image_size[1]]
        if tuple(x.shape[-2:]) != tuple(output_size):
            x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
        out.append(x[0] if threshold is None else x[0] > threshold)
    return torch.cat(out) if len(out) > 1 else out[0]


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """(n, H, W) bool → (n, 4) XYXY float32 ``[x_min, y_min, x_max + 1, y_max + 1]``; empty masks → zeros."""
    n, h, w = masks.shape
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (n, W), (n, H)
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    big = max(h, w) + 1
    boxes[:, 0] = torch.where(cols, xs, big).amin(dim=1).float()
    boxes[:, 1] = torch.where(rows, ys, big).amin(dim=1).float()
    boxes[:, 2] = torch.where(cols, xs, -1).amax(dim=1).float() + 1
    boxes[:, 3] = torch.where(rows, ys, -1).amax(dim=1).float() + 1
    return boxes * masks.flatten(1).any(dim=1, keepdim=True)


def semantic_output(stuff_probs: torch.Tensor, classes: torch.Tensor, num_channels: int, stride: int,
                    image_size: tuple[int, int], output_size: tuple[int, int]) -> torch.Tensor:
    """(m, h, w) stuff probabilities of ``classes`` → (``num_channels``, H, W) ``sem_seg`` (0 where no kernel)."""
    sem = stuff_probs.new_zeros((num_channels, *output_size))
    if classes.numel():
        sem[classes] = to_output_size(stuff_probs, stride, image_size, output_size)
    return sem
