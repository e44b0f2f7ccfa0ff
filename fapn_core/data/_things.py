"""Objects of a synthetic street scene (internal): trees, cars, people, poles with signs and
lamps, fences and overhead wires. Drawn back to front by distance (``dy`` of the ground contact).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from ._canvas import CAR, FENCE, PERSON, POLE, SIGN, VEGETATION, Canvas, Layout
from ._textures import render, sample_color, sample_style

_K5 = np.ones((5, 5), np.uint8)
SMALL_RANGE = (4, 24)  # max bbox side of people and signs, px
THIN_MAX = 4  # max width of poles, fences and wires, px


def _poly(m: np.ndarray, pts: list[tuple[float, float]], val: int = 1) -> None:
    cv2.fillPoly(m, [np.round(np.asarray(pts, np.float64) * 4).astype(np.int32)], val, lineType=cv2.LINE_8, shift=2)


def _rect(m: np.ndarray, x0: float, y0: float, x1: float, y1: float, val: int = 1) -> None:
    _poly(m, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], val)


# --------------------------------------------------------------------------- cars
def draw_car(cv: Canvas, L: Layout, xf: float, yf: float, wc: float) -> None:
    rng = cv.rng
    side = rng.random() < 0.35
    if side:
        wl, hc = wc * rng.uniform(1.8, 2.3), wc * rng.uniform(0.55, 0.7)
    else:
        wl, hc = wc, wc * rng.uniform(0.72, 0.9)
    box = cv.clip(yf - hc, yf + 1, xf - wl / 2, xf + wl / 2)
    if box is None:
        return
    ox, oy = xf - wl / 2 - box[2], yf - hc - box[0]  # local origin of the car frame
    shape = (box[1] - box[0], box[3] - box[2])
    parts = np.zeros(shape, np.uint8)  # 1 body, 2 glass, 3 tyres/bumper, 4 lights, 5 plate

    def P(pts):  # car frame (fractions of wl, hc) -> local pixels
        return [(ox + a * wl, oy + b * hc) for a, b in pts]

    if side:
        flip = rng.random() < 0.5
        fx = (lambda a: 1 - a) if flip else (lambda a: a)
        _poly(parts, P([(fx(0.0), 0.5), (fx(0.05), 0.4), (fx(0.25), 0.35), (fx(0.35), 0.02), (fx(0.72), 0.0),
                        (fx(0.84), 0.38), (fx(1.0), 0.45), (fx(1.0), 0.82), (fx(0.0), 0.82)]), 1)
        _poly(parts, P([(fx(0.37), 0.08), (fx(0.52), 0.07), (fx(0.52), 0.36), (fx(0.3), 0.36)]), 2)
        _poly(parts, P([(fx(0.55), 0.07), (fx(0.7), 0.06), (fx(0.79), 0.36), (fx(0.55), 0.36)]), 2)
        for c in (0.2, 0.8):
            r = 0.19 * hc
            cv2.circle(parts, (int(round(ox + fx(c) * wl)), int(round(oy + 0.8 * hc))), max(1, int(r)), 3, -1)
            cv2.circle(parts, (int(round(ox + fx(c) * wl)), int(round(oy + 0.8 * hc))), max(1, int(r * 0.45)), 5, -1)
    else:
        _poly(parts, P([(0.2, 0.0), (0.8, 0.0), (0.9, 0.4), (1.0, 0.46), (1.0, 0.86), (0.0, 0.86), (0.0, 0.46),
                        (0.1, 0.4)]), 1)
        _poly(parts, P([(0.25, 0.07), (0.75, 0.07), (0.83, 0.36), (0.17, 0.36)]), 2)
        _rect(parts, 0.0, 0.74, 1.0, 0.86, 3)
        _rect(parts, 0.05, 0.8, 0.22, 1.0, 3)
        _rect(parts, 0.78, 0.8, 0.95, 1.0, 3)
        _rect(parts, 0.03, 0.5, 0.17, 0.6, 4)
        _rect(parts, 0.83, 0.5, 0.97, 0.6, 4)
        _rect(parts, 0.4, 0.62, 0.6, 0.71, 5)
    tex = render(sample_style(rng, "car"), cv.f, box)
    glass = rng.uniform(20, 60, 3) if rng.random() < 0.75 else rng.uniform(80, 140) * np.array([0.9, 1.0, 1.15])
    tex[parts == 2] = glass * (1 + 0.1 * cv.f.mid[box[0]:box[1], box[2]:box[3]][parts == 2, None])
    tex[parts == 3] = rng.uniform(15, 40)
    tex[parts == 4] = (rng.uniform(150, 230), rng.uniform(20, 60), rng.uniform(20, 50))
    tex[parts == 5] = rng.uniform(170, 230)
    cv.paint(box, parts > 0, CAR, tex, cv.new_id())


# --------------------------------------------------------------------------- people
def draw_person(cv: Canvas, xf: float, yf: float, h: float) -> None:
    rng = cv.rng
    box = cv.clip(yf - h - 1, yf + 1, xf - 0.4 * h - 1, xf + 0.4 * h + 2)
    if box is None:
        return
    ox, oy = xf - box[2], yf - box[0]  # foot point in local pixels
    m = np.zeros((box[1] - box[0], box[3] - box[2]), np.uint8)  # 1 head, 2 torso, 3 legs, 4 arms/bag
    r = max(0.9, 0.1 * h)
    tw = max(1.0, 0.15 * h) * rng.uniform(0.85, 1.2)
    hip = oy - 0.47 * h
    _poly(m, [(ox - tw, oy - h + 2 * r), (ox + tw, oy - h + 2 * r), (ox + tw * 0.9, hip), (ox - tw * 0.9, hip)], 2)
    spread = rng.uniform(0, 0.22) * h
    lw = max(0.6, 0.07 * h)
    for s in (-1, 1):
        fx = ox + s * spread / 2
        hx = ox + s * tw * 0.45
        _poly(m, [(hx - lw, hip), (hx + lw, hip), (fx + lw, oy), (fx - lw, oy)], 3)
    if h >= 11:
        for s in (-1, 1):
            ax = ox + s * (tw + 0.5)
            swing = rng.uniform(-0.15, 0.15) * h
            cv2.line(m, (int(round(ax)), int(round(oy - h + 2.3 * r))),
                     (int(round(ax + swing * s)), int(round(hip + 0.05 * h))), 4, 1)
    cv2.circle(m, (int(round(ox)), int(round(oy - h + r))), int(round(r)), 1, -1)
    if rng.random() < 0.25 and h >= 10:  # bag
        s = rng.choice([-1, 1])
        _rect(m, ox + s * tw, hip - 0.15 * h, ox + s * (tw + 0.18 * h), hip + 0.05 * h, 4)
    tex = np.zeros(m.shape + (3,), np.float32)
    skin = sample_color(rng, "skin")
    shirt, pants = sample_color(rng, "clothes"), sample_color(rng, "clothes")
    for v, col in ((1, skin), (2, shirt), (3, pants), (4, shirt if rng.random() < 0.6 else sample_color(rng, "clothes"))):
        tex[m == v] = col
    tex += 6 * cv.f.pixel[box[0]:box[1], box[2]:box[3], None]
    iid = cv.new_id()
    cv.drawn[iid] = cv.paint(box, m > 0, PERSON, tex, iid)
    cv.small_boxes[iid] = box


# --------------------------------------------------------------------------- poles, signs, lamps
def draw_sign(cv: Canvas, xc: float, yc: float, s: int) -> None:
    rng = cv.rng
    box = cv.clip(yc - s / 2 - 1, yc + s / 2 + 1, xc - s / 2 - 1, xc + s / 2 + 1)
    if box is None:
        return
    m = np.zeros((box[1] - box[0], box[3] - box[2]), np.uint8)
    cx, cy, r = xc - box[2], yc - box[0], s / 2
    kind = int(rng.integers(0, 6))
    red, white = np.array([215, 25, 30], np.float32), np.array([240, 240, 240], np.float32)
    blue, yellow = np.array([20, 70, 190], np.float32), np.array([245, 205, 20], np.float32)
    dark = np.array([30, 30, 30], np.float32)
    ix, iy = int(round(cx)), int(round(cy))
    if kind in (0, 5):  # round: red ring on white / blue disc with white arrow / (rarely) the grey back side
        cv2.circle(m, (ix, iy), max(1, int(round(r - 0.3))), 1, -1)
        back = kind == 5 and rng.random() < 0.25
        if s >= 7 and not back:
            if kind == 0:
                cv2.circle(m, (ix, iy), max(1, int(round(r * 0.62))), 2, -1)
            else:
                _rect(m, cx - r * 0.15, cy - r * 0.55, cx + r * 0.15, cy + r * 0.55, 2)
        cols = {1: np.float32(rng.uniform(90, 150)) if back else (red if kind == 0 else blue), 2: white}
    elif kind == 1:  # warning triangle
        _poly(m, [(cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8), (cx, cy - r)], 1)
        if s >= 8:
            _poly(m, [(cx - r * 0.5, cy + r * 0.5), (cx + r * 0.5, cy + r * 0.5), (cx, cy - r * 0.3)], 2)
        cols = {1: red, 2: white}
    elif kind == 2:  # yellow diamond with dark centre
        _poly(m, [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], 1)
        if s >= 8:
            _poly(m, [(cx, cy - r * 0.35), (cx + r * 0.35, cy), (cx, cy + r * 0.35), (cx - r * 0.35, cy)], 2)
        cols = {1: yellow, 2: dark}
    else:  # rectangular panel: blue / green / white with a symbol
        hh = r * rng.uniform(0.55, 1.0)
        _rect(m, cx - r, cy - hh, cx + r, cy + hh, 1)
        if s >= 8:
            _rect(m, cx - r * 0.4, cy - hh * 0.5, cx + r * 0.3, cy + hh * 0.5, 2)
        face = [blue, np.array([20, 125, 60], np.float32), white][int(rng.integers(0, 3))]
        cols = {1: face, 2: dark if face is white else white}
    tex = np.zeros(m.shape + (3,), np.float32)
    for v, col in cols.items():
        tex[m == v] = col * np.float32(rng.uniform(0.85, 1.05))
    tex += 4 * cv.f.pixel[box[0]:box[1], box[2]:box[3], None]
    iid = cv.new_id()
    cv.drawn[iid] = cv.paint(box, m > 0, SIGN, tex, iid)
    cv.small_boxes[iid] = box


def draw_pole(cv: Canvas, L: Layout, xf: float, dy: float, sun: tuple[float, float] | None,
              tops: list[tuple[float, float]]) -> None:
    rng = cv.rng
    yf = L.yh + dy
    w = int(np.clip(round(L.k_pole * dy * rng.uniform(0.8, 1.1)), 1, THIN_MAX))
    ytop = max(0.0, L.yh - dy * rng.uniform(0.4, 1.5))
    x0 = int(round(xf - w / 2))
    box = cv.clip(ytop, yf + 1, x0 - 60, x0 + w + 60)
    if box is None:
        return
    m = np.zeros((box[1] - box[0], box[3] - box[2]), np.uint8)
    lx0 = x0 - box[2]
    if not 0 <= lx0 <= m.shape[1] - w:
        return
    m[:, lx0 : lx0 + w] = 1
    if 2 < ytop < L.yh - 12:
        tops.append((xf, ytop + 1))
    if rng.random() < 0.35 and ytop > 2:  # street lamp: horizontal arm (<= 3 px) and a lamp head (<= 4 px)
        t = int(np.clip(w - 1, 1, 3))
        toward = 1 if xf < L.vx else -1
        ln = int(np.clip(dy * rng.uniform(0.1, 0.3), 3, 58))
        a0, a1 = (lx0 + w, lx0 + w + ln) if toward > 0 else (lx0 - ln, lx0)
        a0, a1 = max(0, a0), min(m.shape[1], a1)
        m[0:t, a0:a1] = 1
        hw = int(np.clip(ln * 0.4, 2, 8))
        hh = int(np.clip(t + 1, 2, 4))
        h0, h1 = (a1 - hw, a1) if toward > 0 else (a0, a0 + hw)
        m[0:hh, max(0, h0):max(0, h1)] = 1
    tex = render(sample_style(rng, "pole"), cv.f, box)
    cv.paint(box, m > 0, POLE, tex, cv.new_id())
    if sun is not None and dy > 5:  # thin cast shadow on the ground (stays road / sidewalk)
        ln = dy * rng.uniform(0.3, 0.9)
        p1 = (int(round(xf + sun[0] * ln)), int(round(yf + sun[1] * ln * 0.3)))
        cv2.line(cv.shade, (int(round(xf)), int(round(yf))), p1, float(rng.uniform(0.55, 0.8)), w)
    if rng.random() < 0.55:
        s = int(np.clip(round(L.k_sign * dy * rng.uniform(0.8, 1.2)), SMALL_RANGE[0], 20))
        span = yf - ytop
        yc = ytop + s / 2 + rng.uniform(0, 0.3) * span
        xc = xf + (rng.uniform(-0.5, 0.5) * s if rng.random() < 0.7 else 0)
        draw_sign(cv, xc, yc, s)
        if rng.random() < 0.25 and yc + 1.6 * s < yf - 0.4 * span:
            draw_sign(cv, xc, yc + s * rng.uniform(1.05, 1.3), s)


# --------------------------------------------------------------------------- trees
def draw_tree(cv: Canvas, L: Layout, xf: float, dy: float) -> None:
    rng = cv.rng
    yf = L.yh + dy
    tw = max(2.0, dy * rng.uniform(0.03, 0.07))
    th = dy * rng.uniform(0.4, 1.0)
    rc = dy * rng.uniform(0.35, 0.8)
    rx, ry = rc * rng.uniform(0.8, 1.3), rc * rng.uniform(0.7, 1.05)
    cy = yf - th - ry * 0.6
    box = cv.clip(cy - ry * 1.3, yf + 1, xf - rx * 1.3, xf + rx * 1.3)
    if box is None:
        return
    yy, xx = cv.grid(box)
    sl = (slice(box[0], box[1]), slice(box[2], box[3]))
    d = ((xx - xf) / rx) ** 2 + ((yy - cy) / ry) ** 2 + 0.3 * cv.f.mid[sl] + 0.12 * cv.f.fine[sl]
    crown = d < 1.0
    if rng.random() < 0.5:  # gaps in the foliage
        crown &= cv.f.fine[sl] * 0.6 + cv.f.mid[sl] < 1.6
    trunk = (np.abs(xx - xf) < tw / 2) & (yy > cy) & (yy <= yf)
    tex = render(sample_style(rng, "vegetation"), cv.f, box)
    tex[trunk & ~crown] = sample_color(rng, "building")[None] * 0.6 + 8 * cv.f.pixel[sl][trunk & ~crown][:, None]
    cv.paint(box, crown | trunk, VEGETATION, tex)


# --------------------------------------------------------------------------- fences and wires
def draw_fence(cv: Canvas, L: Layout, u: float, d1: float, d2: float) -> None:
    rng = cv.rng
    rf = rng.uniform(0.1, 0.22)
    P = lambda d, t: (L.x_at(u, d), L.yh + d * (1 - rf * t))
    xs = [P(d1, 0)[0], P(d2, 0)[0]]
    box = cv.clip(L.yh, cv.h, min(xs) - 3, max(xs) + 3)
    if box is None:
        return
    m = np.zeros((box[1] - box[0], box[3] - box[2]), np.uint8)
    o = np.array([box[2], box[0]], np.float64)

    def line(pa, pb, t):
        a, b = np.round(np.asarray(pa) - o).astype(int), np.round(np.asarray(pb) - o).astype(int)
        cv2.line(m, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, t)

    for t in sorted(rng.choice([0.15, 0.5, 0.85, 1.0], int(rng.integers(2, 4)), replace=False)):
        line(P(d1, t), P(d2, t), 1)
    # posts (and pickets / mesh) evenly spaced in depth, i.e. in 1/dy
    step = rng.uniform(0.004, 0.012) * (L.dy_max / 100)
    pick = rng.random()
    inv = 1 / d2
    last_x = None
    while inv < 1 / d1:
        d = 1 / inv
        x, yb = P(d, 0)
        _, yt = P(d, 1)
        if last_x is None or abs(x - last_x) >= 3:
            last_x = x
            line((x, yb), (x, yt), 1)
            if pick >= 0.4 and round(0.015 * d) >= 2:  # thicker posts when near
                line((x + 1, yb), (x + 1, yt), 1)
        inv += step * (0.15 if pick < 0.4 else 1)  # pick < 0.4: picket fence
        if 0.4 <= pick < 0.7 and inv < 1 / d1:  # diagonal mesh towards the next post
            line(P(d, 0.15), P(1 / inv, 0.85), 1)
    opened = cv2.morphologyEx(m, cv2.MORPH_OPEN, _K5, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    m = m.astype(bool) & ~opened.astype(bool)  # safety: nothing thicker than THIN_MAX px
    st = sample_style(rng, "fence")
    cv.paint(box, m, FENCE, render(st, cv.f, box))


def draw_wires(cv: Canvas, L: Layout, anchors: list[tuple[float, float]]) -> None:
    """Overhead cables (1 px, catenaries); between pole tops when possible, else across the image."""
    rng = cv.rng
    m = np.zeros((cv.h, cv.w), np.uint8)
    n = int(rng.integers(0, 4)) if rng.random() < 0.6 else 0
    pairs = [(anchors[i], anchors[i + 1]) for i in range(len(anchors) - 1)] if anchors and rng.random() < 0.5 else []
    for _ in range(n):
        y0, y1 = rng.uniform(0.02, 0.85, 2) * (L.yh - 12)
        pairs.append(((rng.uniform(-0.2, 0.3) * cv.w, y0), (rng.uniform(0.7, 1.2) * cv.w, y1)))
    for (xa, ya), (xb, yb) in pairs:
        sag = rng.uniform(2, 25)
        t = np.linspace(0, 1, 40)
        pts = np.stack([xa + (xb - xa) * t, ya + (yb - ya) * t + sag * 4 * t * (1 - t)], 1)
        pts[:, 1] = np.minimum(pts[:, 1], L.yh - 8)
        cv2.polylines(m, [np.round(pts).astype(np.int32)], False, 1, 1)
    if pairs:
        col = sample_color(cv.rng, "fence") * np.float32(rng.uniform(0.3, 0.7))
        cv.paint((0, cv.h, 0, cv.w), m.astype(bool), FENCE, col)


# --------------------------------------------------------------------------- placement
def place_things(cv: Canvas, L: Layout) -> None:
    rng = cv.rng
    (ul, ur), (sl, sr) = L.u_road, L.u_side
    dyb = L.dy_max
    queue: list[tuple[float, Callable[[], None]]] = []
    sun = (rng.uniform(-1, 1), rng.uniform(0.2, 1)) if rng.random() < 0.5 else None
    # fences (one per side at most), drawn behind everything else
    for side in (0, 1):
        if rng.random() < 0.35:
            edge = (ul - 0.02 * (ul - sl), sl + 0.03) if side == 0 else (ur + 0.02 * (sr - ur), sr - 0.03)
            u = edge[int(rng.integers(0, 2))]
            d1 = dyb * rng.uniform(0.05, 0.4)
            queue.append((-1.0, lambda u=u, d1=d1: draw_fence(cv, L, u, d1, dyb * rng.uniform(0.6, 1.3))))
    # trees at the outer sidewalk edge
    for _ in range(int(rng.integers(0, 6))):
        side = int(rng.integers(0, 2))
        u = (sl + 0.15 * (ul - sl)) if side == 0 else (sr - 0.15 * (sr - ur))
        dy = dyb * rng.uniform(0.1, 1.0)
        queue.append((dy, lambda u=u, dy=dy: draw_tree(cv, L, L.x_at(u, dy), dy)))
    # cars on the road (rear view in lanes, side view when parked near the edge)
    for _ in range(int(rng.integers(1, 8))):
        dy = dyb * rng.uniform(0.12, 1.05)
        wc = L.k_car * dy
        if wc < 24:
            continue
        u = rng.uniform(ul + 0.1 * (ur - ul), ur - 0.1 * (ur - ul))
        queue.append((dy, lambda u=u, dy=dy, wc=wc: draw_car(cv, L, L.x_at(u, dy), L.yh + dy, wc)))
    # people: mostly on the sidewalks, some on the road; sometimes in small groups
    for _ in range(int(rng.integers(3, 16))):
        h = rng.uniform(6, 23)
        dy = h / (L.k_person * rng.uniform(0.9, 1.1))
        if dy > dyb + 2:
            continue
        if rng.random() < 0.8 and sr - sl > ur - ul + 1e-3:
            sides = [(sl, ul)] * (ul - sl > 1e-3) + [(ur, sr)] * (sr - ur > 1e-3)
            lo, hi = sides[int(rng.integers(0, len(sides)))]
        else:
            lo, hi = ul, ur
        u = rng.uniform(lo, hi)
        for k in range(int(rng.integers(2, 4)) if rng.random() < 0.3 else 1):
            hk = float(np.clip(h * rng.uniform(0.85, 1.1), 6, 23))
            x = L.x_at(u, dy) + k * hk * rng.uniform(0.35, 0.7) * rng.choice([-1, 1])
            yk = L.yh + dy + rng.uniform(-1, 1)
            queue.append((dy + 0.01 * k, lambda x=x, yk=yk, hk=hk: draw_person(cv, x, yk, hk)))
    # poles near the curb or the facades, at least 6 px apart
    xs: list[float] = []
    anchors: list[tuple[float, float]] = []
    for _ in range(int(rng.integers(2, 9))):
        side = int(rng.integers(0, 2))
        lo, hi = (sl, ul) if side == 0 else (ur, sr)
        u = (hi - rng.uniform(0.02, 0.15) * (hi - lo)) if side == 0 else (lo + rng.uniform(0.02, 0.15) * (hi - lo))
        if rng.random() < 0.3:
            u = lo + rng.uniform(0.05, 0.9) * (hi - lo)
        dy = dyb * rng.uniform(0.08, 1.0)
        x = L.x_at(u, dy)
        if any(abs(x - o) < 6 + THIN_MAX for o in xs) or not -5 < x < cv.w + 5:
            continue
        xs.append(x)
        queue.append((dy + 0.005, lambda x=x, dy=dy: draw_pole(cv, L, x, dy, sun, anchors)))
    queue.sort(key=lambda t: t[0])
    for _, fn in queue:
        fn()
    draw_wires(cv, L, sorted(anchors)[:4])
