"""Many users against one running server: N concurrent headless-Chromium sessions on loopback, each uploading
its own image and ground truth, each checking that the mIoU it is shown is the one of *its* image.

python benchmarks/load_test.py --users 8 --requests 100 [--pair panoptic]

``--pair panoptic`` serves the bundled Panoptic FPN pair as A and B (``FAPN_DEFAULT_A/B``): the mIoU checked is
that of their label maps in the dataset classes (things from the instances, stuff from the semantic head);
``--pair maskformer`` the bundled MaskFormer pair (label maps from its semantic inference).

Prints users, requests, failures, seconds, and the server's RSS (first request, peak, last) — flat memory means
the bounded caches hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


PAIRS = {"semantic": ("fpn_r18_semfpn", "fapn_r18_semfpn"), "panoptic": ("fpn_r18_panoptic", "fapn_r18_panoptic"),
         "maskformer": ("fpn_r18_maskformer", "fapn_r18_maskformer")}


def _labels(model, card, image):
    """The label map the app shows for a model: argmax for a semantic model (a MaskFormer's scores included),
    dataset classes for a Panoptic FPN."""
    out = model.predict(image)
    if card.get("task") != "panoptic":
        return out.argmax(0).numpy()
    from fapn_core.models.rcnn.panoptic import panoptic_to_labels

    return panoptic_to_labels(out.panoptic_seg, out.segments_info, out.sem_seg.argmax(0), card["thing_category_ids"],
                              card["stuff_category_ids"]).numpy()


def expected_mious(names: list[str], pair: str = "semantic") -> dict[str, tuple[str, str]]:
    """mIoU of A and B on each sample, computed with the library alone, formatted as the page shows them."""
    from fapn_core.checkpoints import bundled_models, load_checkpoint
    from fapn_core.io import decode_label, read_image_file
    from fapn_core.metrics import compare

    folder = ROOT / "assets" / "samples"
    models = [load_checkpoint(bundled_models()[n]) for n in PAIRS[pair]]
    out = {}
    for n in names:
        image = read_image_file(folder / f"{n}.png").rgb
        gt = decode_label((folder / f"{n}_label.png").read_bytes())
        pa, pb = (_labels(m, c, image) for m, c in models)
        res = compare(gt, pa, pb, 10, allow_void=pair == "panoptic")
        out[n] = (f"{100 * res.a.miou:.2f} %", f"{100 * res.b.miou:.2f} %")
    return out


async def _settle(page, timeout_s: float = 300) -> None:
    await page.wait_for_timeout(400)
    end = time.time() + timeout_s
    while time.time() < end:
        if await page.locator('[data-testid="stStatusWidget"]').count() == 0:
            await page.wait_for_timeout(250)
            if await page.locator('[data-testid="stStatusWidget"]').count() == 0:
                return
        await page.wait_for_timeout(250)
    raise TimeoutError("page still running")


async def _user(browser, url: str, name: str, want: tuple[str, str], requests: int, stats: dict, pid: int) -> None:
    folder = ROOT / "assets" / "samples"
    ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await ctx.new_page()
    try:
        await page.goto(url, wait_until="networkidle")
        await page.wait_for_selector('[data-testid="stSidebar"]', timeout=120000)
        await _settle(page)
        await page.get_by_text("Upload image", exact=True).first.click()
        await _settle(page)
        files = page.locator('[data-testid="stSidebar"] input[type="file"]')
        await files.first.set_input_files(str(folder / f"{name}.png"))
        await page.wait_for_selector('[data-testid="stFileChipName"]', timeout=120000)
        await _settle(page)
        await files.nth(1).set_input_files(str(folder / f"{name}_label.png"))
        await page.wait_for_function("document.querySelectorAll('[data-testid=\"stFileChipName\"]').length >= 2",
                                     timeout=120000)
        for r in range(requests):
            if r:  # a new request: the user moves the opacity slider (a rerun of the page)
                await page.get_by_role("slider").first.focus()
                await page.keyboard.press("ArrowRight" if r % 2 else "ArrowLeft")
            await _settle(page)
            await page.wait_for_selector('[data-testid="stMetricValue"]', timeout=120000)
            values = await page.locator('[data-testid="stMetricValue"]').all_inner_texts()
            status = await page.get_by_text("cached for all pages").first.inner_text()
            # each (model, image) inference ran once in the server, however many users and reruns
            once = "computed once / once" in status
            ok = tuple(v.strip() for v in values[:2]) == want and once
            stats["requests"] += 1
            stats["rss"].append(rss_mb(pid))
            if not ok:
                stats["failures"] += 1
                stats["errors"].append(f"{name}: shown {values[:2]}, expected {want}; status: {status}")
    except Exception as e:  # noqa: BLE001 - a user that could not finish is a failure, reported
        stats["failures"] += 1
        stats["errors"].append(f"{name}: {type(e).__name__}: {e}"[:300])
    finally:
        await ctx.close()


async def _run(users: int, requests: int, url: str, pid: int, pair: str = "semantic") -> dict:
    from playwright.async_api import async_playwright

    names = [f"synthetic_{i:02d}" for i in range(users)]
    want = expected_mious(names, pair)
    stats: dict = {"requests": 0, "failures": 0, "errors": [], "rss": [rss_mb(pid)]}
    per_user = [requests // users + (1 if i < requests % users else 0) for i in range(users)]
    t0 = time.perf_counter()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        await asyncio.gather(*(_user(browser, url, n, want[n], k, stats, pid) for n, k in zip(names, per_user)))
        await browser.close()
    rss = stats["rss"]
    return {"pair": pair, "users": users, "requests": stats["requests"], "failures": stats["failures"],
            "errors": stats["errors"][:5], "seconds": round(time.perf_counter() - t0, 1),
            "rss_start_mb": round(rss[0]), "rss_after_first_round_mb": round(rss[min(users, len(rss) - 1)]),
            "rss_peak_mb": round(max(rss)), "rss_end_mb": round(rss[-1])}


def run(users: int = 8, requests: int = 100, pair: str = "semantic") -> dict:
    a, b = PAIRS[pair]
    proc, url = start_server({"FAPN_DEFAULT_A": a, "FAPN_DEFAULT_B": b})
    try:
        return asyncio.run(_run(users, requests, url, proc.pid, pair))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--pair", choices=sorted(PAIRS), default="semantic")
    args = ap.parse_args()
    print(run(args.users, args.requests, args.pair))
