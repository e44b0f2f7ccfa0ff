"""Colour/texture sampling for the synthetic street scenes (internal).

Every class draws its colour from a mixture of modes that deliberately overlaps with its
neighbours (road vs sidewalk, building vs sky/vegetation, pole vs fence), and its texture from
shared noise fields, stripes and gradients, so that neither colour nor texture alone decides
the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


@dataclass
class Fields:
    """Per-scene noise fields (HxW float32, roughly zero-mean / unit-std)."""

    coarse: np.ndarray
    mid: np.ndarray
    fine: np.ndarray
    pixel: np.ndarray


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Band-limited noise with feature size ~``cell`` px, normalised to unit std."""
    gh, gw = h // cell + 3, w // cell + 3
    small = rng.standard_normal((gh, gw), dtype=np.float32)
    big = cv2.resize(small, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(rng.integers(0, cell)), int(rng.integers(0, cell))
    big = big[oy : oy + h, ox : ox + w]
    return big / (float(big.std()) + 1e-6)


def make_fields(rng: np.random.Generator, h: int, w: int) -> Fields:
    return Fields(
        coarse=smooth_noise(rng, h, w, 48),
        mid=smooth_noise(rng, h, w, 10),
        fine=smooth_noise(rng, h, w, 2),
        pixel=rng.standard_normal((h, w), dtype=np.float32),
    )


@dataclass
class Style:
    """How to fill a region: base colour plus brightness modulations (relative) and pixel noise."""

    color: np.ndarray  # (3,) float32 RGB 0..255
    tint: np.ndarray  # (3,) colour shift multiplied by the coarse field
    coarse: float = 0.05
    mid: float = 0.0
    fine: float = 0.0
    pixel: float = 3.0  # absolute std in intensity units
    stripes: tuple[float, float, float] | None = None  # period px, angle rad, relative amplitude
    grad: tuple[float, float] | None = None  # angle rad, relative amplitude across the box


def render(style: Style, f: Fields, box: Box) -> np.ndarray:
    """Texture of ``style`` over ``box`` as an (h, w, 3) float32 array."""
    y0, y1, x0, x1 = box
    sl = (slice(y0, y1), slice(x0, x1))
    c = f.coarse[sl]
    b = 1.0 + style.coarse * c
    if style.mid:
        b = b + style.mid * f.mid[sl]
    if style.fine:
        b = b + style.fine * f.fine[sl]
    if style.stripes is not None or style.grad is not None:
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        if style.stripes is not None:
            period, ang, amp = style.stripes
            ph = (xx * np.cos(ang) + yy * np.sin(ang)) * (2 * np.pi / period)
            b = b + amp * np.sin(ph)
        if style.grad is not None:
            ang, amp = style.grad
            diag = max(1.0, float(np.hypot(y1 - y0, x1 - x0)))
            b = b + amp * (((xx - x0) * np.cos(ang) + (yy - y0) * np.sin(ang)) / diag - 0.5)
    n = style.pixel * f.pixel[sl] if style.pixel else 0.0
    # per-channel 2D ops + merge: much faster than broadcasting over a trailing axis of 3
    col, tint = style.color, style.tint
    return cv2.merge([b * np.float32(col[k]) + c * np.float32(tint[k]) + n for k in range(3)])


# --------------------------------------------------------------------------- colour modes
# (mean RGB, per-channel jitter std). Modes overlap across neighbouring classes on purpose.
_MODES: dict[str, list[tuple[tuple[int, int, int], float]]] = {
    "road": [((105, 105, 110), 22), ((88, 86, 84), 18), ((125, 121, 116), 18), ((80, 86, 96), 14),
             ((140, 136, 130), 14), ((112, 100, 92), 14)],
    "sidewalk": [((142, 139, 135), 22), ((166, 155, 140), 18), ((150, 106, 96), 18), ((116, 115, 118), 18),
                 ((182, 178, 170), 14), ((128, 120, 104), 16)],
    "building": [((132, 130, 128), 28), ((176, 160, 135), 18), ((150, 88, 68), 18), ((102, 82, 72), 18),
                 ((206, 200, 190), 14), ((96, 116, 136), 18), ((108, 126, 96), 14), ((188, 186, 200), 14),
                 ((120, 122, 118), 22)],
    "vegetation": [((66, 104, 50), 18), ((42, 66, 36), 14), ((104, 114, 66), 18), ((128, 144, 76), 18),
                   ((140, 112, 58), 18), ((96, 110, 96), 14), ((60, 84, 70), 14)],
    "sky": [((112, 156, 214), 22), ((186, 194, 204), 16), ((214, 220, 228), 12), ((200, 182, 166), 18),
            ((150, 170, 192), 18), ((160, 164, 170), 14)],
    "pole": [((110, 110, 114), 26), ((52, 52, 56), 12), ((160, 164, 170), 18), ((46, 76, 56), 12),
             ((128, 100, 72), 14)],
    "fence": [((118, 118, 118), 26), ((60, 60, 62), 12), ((124, 96, 66), 18), ((52, 86, 62), 12),
              ((168, 168, 164), 18)],
    "car": [((32, 32, 34), 8), ((220, 220, 222), 12), ((160, 162, 168), 16), ((118, 118, 124), 16),
            ((150, 32, 32), 22), ((32, 52, 120), 22), ((42, 76, 52), 16), ((200, 170, 44), 22),
            ((92, 62, 42), 16)],
    "clothes": [((30, 30, 34), 10), ((40, 50, 90), 16), ((200, 200, 200), 20), ((150, 30, 40), 24),
                ((60, 90, 60), 20), ((120, 100, 80), 24), ((90, 90, 96), 20), ((200, 160, 40), 24),
                ((60, 120, 170), 24)],
    "skin": [((224, 186, 160), 14), ((180, 130, 100), 14), ((120, 84, 60), 12), ((40, 34, 30), 8)],
    "poster": [((200, 40, 40), 30), ((40, 90, 190), 30), ((230, 200, 40), 30), ((40, 150, 70), 30),
               ((230, 230, 230), 15), ((30, 30, 30), 10)],
}


def sample_color(rng: np.random.Generator, kind: str) -> np.ndarray:
    modes = _MODES[kind]
    mean, std = modes[int(rng.integers(len(modes)))]
    col = np.asarray(mean, np.float32) + rng.normal(0, std * 0.35, 3).astype(np.float32)
    col = col + np.float32(rng.normal(0, std * 0.6))  # brightness jitter shared by channels
    return np.clip(col, 8, 248).astype(np.float32)


def _tint(rng: np.random.Generator, amount: float) -> np.ndarray:
    return rng.normal(0, amount, 3).astype(np.float32)


def sample_style(rng: np.random.Generator, kind: str) -> Style:
    """A random fill style for a class ("road", "building", ...) or material ("car", "clothes")."""
    col = sample_color(rng, kind)
    u = rng.uniform
    if kind == "sky":
        return Style(col, _tint(rng, 3), coarse=u(0.04, 0.14), mid=u(0, 0.03), pixel=u(1, 3),
                     grad=(np.pi / 2 + u(-0.2, 0.2), u(-0.35, 0.1)))
    if kind == "building":
        st = Style(col, _tint(rng, 4), coarse=u(0.04, 0.14), mid=u(0.0, 0.08), fine=u(0, 0.04), pixel=u(3, 9))
        r = rng.random()
        if r < 0.3:
            st.stripes = (u(3, 9), np.pi / 2 + u(-0.1, 0.1), u(0.03, 0.1))
        elif r < 0.45:
            st.fine = u(0.08, 0.2)  # rough / overgrown facade: vegetation-like texture
        if rng.random() < 0.4:
            st.grad = (u(0, 2 * np.pi), u(0.1, 0.3))
        return st
    if kind == "vegetation":
        st = Style(col, _tint(rng, 5), coarse=u(0.06, 0.2), mid=u(0.1, 0.28), fine=u(0.1, 0.3), pixel=u(6, 18))
        if rng.random() < 0.2:  # smooth lawn / clipped hedge: building-like texture
            st.mid, st.fine, st.pixel = u(0.02, 0.08), u(0.0, 0.05), u(3, 7)
        return st
    if kind == "road":
        st = Style(col, _tint(rng, 4), coarse=u(0.05, 0.12), mid=u(0.02, 0.07), fine=u(0, 0.05), pixel=u(4, 12))
        if rng.random() < 0.2:
            st.fine = u(0.08, 0.18)  # gravel
        return st
    if kind == "sidewalk":
        st = Style(col, _tint(rng, 4), coarse=u(0.04, 0.1), mid=u(0, 0.06), fine=u(0, 0.04), pixel=u(3, 9))
        if rng.random() < 0.25:
            st.stripes = (u(4, 10), u(0, np.pi), u(0.03, 0.08))
        return st
    if kind in ("pole", "fence"):
        return Style(col, _tint(rng, 4), coarse=u(0.02, 0.06), pixel=u(2, 6), grad=(u(0, 2 * np.pi), u(0.1, 0.4)))
    if kind == "car":
        return Style(col, _tint(rng, 4), coarse=u(0.01, 0.05), pixel=u(2, 5), grad=(u(0, 2 * np.pi), u(0.15, 0.45)))
    if kind == "poster":
        st = Style(col, _tint(rng, 20), coarse=u(0.1, 0.4), mid=u(0.05, 0.3), pixel=u(3, 8))
        if rng.random() < 0.5:
            st.stripes = (u(3, 12), u(0, np.pi), u(0.1, 0.4))
        return st
    return Style(col, _tint(rng, 4), coarse=u(0.02, 0.08), mid=u(0, 0.08), pixel=u(2, 6))
