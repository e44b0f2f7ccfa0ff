"""End to end in headless Chromium: start the server on loopback, upload an image through the real file input,
visit every page, save screenshots under tests/artifacts/ (not committed)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fapn_core.checkpoints import bundled_models

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = ["Compare", "Offsets (FAM)", "Channels (FSM)", "Boundaries", "Small objects", "Queries (MaskFormer)",
         "Positions (PanopticFCN)", "Points (PointRend)", "Attribution", "Dataset", "Models & speed", "About"]

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (.ci/run installs it)"),
    pytest.mark.skipif(not {"fpn_r18_semfpn", "fapn_r18_semfpn"} <= set(bundled_models()),
                       reason="bundled models missing from assets/models"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit server did not become healthy: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _settle(page, timeout_s: float = 120) -> None:
    """Wait until Streamlit has finished the current run (no 'running' status widget)."""
    page.wait_for_timeout(500)
    end = time.time() + timeout_s
    while time.time() < end:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            page.wait_for_timeout(300)
            if page.locator('[data-testid="stStatusWidget"]').count() == 0:
                return
        page.wait_for_timeout(300)
    raise AssertionError("app still running after the timeout")


def _open(pw, url: str):
    """Headless Debian Chromium on the app's first page, settled."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(url, wait_until="networkidle")
    page.wait_for_selector('[data-testid="stSidebar"]', timeout=60000)
    _settle(page)
    return browser, page


