"""Many users: N concurrent AppTest sessions in threads against one process (shared caches and models),
each with its own uploaded image, checking that every session gets its own correct result.

python benchmarks/load_test.py --users 8 --requests 100

Prints users, requests, failures, models loaded, inference runs and peak/steady RSS.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(users: int, requests: int, *, page: str = "compare", verbose: bool = True) -> dict:
    import numpy as np
    from streamlit.testing.v1 import AppTest

    from app import state
    from fapn_core.checkpoints import bundled_models, load_checkpoint
    from fapn_core.io import decode_image, decode_label
    from fapn_core.metrics import compare

    folder = ROOT / "assets" / "samples"
    names = [f"synthetic_{i:02d}" for i in range(users)]
    images = {n: (folder / f"{n}.png").read_bytes() for n in names}
    gts = {n: (folder / f"{n}_label.png").read_bytes() for n in names}
    # expected per-class IoU of A for each user's image, computed independently of the app
    refs = {k: load_checkpoint(p)[0] for k, p in bundled_models().items() if k in (state.DEFAULT_A, state.DEFAULT_B)}
    expected = {}
    for n in names:
        img = decode_image(images[n]).rgb
        gt = decode_label(gts[n])
        pa = refs[state.DEFAULT_A].predict(img).argmax(0).numpy()
        pb = refs[state.DEFAULT_B].predict(img).argmax(0).numpy()
        expected[n] = np.round(100 * compare(gt, pa, pb, 10).a.iou, 2)
    del refs
    from app.state import _COMPUTED

    computed_before = dict(_COMPUTED)
    lock = threading.Lock()
    stats = {"requests": 0, "failures": 0, "errors": [], "rss": []}

    def user(i: int) -> None:
        n = names[i % len(names)]
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600).run()
        at.radio(key="img_src").set_value("Upload image").run()
        at.file_uploader(key="img_upload").upload(f"{n}.png", images[n], "image/png").run()
        at.file_uploader(key="gt_upload").upload("gt.png", gts[n], "image/png").run()
        per_user = requests // users + (1 if i < requests % users else 0)
        for r in range(per_user):
            try:
                at.run() if r else None
                if at.exception:
                    raise RuntimeError(at.exception[0].value)
                table = at.dataframe[0].value
                got = table["IoU A (%)"].to_numpy(dtype=float)
                if not np.allclose(got, expected[n], atol=0.011, equal_nan=True):
                    raise AssertionError(f"user {i} ({n}) got another image's result")
                ok = True
            except Exception as e:  # noqa: BLE001 - counted and reported
                ok = False
                with lock:
                    stats["errors"].append(f"user {i}: {e}")
            with lock:
                stats["requests"] += 1
                stats["failures"] += 0 if ok else 1
                stats["rss"].append(rss_mb())
                if verbose and stats["requests"] % 10 == 0:
                    print(f"  {stats['requests']} requests, RSS {stats['rss'][-1]:.0f} MB", flush=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    rss = stats["rss"]
    new_runs = {k: v - computed_before.get(k, 0) for k, v in _COMPUTED.items() if v > computed_before.get(k, 0)}
    tail = rss[len(rss) // 2:]
    return {
        "users": users, "requests": stats["requests"], "failures": stats["failures"],
        "errors": stats["errors"][:5], "seconds": round(time.perf_counter() - t0, 1),
        "inference_runs": sum(new_runs.values()), "distinct_inferences": len(new_runs),
        "max_runs_per_inference": max(new_runs.values(), default=0),
        "model_loads": dict(state.MODEL_LOADS),
        "peak_rss_mb": round(max(rss), 0), "rss_first_half_max_mb": round(max(rss[: len(rss) // 2] or [0]), 0),
        "rss_second_half_max_mb": round(max(tail or [0]), 0),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()
    print(run(args.users, args.requests))
