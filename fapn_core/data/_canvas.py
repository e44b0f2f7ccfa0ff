"""Canvas with image / label / instance layers and scene layout for the synthetic generator (internal)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ._textures import Box, Fields, Style, make_fields, render

# Class ids (see synthetic.CLASS_NAMES).
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, POLE, FENCE, SIGN, PERSON, CAR = range(10)


@dataclass
class Layout:
    """Street geometry: horizon row, vanishing point and ground lines as slopes u = dx/dy."""

    h: int
    w: int
    yh: int  # horizon row
    vx: float  # vanishing point column
    u_road: tuple[float, float]  # road edges (left < right)
    u_side: tuple[float, float]  # outer sidewalk edges (left <= road left, right >= road right)
    d_far: float  # |dx| at which the side walls end (distant skyline in between)
    k_person: float  # person height in px per px of dy (distance below the horizon)
    k_car: float  # car width per px of dy
    k_pole: float  # pole width per px of dy
    k_sign: float  # sign size per px of dy

    @property
    def dy_max(self) -> int:
        return self.h - 1 - self.yh

    def x_at(self, u: float, dy: float) -> float:
        return self.vx + u * dy


def sample_layout(rng: np.random.Generator, h: int, w: int) -> Layout:
    u = rng.uniform
    yh = int(round(h * u(0.36, 0.5)))
    vx = w * u(0.3, 0.7)
    dyb = h - 1 - yh
    xl, xr = w * u(-0.35, 0.25), w * u(0.75, 1.35)
    sl = w * u(0.12, 0.4) * (rng.random() > 0.1)
    sr = w * u(0.12, 0.4) * (rng.random() > 0.1)
    ul, ur = (xl - vx) / dyb, (xr - vx) / dyb
    return Layout(
        h=h, w=w, yh=yh, vx=vx,
        u_road=(ul, ur), u_side=(ul - sl / dyb, ur + sr / dyb),
        d_far=w * u(0.04, 0.12),
        k_person=u(20, 25) / dyb, k_car=u(0.22, 0.4) * w / dyb,
        k_pole=u(3.5, 4.6) / dyb, k_sign=u(13, 20) / dyb,
    )


@dataclass
class Canvas:
    """Float RGB image, uint8 label and int32 instance layers painted back to front."""

    rng: np.random.Generator
    h: int
    w: int
    img: np.ndarray = field(init=False)
    lab: np.ndarray = field(init=False)
    inst: np.ndarray = field(init=False)
    f: Fields = field(init=False)
    shade: np.ndarray = field(init=False)  # multiplicative shadow map (applied at the end)
    drawn: dict[int, int] = field(default_factory=dict)  # small-object id -> painted pixels
    small_boxes: dict[int, Box] = field(default_factory=dict)  # small-object id -> paint box
    _next_id: int = 1

    def __post_init__(self) -> None:
        self.img = np.zeros((self.h, self.w, 3), np.float32)
        self.lab = np.full((self.h, self.w), SKY, np.uint8)
        self.inst = np.zeros((self.h, self.w), np.int32)
        self.f = make_fields(self.rng, self.h, self.w)
        self.shade = np.ones((self.h, self.w), np.float32)

    def new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def clip(self, y0: float, y1: float, x0: float, x1: float) -> Box | None:
        b = (max(0, int(np.floor(y0))), min(self.h, int(np.ceil(y1))),
             max(0, int(np.floor(x0))), min(self.w, int(np.ceil(x1))))
        return b if b[0] < b[1] and b[2] < b[3] else None

    @staticmethod
    def trim(box: Box, mask: np.ndarray) -> tuple[Box, np.ndarray] | None:
        """Shrink ``box`` (and ``mask``) to the bounding box of ``mask``; None if empty."""
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size == 0:
            return None
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return (box[0] + r0, box[0] + r1, box[2] + c0, box[2] + c1), mask[r0:r1, c0:c1]

    def fill(self, box: Box, mask: np.ndarray, cls: int, style: Style, inst: int = 0) -> int:
        """Paint ``style`` rendered only over the bounding box of ``mask``."""
        t = self.trim(box, mask)
        if t is None:
            return 0
        return self.paint(t[0], t[1], cls, render(style, self.f, t[0]), inst)

    @staticmethod
    def grid(box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates (yy column, xx row) of a box, float32."""
        y0, y1, x0, x1 = box
        return (np.arange(y0, y1, dtype=np.float32)[:, None], np.arange(x0, x1, dtype=np.float32)[None, :])

    def paint(self, box: Box, mask: np.ndarray, cls: int, tex: np.ndarray, inst: int = 0) -> int:
        """Paint ``tex`` ((3,) colour or (h, w, 3)) with class ``cls`` where ``mask``; returns pixel count."""
        y0, y1, x0, x1 = box
        sl = (slice(y0, y1), slice(x0, x1))
        m = mask.astype(bool, copy=False)
        self._put(self.img[sl], m, tex)
        np.copyto(self.lab[sl], np.uint8(cls), where=m)
        np.copyto(self.inst[sl], np.int32(inst), where=m)
        return int(np.count_nonzero(m))

    def recolor(self, box: Box, mask: np.ndarray, tex: np.ndarray) -> None:
        """Change only the image (texture details that keep the label: markings, windows, posters)."""
        y0, y1, x0, x1 = box
        self._put(self.img[y0:y1, x0:x1], mask.astype(bool, copy=False), tex)

    @staticmethod
    def _put(dst: np.ndarray, m: np.ndarray, tex: np.ndarray) -> None:
        if tex.ndim == 3:
            cv2.copyTo(np.ascontiguousarray(tex, np.float32), m.view(np.uint8), dst)
        else:
            dst[m] = tex
