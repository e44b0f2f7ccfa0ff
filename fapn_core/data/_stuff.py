"""Stuff layers of a synthetic street scene: sky, distant skyline, facades, ground (internal).

Also paints the stuff-labelled distractors: facade drainpipes (look like poles), ledges (look
like fence rails), shop signs (look like traffic signs), posters, puddles that reflect the sky,
manholes, crossings, stains and litter (small colourful blobs that look like people).
"""

from __future__ import annotations

import cv2
import numpy as np

from ._canvas import BUILDING, ROAD, SIDEWALK, SKY, VEGETATION, Canvas, Layout
from ._textures import Box, Style, render, sample_color, sample_style


def _ones(box: Box) -> np.ndarray:
    return np.ones((box[1] - box[0], box[3] - box[2]), bool)


def paint_sky(cv: Canvas, L: Layout) -> np.ndarray:
    """Sky above (and just below) the horizon; returns the sky colour (used for haze and reflections)."""
    rng = cv.rng
    st = sample_style(rng, "sky")
    box = (0, min(cv.h, L.yh + 2), 0, cv.w)
    cv.paint(box, _ones(box), SKY, render(st, cv.f, box))
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.35 else 0):  # contrails: thin, bright, still sky
        m = np.zeros((box[1], cv.w), np.uint8)
        y0, y1 = rng.uniform(0, L.yh * 0.8, 2)
        cv2.line(m, (int(rng.uniform(-50, cv.w * 0.5)), int(y0)), (int(rng.uniform(cv.w * 0.5, cv.w + 50)), int(y1)),
                 1, int(rng.integers(1, 3)))
        cv.recolor(box, m.astype(bool), st.color * np.float32(rng.uniform(1.08, 1.25)))
    return st.color


def _haze(st: Style, sky: np.ndarray, amount: float) -> Style:
    st.color = (1 - amount) * st.color + amount * sky
    st.pixel *= 1 - amount
    return st


def paint_skyline(cv: Canvas, L: Layout, sky: np.ndarray) -> None:
    """Distant buildings / tree lines around the vanishing point, hazed toward the sky colour."""
    rng = cv.rng
    haze = rng.uniform(0.2, 0.55)
    for _ in range(int(rng.integers(6, 15))):
        cx = L.vx + rng.uniform(-0.5, 0.5) * cv.w
        hw = rng.uniform(0.015, 0.06) * cv.w
        top = L.yh - rng.uniform(0.02, 0.24) * cv.h
        box = cv.clip(top - 4, L.yh + 2, cx - hw, cx + hw)
        if box is None:
            continue
        yy, xx = cv.grid(box)
        if rng.random() < 0.75:
            st = _haze(sample_style(rng, "building"), sky, haze)
            mask = np.broadcast_to(yy >= top, (box[1] - box[0], box[3] - box[2]))
            cls = BUILDING
        else:
            st = _haze(sample_style(rng, "vegetation"), sky, haze * 0.7)
            ry = L.yh - top
            d = ((xx - cx) / hw) ** 2 + np.minimum(0, (yy - L.yh) / ry) ** 2 + 0.25 * cv.f.mid[box[0]:box[1], box[2]:box[3]]
            mask = d < 1.0
            cls = VEGETATION
        cv.paint(box, mask, cls, render(st, cv.f, box))


def ground_coords(cv: Canvas, L: Layout) -> tuple[Box, np.ndarray, np.ndarray]:
    """Box of the rows below the horizon, dy (column) and u = dx / dy for each pixel."""
    box = (L.yh + 1, cv.h, 0, cv.w)
    yy, xx = cv.grid(box)
    dy = yy - L.yh
    return box, dy, (xx - L.vx) / dy


def paint_verge(cv: Canvas, L: Layout, box: Box, u: np.ndarray) -> None:
    """Lawn beyond the sidewalks (visible where a side has no facade)."""
    st = sample_style(cv.rng, "vegetation")
    cv.fill(box, (u < L.u_side[0]) | (u > L.u_side[1]), VEGETATION, st)


def paint_facades(cv: Canvas, L: Layout, sky: np.ndarray) -> None:
    """Receding facades / tree walls on both sides, split in segments of different height and style."""
    rng = cv.rng
    for side in (-1, 1):
        q_ground = 1.0 / max(abs(L.u_side[0 if side < 0 else 1]), 1e-3)
        d = L.d_far
        while d < cv.w * 1.6:
            d1 = d * rng.uniform(1.25, 2.0) + 8
            r = rng.random()
            a = rng.uniform(0.2, 1.1)
            xa, xb = (L.vx - d1, L.vx - d) if side < 0 else (L.vx + d, L.vx + d1)
            box = cv.clip(L.yh - a * d1 * 1.15 - 2, L.yh + d1 * q_ground + 2, xa, xb)
            if box is not None and r < 0.88:
                yy, xx = cv.grid(box)
                adx = np.abs(xx - L.vx)
                if r < 0.7:
                    _building(cv, L, box, yy, adx, a, d, d1, q_ground, sky, side)
                else:
                    top = L.yh - a * adx * (1 + 0.12 * cv.f.mid[box[0]:box[1], box[2]:box[3]])
                    cv.fill(box, yy >= top, VEGETATION, sample_style(rng, "vegetation"))
            d = d1


