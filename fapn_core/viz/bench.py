"""Build time and JSON size of the offset figures at Cityscapes size: ``python -m fapn_core.viz.bench``.

No model runs: a smooth synthetic offset field of FaPN's shape (8 groups × 9 points) is decoded and drawn over
a synthetic 1024×2048 street scene. Sizes are those of ``plotly.io.to_json(fig, validate=False)``, the string
``st.plotly_chart`` sends to the browser.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np


def synthetic_fam(level: str, stride: int, hw: tuple[int, int], seed: int = 0):
    """A FAMCapture with a smooth random field (±1.5 feature px) and random masks."""
    from ..introspect import FAMCapture

    rng = np.random.default_rng(seed)
    h, w = -(-hw[0] // stride), -(-hw[1] // stride)
    coarse = rng.normal(0, 1.5, (8 * 9 * 2, max(2, h // 16), max(2, w // 16))).astype(np.float32)
    off = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse]).reshape(8, 9, 2, h, w)
    mask = 1 / (1 + np.exp(-rng.normal(0, 1, (8, 9, h, w)).astype(np.float32)))
    return FAMCapture(level, stride, off, mask)


def _timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> None:
    import plotly.io as pio

    from ..data.synthetic import make_sample
    from . import DEFAULT_MAX_ARROWS, HAS_NATIVE_QUIVER, offset_magnitude_figure, offset_quiver
    from ._common import to_data_uri

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-arrows", type=int, default=None, help="default: the library default")
    args = ap.parse_args(argv)
    hw = tuple(args.size)
    image = make_sample(0, size=hw).image
    max_arrows = args.max_arrows or DEFAULT_MAX_ARROWS
    print(f"image {hw[0]}×{hw[1]}, max_arrows {max_arrows}, plotly native quiver: {HAS_NATIVE_QUIVER}, "
          f"JPEG background {len(to_data_uri(image)) / 1024:.0f} KiB of each figure's JSON")
    print("| figure | level | arrows | build (ms) | to_json (ms) | JSON (KiB) |")
    print("|---|---|---|---|---|---|")
    for level, stride in (("p2", 4), ("p3", 8), ("p4", 16)):
        fam = synthetic_fam(level, stride, hw)
        variants = [("quiver (native)", dict(native=True))] if HAS_NATIVE_QUIVER else []
        variants.append(("quiver (fallback lines)", dict(native=False)))
        for name, kw in variants:
            t_build, (fig, arrows) = _timed(lambda: offset_quiver(image, fam, max_arrows=max_arrows, **kw), args.repeat)
            t_json, js = _timed(lambda: pio.to_json(fig, validate=False), args.repeat)
            print(f"| {name} | {level} | {len(arrows)} | {1e3 * t_build:.0f} | {1e3 * t_json:.0f} | "
                  f"{len(js) / 1024:.0f} |")
        t_build, fig = _timed(lambda: offset_magnitude_figure(fam, image=image), args.repeat)
        t_json, js = _timed(lambda: pio.to_json(fig, validate=False), args.repeat)
        print(f"| magnitude heatmap | {level} | – | {1e3 * t_build:.0f} | {1e3 * t_json:.0f} | "
              f"{len(js) / 1024:.0f} |")


if __name__ == "__main__":
    main()
