"""``Segmentor`` = preprocess → backbone → neck → head → postprocess.

API images are RGB. The model converts them to its own channel order and normalisation (official detectron2
models: BGR, mean in 0–255 units, std 1), pads bottom/right with zeros to a multiple of ``size_divisibility``
after normalisation (as detectron2's ``ImageList``), and crops logits back to the input size.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ImageModel(nn.Module):
    """What every model here shares: RGB 0–255 in, the model's own channel order and normalisation, zero padding
    to ``size_divisibility`` after normalisation (detectron2's ``ImageList``)."""

    def __init__(
        self,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        size_divisibility: int = 32,
    ) -> None:
        super().__init__()
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError("pixel_mean and pixel_std need 3 values (in the model's channel order)")
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.config = None  # set by the zoo: the ModelConfig this model was built from

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB (N, 3, H, W) in 0–255 → the model's channel order and normalisation."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) RGB; got shape {tuple(images.shape)}")
        x = images.to(self.pixel_mean.device, torch.float32)
        if self.input_format == "BGR":
            x = x.flip(1)
        return (x - self.pixel_mean) / self.pixel_std

    def pad(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        d = self.size_divisibility
        h, w = x.shape[-2:]
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=value)
        return x

    @staticmethod
    def image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One RGB image, (H, W, 3) uint8 array or (3, H, W) tensor → (3, H, W) tensor."""
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image must be H×W×3 RGB; got shape {image.shape}")
            arr = np.ascontiguousarray(image)
            return torch.from_numpy(arr if arr.flags.writeable else arr.copy()).permute(2, 0, 1)
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor must be (3, H, W) RGB; got shape {tuple(image.shape)}")
        return image

    def autocast(self, amp: bool):
        """CUDA autocast (bf16 where supported, else fp16) when ``amp`` and on CUDA; a no-op otherwise."""
        if amp and self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()


class Segmentor(ImageModel):
    task = "semantic"
    semantic_output = "logits"  # what forward/predict return per class ("scores" for MaskFormer: no softmax)

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        size_divisibility: int = 32,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format,
                         size_divisibility=size_divisibility)
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.ignore_index = ignore_index

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def extract_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Neck features for RGB images (normalised and padded here)."""
        return self.neck(self.backbone(self.pad(self.normalize(images))))

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Eval: logits (N, C, H, W) at the input size. Training with ``targets`` (N, H, W): dict of losses."""
        h, w = images.shape[-2:]
        feats = self.extract_features(images)
        if self.training:
            if targets is None:
                raise ValueError("training forward needs targets (N, H, W) int64")
            t = self.pad(targets.to(feats["p2"].device, torch.long).unsqueeze(1), self.ignore_index).squeeze(1)
            return self.head.losses(feats, t)
        return self.head(feats)[..., :h, :w]

    @torch.inference_mode()
    def predict(self, image: np.ndarray | torch.Tensor, *, amp: bool = False) -> torch.Tensor:
        """Per-class output (C, H, W) float32 (:attr:`semantic_output`) on the model's device for one RGB image
        (H, W, 3) uint8 or (3, H, W)."""
        x = self.image_tensor(image).unsqueeze(0).to(self.device, torch.float32)
        with self.autocast(amp):
            out = self(x)
        return out[0].float()
