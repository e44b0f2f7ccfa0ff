"""A generated corpus of unusual and malformed image files, each with what decoding must give.

Used by tests/test_io.py and benchmarks (peak memory); every entry is (name, bytes, expectation) where the
expectation is either ("ok", (H, W), pixel (y, x) → RGB or None) or ("error", regex of the message).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w×h with a tiny (invalid) IDAT: only a pre-decode size check stops it cheaply."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def corpus() -> list[tuple[str, bytes, tuple]]:
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16] = (200, 30, 40)
    rgb[:, 16:] = (10, 220, 90)
    base = Image.fromarray(rgb)
    red = (200, 30, 40)
    items: list[tuple[str, bytes, tuple]] = []
    ok = lambda hw, px=None: ("ok", hw, px)  # noqa: E731
    err = lambda pattern: ("error", pattern)  # noqa: E731
    items.append(("rgb.png", _save(base, "PNG"), ok((24, 32), ((0, 0), red))))
    items.append(("grey_L.png", _save(base.convert("L"), "PNG"), ok((24, 32))))
    items.append(("grey_LA.png", _save(base.convert("LA"), "PNG"), ok((24, 32))))
    p = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    items.append(("palette_P.png", _save(p, "PNG"), ok((24, 32), ((0, 0), red))))
    items.append(("palette_transparency.png", _save(p, "PNG", transparency=0), ok((24, 32))))
    rgba = base.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:, :16, 3] = 0  # left half fully transparent → white
    items.append(("rgba.png", _save(Image.fromarray(a), "PNG"), ok((24, 32), ((0, 0), (255, 255, 255)))))
    grey16 = Image.fromarray((np.arange(24 * 32).reshape(24, 32) * 60).astype(np.uint16))
    items.append(("grey16.png", _save(grey16, "PNG"), ok((24, 32), ((0, 0), (0, 0, 0)))))
    items.append(("cmyk.jpg", _save(base.convert("CMYK"), "JPEG", quality=95), ok((24, 32))))
    items.append(("grey.jpg", _save(base.convert("L"), "JPEG"), ok((24, 32))))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    items.append(("exif_rot6.jpg", _save(base, "JPEG", exif=exif, quality=95), ok((32, 24))))
    exif8 = Image.Exif()
    exif8[0x0112] = 3
    items.append(("exif_rot180.png", _save(base, "PNG", exif=exif8), ok((24, 32), ((0, 0), (10, 220, 90)))))
    frames = [base, Image.fromarray(255 - rgb)]
    items.append(("animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:]), ok((24, 32))))
    items.append(("animated.webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
                  ok((24, 32), ((0, 0), red))))
    items.append(("static.gif", _save(base, "GIF"), ok((24, 32))))
    items.append(("lossless.webp", _save(base, "WEBP", lossless=True), ok((24, 32), ((0, 0), red))))
    items.append(("image.bmp", _save(base, "BMP"), ok((24, 32), ((0, 0), red))))
    items.append(("image.tif", _save(base, "TIFF"), ok((24, 32), ((0, 0), red))))
    items.append(("float_F.tif", _save(Image.fromarray(np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)),
                                       "TIFF"), ok((24, 32), ((0, 0), (0, 0, 0)))))
    items.append(("int32_I.tif", _save(Image.fromarray(np.arange(24 * 32, dtype=np.int32).reshape(24, 32)), "TIFF"),
                  ok((24, 32))))
    items.append(("bilevel_1.png", _save(base.convert("1"), "PNG"), ok((24, 32))))
    items.append(("icon.ico", _save(base.resize((32, 32)), "ICO", sizes=[(32, 32)]), ok((32, 32))))
    items.append(("one_pixel.png", _save(Image.new("RGB", (1, 1), red), "PNG"), ok((1, 1), ((0, 0), red))))
    items.append(("wide.png", _save(Image.new("RGB", (4000, 1), red), "PNG"), ok((1, 4000))))
    full_jpeg = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)), "JPEG")
    items.append(("truncated.jpg", full_jpeg[: len(full_jpeg) // 2], err("truncated or corrupt")))
    full_png = _save(Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128, 3), np.uint8)), "PNG")
    items.append(("truncated.png", full_png[: len(full_png) // 2], err("truncated or corrupt|could not be decoded")))
    bad_crc = bytearray(full_png)
    bad_crc[40] ^= 0xFF
    items.append(("bad_crc.png", bytes(bad_crc), err("truncated or corrupt|could not be|not an image")))
    items.append(("empty.png", b"", err("empty")))
    items.append(("text.png", b"hello, I am not a picture\n" * 10, err("not an image")))
    items.append(("random.bin", np.random.default_rng(2).integers(0, 256, 4096, np.uint8).tobytes(), err("not an image")))
    items.append(("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>', err("not an image")))
    items.append(("bomb_20000.png", _png_header_only(20000, 20000), err("over the 40 MP limit")))
    items.append(("bomb_100000x1.png", _png_header_only(100000, 1000), err("over the 40 MP limit")))
    items.append(("zero_size.png", _png_header_only(0, 10), err("empty size|not an image|could not")))
    items.append(("html.jpg", b"<html><body>404</body></html>", err("not an image")))
    return items
