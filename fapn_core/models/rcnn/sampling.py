"""Training-time matching and sampling (detectron2 ``Matcher`` and ``subsample_labels``)."""

from __future__ import annotations

from typing import Sequence

import torch


class Matcher:
    """Assign each prediction (column of an IoU matrix M×N) to its best ground truth and label it.

    ``thresholds`` split IoU into intervals ``[-inf, t0), [t0, t1), …, [tk, inf)`` labelled by ``labels``
    (1 = foreground, 0 = background, -1 = ignore). ``allow_low_quality_matches``: every ground truth's
    best-overlapping predictions (ties included) become foreground, as in detectron2's RPN.
    """

    def __init__(self, thresholds: Sequence[float], labels: Sequence[int], allow_low_quality_matches: bool = False):
        if len(labels) != len(thresholds) + 1:
            raise ValueError("need one more label than thresholds")
        if list(thresholds) != sorted(thresholds):
            raise ValueError(f"thresholds must be ascending: {thresholds}")
        self.thresholds = [float("-inf"), *[float(t) for t in thresholds], float("inf")]
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(matched ground-truth index (N,) int64, label (N,) int8)."""
        n = quality.shape[1]
        if quality.numel() == 0:
            return (quality.new_zeros((n,), dtype=torch.int64),
                    quality.new_full((n,), self.labels[0], dtype=torch.int8))
        vals, matches = quality.max(dim=0)
        labels = matches.new_ones(matches.shape, dtype=torch.int8)
        for lab, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            labels[(vals >= low) & (vals < high)] = lab
        if self.allow_low_quality_matches:
            best = quality.max(dim=1).values
            _, cols = torch.nonzero(quality == best[:, None], as_tuple=True)
            labels[cols] = 1
        return matches, labels


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positive and negative indices: at most ``num_samples·positive_fraction`` positives
    (``labels`` not -1 and not ``bg_label``), negatives (``== bg_label``) fill up to ``num_samples``."""
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm1 = torch.randperm(positive.numel(), generator=generator)[:num_pos].to(labels.device)
    perm2 = torch.randperm(negative.numel(), generator=generator)[:num_neg].to(labels.device)
    return positive[perm1], negative[perm2]
