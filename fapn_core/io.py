"""Decoding untrusted images and label maps: size limits before decoding, every Pillow mode, clear errors.

Everything the app and the CLI read from users goes through :func:`decode_image` / :func:`decode_label`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # refuse before decoding above this (decompression bombs)
DEFAULT_MAX_BYTES = 50 * 2 ** 20
IMAGE_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff")

ImageFile.LOAD_TRUNCATED_IMAGES = False


class InputError(ValueError):
    """A user-supplied file that cannot be used, with a message meant for that user."""


@dataclass
class DecodedImage:
    """RGB uint8 (H, W, 3) plus what was done to it on the way in."""

    rgb: np.ndarray
    original_size: tuple[int, int]  # (H, W) as stored in the file
    notes: list[str]


def _open(data: bytes, what: str, max_bytes: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    if len(data) == 0:
        raise InputError(f"the {what} file is empty")
    if len(data) > max_bytes:
        raise InputError(f"the {what} file is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise InputError(f"the {what} file is not an image Pillow can read "
                             f"(supported: {', '.join(IMAGE_TYPES)})") from None
        raise InputError(f"the {what} is over the {max_pixels / 1e6:.0f} MP limit (checked before decoding; "
                         f"Pillow: {e})") from None
    except Exception as e:
        raise InputError(f"the {what} file could not be opened: {e}") from None
    return img


def _check_pixels(img: Image.Image, what: str, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InputError(f"the {what} has an empty size {w}×{h}")
    if w * h > max_pixels:
        raise InputError(f"the {what} is {w}×{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP limit "
                         "(checked before decoding)")


def _load(img: Image.Image, what: str) -> None:
    try:
        img.load()
    except OSError as e:
        raise InputError(f"the {what} file is truncated or corrupt: {e}") from None
    except Exception as e:
        raise InputError(f"the {what} could not be decoded: {e}") from None


def to_rgb(img: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode → RGB uint8; alpha is composited on white; 16-bit and float greys are rescaled."""
    notes: list[str] = []
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        grey = np.nan_to_num(scaled).round().astype(np.uint8)
        notes.append(f"{mode} image rescaled from [{lo:g}, {hi:g}] to 0–255")
        return np.repeat(grey[..., None], 3, axis=2), notes
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparency composited on white")
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB")), notes
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode not in ("RGB",):
        notes.append(f"{mode} converted to RGB")
    return np.asarray(img.convert("RGB")), notes


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedImage:
    """Untrusted bytes → RGB uint8. EXIF orientation applied; first frame of animations; clear errors."""
    img = _open(data, "image", max_bytes, max_pixels)
    _check_pixels(img, "image", max_pixels)
    notes: list[str] = []
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
        notes.append(f"first of {img.n_frames} frames used")
    _load(img, "image")
    original = (img.size[1], img.size[0])
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not make an otherwise good image unusable
        orientation = 1
        notes.append("unreadable EXIF ignored")
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
        notes.append(f"EXIF orientation {orientation} applied")
    rgb, more = to_rgb(img)
    return DecodedImage(np.ascontiguousarray(rgb), original, notes + more)


def read_image_file(path: str | Path, **limits) -> DecodedImage:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such image file: {p}")
    return decode_image(p.read_bytes(), **limits)


def decode_label(
    data: bytes, *, expected_hw: tuple[int, int] | None = None, num_classes: int | None = None,
    ignore_index: int = 255, what: str = "ground truth", max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """A label PNG of class ids (8/16-bit single channel, or palette indices) → int64 (H, W).

    Colour-coded masks (RGB) are refused with a hint; ids ≥ ``num_classes`` other than ``ignore_index`` are
    listed in the error; the size must equal ``expected_hw`` when given.
    """
    img = _open(data, what, max_bytes, max_pixels)
    _check_pixels(img, what, max_pixels)
    _load(img, what)
    if img.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(img.convert("RGB"))
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            label = arr[..., 0].astype(np.int64)
        else:
            raise InputError(f"the {what} is a colour image ({img.mode}); expected a single-channel PNG of class ids "
                             "(colour-coded masks must be converted to ids first)")
    elif img.mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
        label = np.asarray(img).astype(np.int64)
    elif img.mode == "LA":
        label = np.asarray(img)[..., 0].astype(np.int64)
    else:
        raise InputError(f"the {what} has pixel mode {img.mode}; expected 8- or 16-bit class ids")
    if expected_hw is not None and tuple(label.shape) != tuple(expected_hw):
        raise InputError(f"the {what} is {label.shape[1]}×{label.shape[0]} but the image is "
                         f"{expected_hw[1]}×{expected_hw[0]} (W×H); they must match")
    if num_classes is not None:
        bad = np.unique(label[(label >= num_classes) & (label != ignore_index)])
        if bad.size:
            shown = ", ".join(map(str, bad[:10])) + (" …" if bad.size > 10 else "")
            raise InputError(f"the {what} has class ids {shown} outside 0..{num_classes - 1} "
                             f"(and {ignore_index} = ignore)")
        if (label < 0).any():
            raise InputError(f"the {what} has negative ids")
    return label


def decode_instances(data: bytes, *, expected_hw: tuple[int, int], what: str = "instance map",
                     max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """An instance-id PNG (8/16-bit, 0 = none) → int32 (H, W)."""
    inst = decode_label(data, expected_hw=expected_hw, what=what, max_bytes=max_bytes)
    return inst.astype(np.int32)


def fit_size(rgb: np.ndarray, max_side: int, max_pixels: int | None = None) -> tuple[np.ndarray, str | None]:
    """Downscale (area interpolation) so the long side ≤ ``max_side`` and H·W ≤ ``max_pixels``.

    Returns the image and a message when it was resized (never upscales).
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if max_pixels is not None and h * w * scale * scale > max_pixels:
        scale = min(scale, (max_pixels / (h * w)) ** 0.5)
    if scale >= 1.0:
        return rgb, None
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    out = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out, f"resized from {w}×{h} to {nw}×{nh} (max side {max_side}px)"


def resize_label(label: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label/instance map to (H, W)."""
    if tuple(label.shape) == tuple(hw):
        return label
    dtype = label.dtype
    src = label.astype(np.int32) if dtype != np.int32 else label
    out = cv2.resize(src, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    return out.astype(dtype)
