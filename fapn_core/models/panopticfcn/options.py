"""PanopticFCN's own settings (``MODEL.POSITION_HEAD/KERNEL_HEAD/FEATURE_ENCODER/INFERENCE/LOSS_WEIGHT`` of the
official config) with the values of the released ``*-FAST`` configs.

Everything else comes from :class:`~fapn_core.models.zoo.ModelConfig` fields that already exist (backbone, ``neck``,
``neck_channels`` = ``FPN.OUT_CHANNELS``, ``num_classes`` = thing classes, ``sem_seg_num_classes`` = stuff channels
with channel 0 = "things", ``head_conv_dims`` = the semantic-FPN, position-head and kernel-head width, ``head_norm``,
``common_stride``, the ``panoptic_*`` combine settings). :meth:`PanopticFCNOptions.from_config` reads each option
from the config when it has a field of that name, so adding the fields to ``ModelConfig`` needs no change here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# the official code's hard-coded values (panoptic_seg.py L349 and L446)
CENTER_POOL_SIZES = (3, 3, 3, 5, 5)
INSTANCE_SCORE_FLOOR = 0.05
HEAD_LEVELS = ("p3", "p4", "p5", "p6", "p7")


@dataclass(frozen=True)
class PanopticFCNOptions:
    """PanopticFCN settings beyond the shared model config (official key in each comment)."""

    encoder_conv_dims: int = 64  # FEATURE_ENCODER.CONVS_DIM
    head_num_convs: int = 3  # POSITION_HEAD / KERNEL_HEAD / FEATURE_ENCODER .NUM_CONVS
    position_deform: bool = True  # POSITION_HEAD.DEFORM
    center_thresh: float = 0.2  # POSITION_HEAD.THING.THRES (FAST configs; package default 0.05)
    stuff_thresh: float = 0.1  # POSITION_HEAD.STUFF.THRES (FAST configs; package default 0.05)
    center_top_num: int = 100  # POSITION_HEAD.THING.TOP_NUM (per-level top-k = TOP_NUM // 2; final top-k)
    mask_thresh: float = 0.4  # INFERENCE.INST_THRES
    similar_thresh: float = 0.9  # INFERENCE.SIMILAR_THRES
    similar_type: str = "cosine"  # INFERENCE.SIMILAR_TYPE (only "cosine": the official "L2" branch cannot run)
    class_specific: bool = True  # INFERENCE.CLASS_SPECIFIC
    center_bias_value: float = -2.19  # POSITION_HEAD.THING.BIAS_VALUE (initialisation of both position outputs)
    # training
    pos_num: int = 7  # POSITION_HEAD.THING.POS_NUM (5 in the 600-3x configs)
    gaussian_sigma: float = 3.0  # POSITION_HEAD.THING.GAUSSIAN_SIGMA
    min_overlap: float = 0.7  # POSITION_HEAD.THING.MIN_OVERLAP
    center_type: str = "mass"  # POSITION_HEAD.THING.CENTER_TYPE ("mass" or "box")
    instance_scales: tuple[tuple[float, float], ...] = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))
    focal_alpha: float = 0.25  # LOSS_WEIGHT.FOCAL_LOSS_ALPHA
    focal_gamma: float = 2.0  # LOSS_WEIGHT.FOCAL_LOSS_GAMMA
    position_loss_weight: float = 1.0  # LOSS_WEIGHT.POSITION
    segment_loss_weight: float = 3.0  # LOSS_WEIGHT.SEGMENT
    tensor_dim: int = 100  # MODEL.TENSOR_DIM: most instances per level and image in training

    def __post_init__(self) -> None:
        if self.similar_type != "cosine":
            # official ``cal_similarity(w, w, "L2")`` returns a vector (|w − w| of a tensor with itself), which
            # ``kernel_fusion``'s ``triu`` rejects: no official model can use it
            raise ValueError(f"similar_type must be 'cosine' (the official 'L2' path fails), got {self.similar_type!r}")
        if self.center_type not in ("mass", "box"):
            raise ValueError(f"center_type must be 'mass' or 'box', got {self.center_type!r}")
        if len(self.instance_scales) != len(HEAD_LEVELS):
            raise ValueError(f"instance_scales needs one (min, max) per level {HEAD_LEVELS}")
        if self.head_num_convs < 1 or self.center_top_num < 2:
            raise ValueError("head_num_convs must be ≥ 1 and center_top_num ≥ 2")

    @classmethod
    def from_config(cls, cfg: Any = None, **overrides: Any) -> "PanopticFCNOptions":
        """Options from ``cfg`` fields of the same names (where it has them), then ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown PanopticFCN option(s) {unknown}; valid: {sorted(names)}")
        values = {n: getattr(cfg, n) for n in names if cfg is not None and hasattr(cfg, n)}
        values.update(overrides)
        if "instance_scales" in values:  # pairs, or flat (min, max, min, max, …) as a config field may hold them
            scales = list(values["instance_scales"])
            if scales and not isinstance(scales[0], (tuple, list)):
                scales = list(zip(scales[0::2], scales[1::2]))
            values["instance_scales"] = tuple((float(a), float(b)) for a, b in scales)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["instance_scales"] = [list(s) for s in self.instance_scales]
        return d
