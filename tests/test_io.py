"""Untrusted images and label maps: a corpus of ≥30 unusual/malformed files, each works or fails clearly."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn_core.io import InputError, decode_image, decode_label, fit_size, resize_label

sys.path.insert(0, str(Path(__file__).parent))
from image_corpus import corpus  # noqa: E402

CORPUS = corpus()


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name,data,expect", CORPUS, ids=[c[0] for c in CORPUS])
def test_each_corpus_file_works_or_fails_clearly(name, data, expect):
    if expect[0] == "ok":
        out = decode_image(data)
        assert out.rgb.dtype == np.uint8 and out.rgb.ndim == 3 and out.rgb.shape[2] == 3
        assert out.rgb.shape[:2] == expect[1], name
        if expect[2] is not None:
            (y, x), colour = expect[2]
            assert np.abs(out.rgb[y, x].astype(int) - np.array(colour)).max() <= 12, (name, out.rgb[y, x])
    else:
        with pytest.raises(InputError, match=expect[1]):
            decode_image(data)


def test_exif_rotation_moves_pixels_where_a_viewer_shows_them():
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16] = (200, 30, 40)
    rgb[:, 16:] = (10, 220, 90)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the left (red) half ends up on top
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG", exif=exif)
    out = decode_image(buf.getvalue())
    assert out.rgb.shape == (32, 24, 3) and out.original_size == (24, 32)
    assert out.rgb[0, 12, 0] > 150 and out.rgb[-1, 12, 1] > 150
    assert any("EXIF orientation 6" in n for n in out.notes)


def test_limits_are_configurable():
    buf = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buf, "PNG")
    with pytest.raises(InputError, match="over the 0 MP limit"):
        decode_image(buf.getvalue(), max_pixels=5000)
    with pytest.raises(InputError, match="MiB limit"):
        decode_image(buf.getvalue(), max_bytes=10)


def test_corpus_peak_memory_is_bounded():
    """Decoding the whole corpus (bombs included) in a fresh process stays far below the bombs' sizes."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from image_corpus import corpus\nfrom fapn_core.io import decode_image, InputError\n"
        "for name, data, _ in corpus():\n"
        "    try: decode_image(data)\n"
        "    except InputError: pass\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    peak_mb = int(out.stdout.strip()) / 1024
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"  # a decoded 20000² RGB bomb alone would be 1200 MB


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG")
    return buf.getvalue()


def test_label_maps():
    lab = np.zeros((6, 8), np.uint8)
    lab[:, 4:] = 3
    lab[0, 0] = 255
    out = decode_label(_png(lab), expected_hw=(6, 8), num_classes=4)
    assert out.dtype == np.int64 and np.array_equal(out, lab)
    with pytest.raises(InputError, match=re.escape("is 8×6 but the image is 10×6 (W×H)")):
        decode_label(_png(lab), expected_hw=(6, 10))
    with pytest.raises(InputError, match="class ids 3 outside 0..2"):
        decode_label(_png(lab), num_classes=3)
    colour = np.zeros((6, 8, 3), np.uint8)
    colour[:, :4] = (128, 64, 128)
    with pytest.raises(InputError, match="colour image"):
        decode_label(_png(colour))
    grey_rgb = np.repeat(lab[..., None], 3, axis=2)  # ids saved as a grey RGB image are accepted
    assert np.array_equal(decode_label(_png(grey_rgb)), lab)
    ids16 = (np.arange(48).reshape(6, 8) * 1000).astype(np.uint16)
    assert decode_label(_png(ids16)).max() == 47000
    with pytest.raises(InputError, match="not an image"):
        decode_label(b"label text")


def test_fit_size_and_resize_label():
    img = np.zeros((1000, 3000, 3), np.uint8)
    out, msg = fit_size(img, 1024)
    assert out.shape == (341, 1024, 3) and "resized from 3000×1000 to 1024×341" in msg
    same, msg2 = fit_size(img[:10, :10], 1024)
    assert same.shape == (10, 10, 3) and msg2 is None
    out, _ = fit_size(img, 4096, max_pixels=300_000)
    assert out.shape[0] * out.shape[1] <= 300_000
    lab = np.arange(12).reshape(3, 4)
    assert resize_label(lab, (6, 8))[5, 7] == 11