def _building(cv: Canvas, L: Layout, box: Box, yy: np.ndarray, adx: np.ndarray, a: float, d0: float, d1: float,
              q_ground: float, sky: np.ndarray, side: int) -> None:
    rng = cv.rng
    wall = np.broadcast_to(yy >= L.yh - a * adx, (box[1] - box[0], box[3] - box[2]))
    st = sample_style(rng, "building")
    tex = render(st, cv.f, box)
    cv.paint(box, wall, BUILDING, tex)
    p = 1.0 / adx  # depth-like facade coordinate
    q = (yy - L.yh) * p  # height-like facade coordinate (negative = above the horizon)
    # windows: a perspective grid with per-window brightness
    dq = rng.uniform(0.1, 0.22) * max(0.6, (a + q_ground) / 1.5)
    ncol = int(rng.integers(2, 9))
    dp = (1.0 / d0 - 1.0 / d1) / ncol
    fq = (q + a) / dq
    fp = (p - 1.0 / d1) / dp
    wq0, wq1 = rng.uniform(0.15, 0.35), rng.uniform(0.6, 0.85)
    wp0, wp1 = rng.uniform(0.1, 0.3), rng.uniform(0.6, 0.85)
    win = ((fq % 1 > wq0) & (fq % 1 < wq1) & (fp % 1 > wp0) & (fp % 1 < wp1)
           & (fq > 0.6) & (q < q_ground - 0.3 * dq) & wall)
    kind = rng.random()
    base = (sky * 0.8 if kind < 0.35 else rng.uniform(30, 80, 3) if kind < 0.85 else np.array([220, 190, 120]))
    var = rng.uniform(0.7, 1.3, (64, 64)).astype(np.float32)
    vi = var[fq.astype(np.int64) % 64, fp.astype(np.int64) % 64]
    cv.recolor(box, win, vi[..., None] * base.astype(np.float32)[None, None] + 0.5 * tex * (rng.random() < 0.3))
    # ledges: thin slanted lines toward the vanishing point (fence-rail look-alikes)
    if rng.random() < 0.35:
        k = rng.uniform(0, 1)
        for j in range(int(rng.integers(1, 4))):
            qb = -a + (int(rng.integers(1, 8)) + k) * dq
            m = (np.abs(yy - L.yh - qb * adx) < rng.uniform(0.5, 1.1)) & wall
            cv.recolor(box, m, sample_color(rng, "fence"))
    # drainpipe: vertical 1-3 px line at the segment edge (pole look-alike)
    if rng.random() < 0.4:
        xp = (L.vx - d0 - 2 if side < 0 else L.vx + d0 + 1) - box[2]
        wpx = int(rng.integers(1, 4))
        m = np.zeros_like(wall)
        x0 = int(np.clip(xp - wpx // 2, 0, m.shape[1]))
        m[:, x0 : x0 + wpx] = True
        cv.recolor(box, m & wall & (q < q_ground), sample_color(rng, "pole"))
    # posters and shop signs (traffic-sign look-alikes), placed in facade coordinates
    for _ in range(int(rng.integers(0, 4))):
        ad = rng.uniform(d0, d1)
        qy = q_ground - rng.uniform(0.15, 0.6) * dq * 3
        cx, cy = L.vx + side * ad - box[2], L.yh + qy * ad - box[0]
        s = rng.uniform(0.03, 0.14) * ad if rng.random() < 0.5 else rng.uniform(0.06, 0.3) * ad
        s = float(np.clip(s, 3, 60))
        m = np.zeros(wall.shape, np.uint8)
        if rng.random() < 0.4:
            cv2.circle(m, (int(cx), int(cy)), max(1, int(s / 2)), 1, -1)
        else:
            cv2.rectangle(m, (int(cx - s / 2), int(cy - s * rng.uniform(0.2, 0.7))), (int(cx + s / 2), int(cy)), 1, -1)
        t = cv.trim(box, m.astype(bool) & wall)
        if t is not None:
            cv.recolor(t[0], t[1], render(sample_style(rng, "poster"), cv.f, t[0]))


def _sub(arr: np.ndarray, outer: Box, inner: Box) -> np.ndarray:
    """Slice an array defined over ``outer`` down to ``inner``."""
    return arr[inner[0] - outer[0] : inner[1] - outer[0], inner[2] - outer[2] : inner[3] - outer[2]]


def paint_ground(cv: Canvas, L: Layout, gbox: Box, gdy: np.ndarray, gu: np.ndarray, sky: np.ndarray) -> None:
    """Road with markings, puddles and manholes; sidewalks with tiles, curbs, stains and litter."""
    rng = cv.rng
    (ul, ur), (sl, sr) = L.u_road, L.u_side
    dyb = L.dy_max
    t = cv.trim(gbox, (gu >= ul) & (gu <= ur))
    if t is not None:
        box, road = t
        u, dy = _sub(gu, gbox, box), np.broadcast_to(_sub(gdy, gbox, (box[0], box[1], 0, 1)), road.shape)
        rtex = render(sample_style(rng, "road"), cv.f, box)
        cv.paint(box, road, ROAD, rtex)
        fine = cv.f.fine[box[0]:box[1], box[2]:box[3]]
        wear = (1 - 0.25 * np.abs(fine))[..., None]
        white = rng.random() < 0.75
        paint_col = np.float32(rng.uniform(185, 235)) * np.array([1, 1, 1] if white else [1, 0.85, 0.35], np.float32)
        marks = np.zeros(road.shape, bool)
        if rng.random() < 0.8:  # dashed centre line, dash period uniform in depth (1 / dy)
            uc = ul + (ur - ul) * rng.uniform(0.35, 0.65)
            per = dyb * rng.uniform(1.5, 4)
            marks |= (np.abs(u - uc) < rng.uniform(0.006, 0.015)) & ((per / dy + rng.random()) % 1 < 0.45)
        if rng.random() < 0.5:  # solid edge lines
            off = (ur - ul) * rng.uniform(0.02, 0.06)
            wl = rng.uniform(0.005, 0.012)
            marks |= (np.abs(u - ul - off) < wl) | (np.abs(u - ur + off) < wl)
        if rng.random() < 0.3:  # zebra crossing
            dc = dyb * rng.uniform(0.2, 0.7)
            n = int(rng.integers(6, 14))
            marks |= (dy > dc) & (dy < dc * rng.uniform(1.08, 1.2)) & (((u - ul) / (ur - ul) * n) % 1 < 0.5)
        cv.recolor(box, marks & road, wear * paint_col)
        for _ in range(int(rng.integers(0, 5))):  # puddles (sky reflections), manholes, repaired patches
            ub, db = rng.uniform(ul, ur), dyb * rng.uniform(0.1, 1.0)
            rx = db * rng.uniform(0.05, 0.3) * (ur - ul) / 3
            ry = rx * rng.uniform(0.15, 0.4)
            m = np.zeros(road.shape, np.uint8)
            cx, cy = L.x_at(ub, db) - box[2], L.yh + db - box[0]
            cv2.ellipse(m, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))), 0, 0, 360, 1, -1)
            kind = rng.random()
            if kind < 0.4:
                col = sky * np.float32(rng.uniform(0.6, 0.9)) + 12 * cv.f.mid[box[0]:box[1], box[2]:box[3], None]
            else:
                col = np.float32(rng.uniform(0.45, 0.75) if kind < 0.7 else rng.uniform(0.8, 1.25)) * rtex
            cv.recolor(box, m.astype(bool) & road, col)
    for lo, hi, left in ((sl, ul, True), (ur, sr, False)):
        if hi - lo < 1e-6:
            continue
        t = cv.trim(gbox, ((gu >= lo) & (gu < hi)) if left else ((gu > lo) & (gu <= hi)))
        if t is None:
            continue
        box, sw = t
        u, dy = _sub(gu, gbox, box), _sub(gdy, gbox, (box[0], box[1], 0, 1))
        tex = render(sample_style(rng, "sidewalk"), cv.f, box)
        if rng.random() < 0.6:  # tiles in perspective
            n = rng.uniform(4, 14) / (hi - lo)
            per = dyb * rng.uniform(3, 12)
            lines = ((u * n) % 1 < 0.08) | ((per / dy) % 1 < 0.08)
            tex[lines] *= np.float32(rng.uniform(0.78, 0.9))
        curb = np.abs(u - (hi if left else lo)) < (hi - lo) * rng.uniform(0.03, 0.08)
        tex[curb] *= np.float32(rng.choice([0.75, 1.2]))
        cv.paint(box, sw, SIDEWALK, tex)
        for _ in range(int(rng.integers(0, 10))):  # stains and litter
            ub, db = rng.uniform(lo, hi), dyb * rng.uniform(0.05, 1.0)
            cx, cy = L.x_at(ub, db) - box[2], L.yh + db - box[0]
            m = np.zeros(sw.shape, np.uint8)
            if rng.random() < 0.5:
                cv2.circle(m, (int(cx), int(cy)), max(1, int(rng.uniform(1, 3))), 1, -1)
                col = sample_color(rng, "clothes")
            else:
                rx = max(1, int(db * rng.uniform(0.03, 0.12)))
                cv2.ellipse(m, (int(cx), int(cy)), (rx, max(1, rx // 3)), 0, 0, 360, 1, -1)
                col = tex * np.float32(rng.uniform(0.55, 0.8))
            cv.recolor(box, m.astype(bool) & sw, col)


def cast_shadows(cv: Canvas, L: Layout) -> None:
    """Soft building shadows across the ground (multiplicative, image only)."""
    rng = cv.rng
    for _ in range(int(rng.integers(0, 3))):
        pts = np.array([[rng.uniform(-0.2, 1.2) * cv.w, L.yh + rng.uniform(-0.05, 1.0) * L.dy_max] for _ in range(4)])
        pts = cv2.convexHull(pts.astype(np.float32)).astype(np.int32)
        cv2.fillPoly(cv.shade, [pts], float(rng.uniform(0.45, 0.75)))
