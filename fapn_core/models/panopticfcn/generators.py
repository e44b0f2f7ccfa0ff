"""Thing and stuff kernel generators and kernel fusion (official ``ThingGenerator`` / ``StuffGenerator``).

A generator embeds kernel-head kernels (C) with a 1×1 conv (``embed_extractor``, with bias) into mask kernels (E)
that multiply the encoder's stride-4 feature: ``logits = meta @ encode_feat`` (no bias).

Thing fusion (inference): cosine similarity ``S`` of the embedded kernels (each divided by max(|w|, 1e-8));
``L = triu(S) >= thresh`` (non-strict) ``& same class`` (when class-specific); ``cum = cumsum(L, rows) < 2``;
candidate j is kept iff ``cum[j, j]`` (no earlier, higher-scored candidate reaches it); a kept row i averages the
kernels of the columns j with ``L[i, j] & cum[i, j]`` (every j goes to its *first* similar row only, so a j whose
first similar row was merged away is dropped). Class and score stay the row's own.
Stuff fusion: per class (ascending) the mean of its embedded kernels and of its scores over the levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ThingFusion:
    """Kernel fusion's inputs' decisions and outputs: ``similarity`` and ``label_matrix`` (n, n), ``keep`` (n,),
    ``assign`` (m, n) bool (rows = kept candidates), fused ``meta`` (m, E), ``classes`` and ``scores`` (m,)."""

    similarity: torch.Tensor
    label_matrix: torch.Tensor
    keep: torch.Tensor
    assign: torch.Tensor
    meta: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor


def cosine_similarity_matrix(w: torch.Tensor) -> torch.Tensor:
    """(n, E) → (n, n) cosine similarities, norms clamped at 1e-8 (official ``cal_similarity``)."""
    unit = w / w.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return unit @ unit.T


def fuse_thing_kernels(meta: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor, *, thresh: float = 0.9,
                       class_specific: bool = True) -> ThingFusion:
    """Official thing kernel fusion on score-sorted candidates (see module docstring); vectorised."""
    sim = cosine_similarity_matrix(meta)
    label = sim.triu(diagonal=0) >= thresh
    if class_specific:
        label = label & (classes[:, None] == classes[None, :])
    cum = label.to(meta.dtype).cumsum(dim=0) < 2
    keep = cum.diagonal()
    assign = label[keep] & cum[keep]
    weights = assign.to(meta.dtype)
    # a row assigned nothing (only for an all-zero kernel, whose self-similarity is 0) keeps a zero kernel where
    # the official division would give NaN
    fused = weights @ meta / weights.sum(dim=1, keepdim=True).clamp_min(1)
    return ThingFusion(sim, label, keep, assign, fused, classes[keep], scores[keep])


def fuse_stuff_kernels(meta: torch.Tensor, classes: torch.Tensor, scores: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per unique class (ascending): mean kernel and mean score over its candidates → (meta, classes, scores)."""
    unique = torch.unique(classes)
    member = (classes[None, :] == unique[:, None]).to(meta.dtype)  # (u, m)
    count = member.sum(dim=1, keepdim=True)
    return member @ meta / count, unique, (member @ scores[:, None].to(meta.dtype) / count)[:, 0]


class KernelGenerator(nn.Module):
    """``embed_extractor`` (1×1 conv C → E with bias) and the mask product."""

    def __init__(self, in_channels: int, embed_dims: int) -> None:
        super().__init__()
        self.embed_extractor = nn.Conv2d(in_channels, embed_dims, 1)
        nn.init.normal_(self.embed_extractor.weight, std=0.01)
        nn.init.zeros_(self.embed_extractor.bias)

    def embed(self, kernels: torch.Tensor) -> torch.Tensor:
        """(n, C) kernel-head kernels → (n, E) mask kernels."""
        return F.linear(kernels, self.embed_extractor.weight[:, :, 0, 0], self.embed_extractor.bias)

    @staticmethod
    def mask_logits(meta: torch.Tensor, encode_feat: torch.Tensor) -> torch.Tensor:
        """(n, E) kernels × (E, h, w) feature → (n, h, w) logits."""
        e, h, w = encode_feat.shape
        return (meta @ encode_feat.reshape(e, h * w)).reshape(-1, h, w)


class ThingGenerator(KernelGenerator):
    """Thing mask kernels; :func:`fuse_thing_kernels` merges duplicates in inference."""


class StuffGenerator(KernelGenerator):
    """Stuff mask kernels; :func:`fuse_stuff_kernels` merges a class's kernels over the levels in inference."""