def test_upload_and_visit_every_page(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    image = ROOT / "assets" / "samples" / "synthetic_05.png"
    label = ROOT / "assets" / "samples" / "synthetic_05_label.png"
    with sync_playwright() as pw:
        browser, page = _open(pw, server)
        page.get_by_text("Upload image", exact=True).first.click()
        _settle(page)
        page.locator('[data-testid="stSidebar"] input[type="file"]').first.set_input_files(str(image))
        page.wait_for_selector('[data-testid="stSidebar"] [data-testid="stFileChipName"]', timeout=60000)
        _settle(page)
        # the ground-truth uploader appears below the image uploader
        page.locator('[data-testid="stSidebar"] input[type="file"]').nth(1).set_input_files(str(label))
        page.wait_for_function("document.querySelectorAll('[data-testid=\"stFileChipName\"]').length >= 2",
                               timeout=60000)
        _settle(page)
        for title in PAGES:
            page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
            _settle(page)
            page.wait_for_timeout(1000)  # plotly figures draw after the run ends
            name = title.lower().replace(" ", "_").replace("&", "and").replace("(", "").replace(")", "")
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {title}"
            assert page.locator("h1").first.inner_text().strip(), f"no title on {title}"
            if title in ("Compare", "Boundaries", "Small objects"):  # ground-truth tables are there
                assert page.locator('[data-testid="stDataFrame"]').count() >= 1, f"no table on {title}"
        # the uploaded file is still the selected image after visiting every page
        assert page.locator('[data-testid="stFileChipName"]').first.inner_text().startswith("synthetic_05")
        browser.close()


DETECTOR_PAGES = {"Compare": "Where A and B disagree (objects)", "Small objects": "Objects found and lost",
                  "Boundaries": "Object masks at their boundaries", "Dataset": "Dataset evaluation",
                  "Models & speed": "The RPN and box head work", "Offsets (FAM)": "Does the FAM align?"}


def _select_first_row(page, heading: str) -> None:
    """Click the selection cell of the first row of the table under ``heading`` (a canvas grid)."""
    grid = page.locator('[data-testid="stHeading"]', has_text=heading).locator(
        "xpath=following::*[@data-testid='stDataFrame'][1]")
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # header row 35 px, first data row below it
    _settle(page)
    page.wait_for_timeout(800)


NOTE = "trained on synthetic street scenes only"


def _notes(page) -> list[str]:
    return page.locator('[data-testid="stAlert"]').filter(has_text=NOTE).all_inner_texts()


def test_detection_checkpoints_and_instance_ground_truth_through_the_file_inputs(server, r18_detectors):
    """Mask R-CNN A and B uploaded as checkpoints, an image with its class and instance PNGs; every page. Then a
    photo from the gallery (issue #25): the notice worded for instance models on the pages that interpret it."""
    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    instance_ids = set(np.unique(np.asarray(Image.open(ROOT / "assets" / "samples" / "synthetic_05_instances.png")))
                       .tolist()) - {0}

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    folder = ROOT / "assets" / "samples"
    with sync_playwright() as pw:
        browser, page = _open(pw, server)
        files = page.locator('[data-testid="stSidebar"] input[type="file"]')
        chips = '[data-testid="stSidebar"] [data-testid="stFileChipName"]'
        for k, key in enumerate(("fpn_maskrcnn", "fapn_maskrcnn")):
            page.get_by_text("Upload checkpoint", exact=True).nth(k).click()
            _settle(page)
            files.nth(k).set_input_files(str(r18_detectors[key]))
            page.wait_for_function(f"document.querySelectorAll('{chips}').length >= {k + 1}", timeout=120000)
            _settle(page)
        page.get_by_text("Upload image", exact=True).first.click()
        _settle(page)
        for k, f in enumerate(("synthetic_05.png", "synthetic_05_label.png", "synthetic_05_instances.png"), start=2):
            files.nth(k).set_input_files(str(folder / f))
            page.wait_for_function(f"document.querySelectorAll('{chips}').length >= {k + 1}", timeout=120000)
            _settle(page)
        assert page.locator('[data-testid="stSidebar"] [data-testid="stAlert"]').filter(
            has_text="Model").count() == 0, "a model upload was refused"
        for title in PAGES:
            page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
            _settle(page)
            page.wait_for_timeout(1000)
            name = "det_" + title.lower().replace(" ", "_").replace("&", "and").replace("(", "").replace(")", "")
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {title}"
            if title in DETECTOR_PAGES:
                assert page.get_by_text(DETECTOR_PAGES[title]).count() >= 1, f"{title}: no {DETECTOR_PAGES[title]!r}"
            # ground truth in the models' classes came with the image: no out-of-domain notice anywhere
            assert not _notes(page), f"{title}: notice on a scene with ground truth"
            if title in ("Compare", "Boundaries", "Small objects"):
                assert page.locator('[data-testid="stDataFrame"]').count() >= 1, f"no table on {title}"
            if title == "Compare":  # both drawings, capped and captioned, and the key of the disagreement view
                assert page.get_by_text(re.compile(r"^[AB] · .*: \d+ drawn — ")).count() >= 2
                assert page.get_by_text("object only A finds").count() == 1
            if title in ("Boundaries", "Small objects"):  # select the first object: the zoom with both masks
                _select_first_row(page, "Per object" if title == "Boundaries" else "Objects (")
                zoom = page.locator('[data-testid="stHeading"]', has_text=re.compile(r"^Object \d+: "))
                assert zoom.count() == 1, f"{title}: no zoom on the selected object"
                # one identity: the object is named by its instance id in the uploaded instance PNG
                assert int(re.match(r"Object (\d+):", zoom.inner_text()).group(1)) in instance_ids
                if title == "Boundaries":  # the zoom's band comes from the object's size, and says so
                    assert page.get_by_text(re.compile(r"d = \d+ px is 2 % of this object's box diagonal")).count()
                    assert page.get_by_text(re.compile(r"^A: Boundary IoU at d = \d+ px: ")).count() == 1
                zoom.scroll_into_view_if_needed()
                page.wait_for_timeout(500)
                page.screenshot(path=str(ARTIFACTS / f"{name}_zoom.png"), full_page=True)
        names = page.locator(chips).all_inner_texts()
        # the chips keep both checkpoints and the three image files after every page (names shortened by the UI)
        assert len(names) == 5 and names[0].startswith("fpn") and names[1].startswith("fap"), names
        assert "synthetic_05.png" in names, names
        # the sidebar names each checkpoint in full, with what it is
        sidebar = page.locator('[data-testid="stSidebar"]')
        for f, neck in (("fpn_r18_maskrcnn.safetensors", "FPN"), ("fapn_r18_maskrcnn.safetensors", "FaPN")):
            assert sidebar.get_by_text(re.compile(f"{f} — Mask R-CNN · {neck} neck")).count() >= 1
        # a photo from the gallery: the notice, worded for instance models, on every page that interprets it
        page.locator('[data-testid="stSidebarNav"] a', has_text="Compare").first.click()
        _settle(page)
        page.get_by_text("Sample gallery", exact=True).first.click()
        _settle(page)
        sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Sample").locator("input").first.click()
        page.keyboard.type("astronaut")
        page.keyboard.press("Enter")
        _settle(page)
        for title in ("Compare", "Offsets (FAM)", "Channels (FSM)", "Small objects", "Models & speed"):
            page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
            _settle(page)
            assert page.locator('[data-testid="stException"]').count() == 0, f"exception on {title} (photo)"
            notes = _notes(page)
            assert len(notes) == 1, f"{title}: {notes}"
            assert "A Mask R-CNN finds boxes and masks of its thing classes only" in notes[0]
            assert "mask_rcnn_R_50_FAN_1x" in notes[0] and "every pixel" not in notes[0]
            if title == "Compare":
                assert page.get_by_text(re.compile(r"^[AB] · .*: \d+ drawn — ")).count() >= 2
                page.screenshot(path=str(ARTIFACTS / "det_photo_compare.png"), full_page=True)
        browser.close()


# each new family's own view, and what it shows for that family (issue #29)
FAMILY_VIEWS = {"Positions (PanopticFCN)": "peaks kept by A", "Points (PointRend)": "The chosen objects",
                "Queries (MaskFormer)": "which query owns each pixel"}


def _visit_every_page(page, prefix: str, expect: dict[str, str]) -> None:
    for title in PAGES:
        page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
        _settle(page)
        page.wait_for_timeout(800)
        assert page.locator('[data-testid="stException"]').count() == 0, f"{prefix}: exception on {title}"
        assert page.locator("h1").first.inner_text().strip(), f"{prefix}: no title on {title}"
        if title in expect:
            assert page.get_by_text(expect[title]).count() >= 1, f"{prefix}, {title}: no {expect[title]!r}"
        if title in FAMILY_VIEWS or title == "Models & speed":
            name = prefix + "_" + title.split(" (")[0].lower().replace(" & ", "_and_")
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_new_families_through_the_file_inputs(server, tmp_path_factory):
    """Checkpoints of the three new families uploaded through the real file inputs (issue #29): a PanopticFCN as A
    beside a PointRend instance model as B, every page; then a MaskFormer replaces A, every page again. Each
    family's own view shows it, and hides the other model with its reason."""
    from playwright.sync_api import sync_playwright

    import family_checkpoints

    have = bundled_models()
    if not {"fapn_r18_panoptic", "fpn_r18_maskformer"} <= set(have):
        pytest.skip("bundled Panoptic FPN or MaskFormer pair missing")
    out = tmp_path_factory.mktemp("families")
    panopticfcn = family_checkpoints.panopticfcn(out, "fpn", "fpn")
    pointrend = family_checkpoints.pointrend(out, have["fapn_r18_panoptic"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser, page = _open(pw, server)
        files = page.locator('[data-testid="stSidebar"] input[type="file"]')
        sidebar = page.locator('[data-testid="stSidebar"]')
        for k, path in enumerate((panopticfcn, pointrend)):
            page.get_by_text("Upload checkpoint", exact=True).nth(k).click()
            _settle(page)
            files.nth(k).set_input_files(str(path))
            sidebar.get_by_text(re.compile(re.escape(path.name) + " — ")).first.wait_for(timeout=120000)
            _settle(page)
        assert sidebar.locator('[data-testid="stAlert"]').filter(has_text="Model").count() == 0, "upload refused"
        _visit_every_page(page, "fcn_pointrend", {
            "Positions (PanopticFCN)": "B · fapn_r18_pointrend_rcnn is a", "Points (PointRend)": "A · fpn_r18_panopticfcn "
            "is hidden here", "Compare": "Where A and B disagree (objects)"})
        # a MaskFormer replaces A through the same file input
        maskformer = have["fpn_r18_maskformer"]
        files.nth(0).set_input_files(str(maskformer))
        sidebar.get_by_text(re.compile(re.escape(maskformer.name) + " — ")).first.wait_for(timeout=120000)
        _settle(page)
        _visit_every_page(page, "maskformer_pointrend", {
            "Queries (MaskFormer)": "B · fapn_r18_pointrend_rcnn is a", "Channels (FSM)": "neck has no FAM"})
        browser.close()
