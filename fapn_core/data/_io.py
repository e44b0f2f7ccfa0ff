"""Image / label file reading and validation shared by the dataset readers (internal)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grey / alpha / 16-bit inputs are converted)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    arr = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # labels are not rotated either
    if arr is not None:
        return np.ascontiguousarray(arr[..., ::-1])
    try:  # formats / variants cv2 cannot decode
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"unreadable image: {p} ({e})") from None


def read_index_map(path: str | Path, what: str = "label") -> np.ndarray:
    """Read a single-channel PNG of integer ids (8/16/32-bit grey or palette indices) as HxW int64."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    try:
        with Image.open(p) as im:
            mode = im.mode
            if mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise ValueError(
                    f"{what} file {p} has mode {mode!r}: expected a single-channel PNG of class ids "
                    "(colour-coded label images are not supported)"
                )
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"unreadable {what} file: {p} ({e})") from None
    return arr.astype(np.int64)


def check_label_values(label: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = 255) -> None:
    """Raise ValueError naming the file and the offending values if ``label`` has ids outside the class list."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:20]) + (" ..." if bad.size > 20 else "")
        raise ValueError(
            f"label file {path} has values [{shown}] outside the {num_classes} classes "
            f"0..{num_classes - 1} (and {ignore_index} = ignore)"
        )


def check_same_size(image: np.ndarray, other: np.ndarray, image_path: Path, other_path: Path) -> None:
    if image.shape[:2] != other.shape[:2]:
        raise ValueError(
            f"size mismatch: image {image_path} is {image.shape[1]}x{image.shape[0]} but "
            f"{other_path} is {other.shape[1]}x{other.shape[0]}"
        )


def list_dir(path: Path, limit: int = 12) -> str:
    """Short description of a folder's content for error messages."""
    if not path.exists():
        return "nothing (path does not exist)"
    if not path.is_dir():
        return "a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not names:
        return "an empty folder"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
