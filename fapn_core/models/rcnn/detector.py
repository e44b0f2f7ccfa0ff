"""``Detector`` = preprocess → backbone → neck → RPN → ROI heads [→ semantic head → panoptic combine] → postprocess.

The role :class:`~fapn_core.models.segmentor.Segmentor` plays for semantic models, for detectron2's
Faster R-CNN, Mask R-CNN (with its own or PointRend's mask head) and Panoptic FPN (``GeneralizedRCNN`` /
``PanopticFPN``). Images are RGB 0–255 at the API; a batch is normalised per image and zero-padded to one size
divisible by 32; every box and mask of a result is at the requested output size of its image (default: the input
size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..segmentor import ImageModel
from .boxes import clip_boxes, nonempty
from .mask_head import paste_masks
from .panoptic import combine_panoptic
from .point_rend import PointRendCapture
from .roi_heads import ROIHeads
from .rpn import RPN


@dataclass
class DetectionResult:
    """What a detector predicts for one image, at ``image_size`` = (H, W).

    ``boxes`` (N, 4) XYXY float32, ``scores`` (N,), ``classes`` (N,) int64 (0..K−1, thing classes), sorted by score;
    ``masks`` (N, H, W) bool (Mask R-CNN, Panoptic FPN); ``sem_seg`` (S, H, W) float32 logits and ``panoptic_seg``
    (H, W) int32 with ``segments_info`` (Panoptic FPN; 0 = unassigned); ``point_rend`` (PointRend instance
    models): per instance, the points each subdivision step evaluated (in this image's pixels) and the coarse mask.
    """

    image_size: tuple[int, int]
    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    masks: torch.Tensor | None = None
    mask_probs: torch.Tensor | None = None
    sem_seg: torch.Tensor | None = None
    panoptic_seg: torch.Tensor | None = None
    segments_info: list[dict[str, Any]] = field(default_factory=list)
    point_rend: PointRendCapture | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to(self, device: str | torch.device) -> "DetectionResult":
        moved = {k: (v.to(device) if isinstance(v, (torch.Tensor, PointRendCapture)) else v)
                 for k, v in self.__dict__.items()}
        return DetectionResult(**moved)

    def select(self, keep: torch.Tensor) -> "DetectionResult":
        """The instances in ``keep`` (index or bool mask); semantic and panoptic outputs unchanged."""
        pick = {k: getattr(self, k)[keep] if getattr(self, k) is not None else None
                for k in ("boxes", "scores", "classes", "masks", "mask_probs")}
        return DetectionResult(self.image_size, sem_seg=self.sem_seg, panoptic_seg=self.panoptic_seg,
                               segments_info=self.segments_info,
                               point_rend=None if self.point_rend is None else self.point_rend.select(keep), **pick)


class Detector(ImageModel):
    """Faster R-CNN (``roi_heads.mask_on=False``), Mask R-CNN (or PointRend instance: ``roi_heads`` with a
    PointRend mask head), or Panoptic FPN (with ``head``, a SemSegFPNHead).

    Module names follow detectron2 (``proposal_generator``, ``roi_heads``) so official checkpoints map by prefix;
    the semantic head is ``head`` as in :class:`Segmentor`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        proposal_generator: RPN,
        roi_heads: ROIHeads,
        head: nn.Module | None = None,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "BGR",
        size_divisibility: int = 32,
        ignore_index: int = 255,
        instance_loss_weight: float = 1.0,
        overlap_thresh: float = 0.5,
        stuff_area_limit: int = 4096,
        instances_score_thresh: float = 0.5,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format,
                         size_divisibility=size_divisibility)
        self.backbone = backbone
        self.neck = neck
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        if head is not None:
            self.head = head
        self.ignore_index = ignore_index
        self.instance_loss_weight = instance_loss_weight
        self.combine = dict(overlap_thresh=overlap_thresh, stuff_area_limit=stuff_area_limit,
                            instances_score_thresh=instances_score_thresh)

    @property
    def task(self) -> str:
        if hasattr(self, "head"):
            return "panoptic"
        return "instance" if self.roi_heads.mask_on else "detection"

    @property
    def num_classes(self) -> int:
        """Number of thing (instance) classes."""
        return self.roi_heads.num_classes

    @property
    def num_stuff_classes(self) -> int:
        """Semantic channels of a Panoptic FPN (channel 0 = all things merged); 0 without a semantic head."""
        return self.head.num_classes if hasattr(self, "head") else 0

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """RGB images → one normalised, zero-padded batch (N, 3, H', W') and the unpadded sizes."""
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            images = list(images)
        if not len(images):
            raise ValueError("no images given")
        sizes = []
        for im in images:
            if im.dim() != 3 or im.shape[0] != 3 or im.shape[1] < 1 or im.shape[2] < 1:
                raise ValueError(f"each image must be (3, H, W) RGB with H, W ≥ 1; got {tuple(im.shape)}")
            sizes.append((int(im.shape[1]), int(im.shape[2])))
        h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        d = self.size_divisibility
        h, w = -(-h // d) * d, -(-w // d) * d
        batch = self.pixel_mean.new_zeros((len(sizes), 3, h, w))
        for i, (im, (ih, iw)) in enumerate(zip(images, sizes)):
            batch[i, :, :ih, :iw] = self.normalize(im[None])[0]
        return batch, sizes

    def extract_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Neck features for RGB images (N, 3, H, W) (normalised and padded here), as ``Segmentor``'s."""
        return self.neck(self.backbone(self.preprocess(images)[0]))

    def forward(
        self, images: torch.Tensor | Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]] | None = None,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[DetectionResult] | dict[str, torch.Tensor]:
        """Eval: one :class:`DetectionResult` per image at ``output_sizes`` (default the input sizes).

        Training with ``targets`` (per image: ``boxes`` (M, 4) XYXY input pixels, ``classes`` (M,), ``masks``
        (M, H, W) bool for mask heads, ``sem_seg`` (H, W) int64 for Panoptic FPN, 0 = things): dict of losses.
        """
        x, sizes = self.preprocess(images)
        feats = self.neck(self.backbone(x))
        if self.training:
            if targets is None or len(targets) != len(sizes):
                raise ValueError("training forward needs one target dict per image")
            return self._losses(feats, sizes, targets)
        proposals, _ = self.proposal_generator(feats, sizes)
        detections, _ = self.roi_heads(feats, proposals, sizes)
        out_sizes = list(output_sizes) if output_sizes is not None else sizes
        if len(out_sizes) != len(sizes):
            raise ValueError(f"{len(out_sizes)} output sizes for {len(sizes)} images")
        sem = self.head(feats) if hasattr(self, "head") else None
        results = []
        for i, (det, size, out) in enumerate(zip(detections, sizes, out_sizes)):
            res = self.postprocess(det, size, tuple(int(v) for v in out))
            if sem is not None:
                res.sem_seg = self.semantic_postprocess(sem[i], size, res.image_size)
                res.panoptic_seg, res.segments_info = combine_panoptic(
                    res.scores, res.classes, res.masks, res.sem_seg.argmax(0), **self.combine)
            results.append(res)
        return results

    def _losses(self, feats: dict[str, torch.Tensor], sizes: list[tuple[int, int]],
                targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        dev = feats["p2"].device
        targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
        proposals, losses = self.proposal_generator(feats, sizes, [t["boxes"].float() for t in targets])
        _, roi_losses = self.roi_heads(feats, proposals, sizes, targets)
        losses.update(roi_losses)
        losses = {k: v * self.instance_loss_weight for k, v in losses.items()}
        if hasattr(self, "head"):
            if any("sem_seg" not in t for t in targets):
                raise ValueError("Panoptic FPN training needs semantic targets (targets['sem_seg'])")
            h, w = feats["p2"].shape[-2] * 4, feats["p2"].shape[-1] * 4
            sem = torch.full((len(targets), h, w), self.ignore_index, dtype=torch.long, device=dev)
            for i, t in enumerate(targets):
                sem[i, : t["sem_seg"].shape[-2], : t["sem_seg"].shape[-1]] = t["sem_seg"]
            losses.update(self.head.losses(feats, sem))
        return losses

    @staticmethod
    def postprocess(det: dict[str, torch.Tensor], input_size: tuple[int, int],
                    output_size: tuple[int, int]) -> DetectionResult:
        """detectron2 ``detector_postprocess``: scale boxes by output/input size, clip, drop empty, paste masks."""
        sy, sx = output_size[0] / input_size[0], output_size[1] / input_size[1]
        boxes = det["boxes"] * det["boxes"].new_tensor([sx, sy, sx, sy])
        boxes = clip_boxes(boxes, output_size)
        keep = nonempty(boxes)
        boxes = boxes[keep]
        masks = probs = None
        if "mask_probs" in det:
            probs = det["mask_probs"][keep]
            masks = paste_masks(probs, boxes, output_size)
        points = det["point_rend"].select(keep).scaled(sx, sy) if "point_rend" in det else None
        return DetectionResult(output_size, boxes, det["scores"][keep], det["classes"][keep], masks, probs,
                               point_rend=points)

    @staticmethod
    def semantic_postprocess(logits: torch.Tensor, input_size: tuple[int, int],
                             output_size: tuple[int, int]) -> torch.Tensor:
        """Crop padded (S, H', W') logits to the input size and resize bilinearly to the output size."""
        x = logits[:, : input_size[0], : input_size[1]]
        if tuple(x.shape[-2:]) != tuple(output_size):
            x = F.interpolate(x[None], size=output_size, mode="bilinear", align_corners=False)[0]
        return x

    @torch.inference_mode()
    def predict(self, image: np.ndarray | torch.Tensor, *, amp: bool = False,
                output_size: tuple[int, int] | None = None) -> DetectionResult:
        """One RGB image (H, W, 3) uint8 or (3, H, W) → :class:`DetectionResult` (float32, on the model's device)."""
        x = self.image_tensor(image).to(self.device, torch.float32)
        with self.autocast(amp):
            res = self([x], output_sizes=None if output_size is None else [output_size])[0]
        for name in ("boxes", "scores", "mask_probs", "sem_seg"):
            v = getattr(res, name)
            if v is not None and v.is_floating_point():
                setattr(res, name, v.float())
        return res
