"""Seconds to render every app page for one model pair on one uploaded image (Streamlit AppTest, in process).

python benchmarks/bench_app_pages.py [--pair panoptic|semantic|maskformer] [--size 512x1024] [--threads 2]
python benchmarks/bench_app_pages.py --checkpoints A.safetensors B.safetensors   # e.g. a PanopticFCN or PointRend pair

The first row is the sidebar run that uploads the image: both inferences happen there (one per model, shared by
all pages afterwards). Each page is then rendered cold (its own metrics computed for the first time) and warm
(a rerun: everything cached). The image is a synthetic street scene of the given size with its label and
instance maps uploaded as ground truth. Models & speed counts FLOPs on its first render; Attribution, Dataset
and the latency button only compute when the user asks, so their rows are the page itself.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAIRS = {"semantic": ("fpn_r18_semfpn", "fapn_r18_semfpn"), "panoptic": ("fpn_r18_panoptic", "fapn_r18_panoptic"),
         "maskformer": ("fpn_r18_maskformer", "fapn_r18_maskformer")}
PAGES = ["compare", "offsets", "channels", "boundaries", "small_objects", "queries", "positions", "points",
         "attribution", "dataset", "models", "about"]


def _png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def run(pair: str = "panoptic", size: tuple[int, int] = (512, 1024), threads: int = 2,
        checkpoints: tuple[Path, Path] | None = None) -> list[dict]:
    """Rows of (page, cold seconds, warm seconds); ``checkpoints`` (A, B) are uploaded instead of a bundled pair."""
    import numpy as np
    import torch
    from streamlit.testing.v1 import AppTest

    from fapn_core.data.synthetic import make_sample

    torch.set_num_threads(threads)
    h, w = size
    sample = make_sample(0, seed=11, size=(h, w))
    image, label = sample.image, sample.label.astype(np.uint8)
    inst = sample.instances.astype(np.uint16)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=900).run()
    if checkpoints is None:
        a, b = PAIRS[pair]
        at.selectbox(key="bundled_a").set_value(a).run()
        at.selectbox(key="bundled_b").set_value(b).run()
    else:
        for slot, path in zip("ab", checkpoints):
            at.radio(key=f"src_{slot}").set_value("Upload checkpoint").run()
            at.file_uploader(key=f"upload_{slot}").upload(path.name, path.read_bytes()).run()
            if at.exception:
                raise RuntimeError(f"upload {path}: {at.exception[0].value}")
    at.radio(key="img_src").set_value("Upload image").run()
    rows = []
    for what, key, data in (("image → both inferences, Compare", "img_upload", _png(image)),
                            ("+ label PNG → Compare with GT", "gt_upload", _png(label)),
                            ("+ instance PNG → Compare with objects", "inst_upload", _png(inst))):
        t = time.perf_counter()
        at.file_uploader(key=key).upload(f"{key}.png", data, "image/png").run()
        if at.exception:
            raise RuntimeError(f"{what}: {at.exception[0].value}")
        rows.append({"page": f"upload {what}", "cold_s": time.perf_counter() - t, "warm_s": None})
    caption = next((c.value for c in at.caption if "cached for all pages" in c.value), "")
    rows[0]["note"] = caption
    for page in PAGES:
        t = time.perf_counter()
        at.switch_page(f"../pages/{page}.py").run()
        cold = time.perf_counter() - t
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].value}")
        t = time.perf_counter()
        at.run()
        rows.append({"page": page, "cold_s": cold, "warm_s": time.perf_counter() - t})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=sorted(PAIRS), default="panoptic")
    ap.add_argument("--size", default="512x1024", help="H×W of the uploaded image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoints", nargs=2, type=Path, metavar=("A", "B"),
                    help="upload these two checkpoints instead of a bundled pair")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))
    rows = run(args.pair, (h, w), args.threads, args.checkpoints)
    names = [p.name for p in args.checkpoints] if args.checkpoints else PAIRS[args.pair]
    print(f"\n{' vs '.join(names)}, {w}×{h} image, {args.threads} threads\n")
    print(f"| {'page':<44} | cold (s) | warm (s) |\n|{'-' * 46}|----------|----------|")
    for r in rows:
        warm = "" if r["warm_s"] is None else f"{r['warm_s']:.2f}"
        print(f"| {r['page']:<44} | {r['cold_s']:8.2f} | {warm:>8} |")
    print(f"\ntotal (uploads and first visit to every page): {sum(r['cold_s'] for r in rows):.1f} s")
    print(f"status line: {rows[0].get('note', '')}")


if __name__ == "__main__":
    main()
