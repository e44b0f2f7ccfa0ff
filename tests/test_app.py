"""Every page renders with AppTest (defaults and an uploaded image + GT) and shows the library's numbers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fapn_core.checkpoints import bundled_models

import apptest_helpers  # tests/ is on sys.path (pytest rootdir conftest)

ROOT = Path(__file__).resolve().parents[1]
PAGES = apptest_helpers.PAGES

pytestmark = pytest.mark.skipif(
    not {"fpn_r18_semfpn", "fapn_r18_semfpn"} <= set(bundled_models()),
    reason="bundled models missing from assets/models (scripts/train_bundled.sh makes them)",
)


_app, _no_errors = apptest_helpers.app, apptest_helpers.no_errors


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_defaults(page):
    at = _app().run()
    at.switch_page(f"../pages/{page}.py").run()
    _no_errors(at)
    assert at.title[0].value  # every page has a title


def test_compare_page_numbers_equal_the_library():
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.io import decode_label, read_image_file
    from fapn_core.metrics import compare

    at = _app().run()
    _no_errors(at)
    # default sample: synthetic_00 with its GT
    folder = ROOT / "assets" / "samples"
    image = read_image_file(folder / "synthetic_00.png").rgb
    gt = decode_label((folder / "synthetic_00_label.png").read_bytes())
    preds = []
    for name in ("fpn_r18_semfpn", "fapn_r18_semfpn"):
        model, _ = load_checkpoint(bundled_models()[name])
        preds.append(model.predict(image).argmax(0).numpy())
    res = compare(gt, preds[0], preds[1], 10)
    table = at.dataframe[0].value
    # a class in neither the GT nor the prediction has no IoU: shown as "—" (issue #25), NaN in the library
    np.testing.assert_allclose(apptest_helpers.numbers(table["IoU A (%)"]), np.round(100 * res.a.iou, 2), atol=0.011,
                               equal_nan=True)
    np.testing.assert_allclose(apptest_helpers.numbers(table["IoU B (%)"]), np.round(100 * res.b.iou, 2), atol=0.011,
                               equal_nan=True)


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _upload_image(at, name: str, data: bytes, gt: bytes | None = None):
    at.radio(key="img_src").set_value("Upload image").run()
    at.file_uploader(key="img_upload").upload(name, data, "image/png").run()
    if gt is not None:
        at.file_uploader(key="gt_upload").upload("gt.png", gt, "image/png").run()
    return at


def _sample_upload() -> tuple[bytes, bytes, np.ndarray]:
    folder = ROOT / "assets" / "samples"
    image = (folder / "synthetic_03.png").read_bytes()
    gt_bytes = (folder / "synthetic_03_label.png").read_bytes()
    gt = np.asarray(Image.open(io.BytesIO(gt_bytes)))
    return image, gt_bytes, gt


@pytest.mark.parametrize("page", PAGES)
def test_pages_render_with_an_uploaded_image_and_gt(page):
    image, gt_bytes, _ = _sample_upload()
    at = _upload_image(_app().run(), "street.png", image, gt_bytes)
    at.switch_page(f"../pages/{page}.py").run()
    _no_errors(at)


def test_uploaded_gt_drives_the_boundary_table():
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.io import decode_image
    from fapn_core.metrics import compare

    image_bytes, gt_bytes, gt = _sample_upload()
    at = _upload_image(_app().run(), "street.png", image_bytes, gt_bytes)
    at.switch_page("../pages/boundaries.py").run()
    _no_errors(at)
    image = decode_image(image_bytes).rgb
    preds = [load_checkpoint(bundled_models()[n])[0].predict(image).argmax(0).numpy()
             for n in ("fpn_r18_semfpn", "fapn_r18_semfpn")]
    res = compare(gt, preds[0], preds[1], 10)
    table = at.dataframe[0].value
    assert apptest_helpers.numbers(table["3px"])[0] == pytest.approx(round(100 * res.a.band.miou[0], 2), abs=0.011)
    assert apptest_helpers.numbers(table["mean"])[1] == pytest.approx(round(100 * res.b.band.mean_miou, 2), abs=0.011)


def _header_only_png(w: int, h: int) -> bytes:
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name,data,message", [
    ("notes.png", b"this is text, not a picture", "not an image"),
    ("cut.jpg", None, "truncated or corrupt"),
    ("bomb.png", _header_only_png(20000, 20000), "MP limit"),
])
def test_bad_image_uploads_show_a_message_and_the_app_keeps_working(name, data, message):
    if data is None:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(buf, "JPEG")
        data = buf.getvalue()[:1500]
    at = _upload_image(_app().run(), name, data)
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    # the same session goes on working with a good image
    at.radio(key="img_src").set_value("Sample gallery").run()
    _no_errors(at)
    assert at.dataframe  # compare page with the sample's GT table


@pytest.mark.parametrize("gt,message", [
    (np.zeros((10, 12), np.uint8), "must match"),
    (np.full((256, 512), 42, np.uint8), "class ids 42 outside 0..9"),
    (np.zeros((256, 512, 3), np.uint8) + np.array([128, 64, 128], np.uint8), "colour image"),
])
def test_bad_ground_truth_is_explained(gt, message):
    image, _, _ = _sample_upload()
    at = _upload_image(_app().run(), "street.png", image, _png_bytes(gt))
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert at.image  # predictions still shown


def test_random_checkpoint_upload_is_refused_clearly():
    at = _app().run()
    at.radio(key="src_a").set_value("Upload checkpoint").run()
    at.file_uploader(key="upload_a").upload("weights.pth", np.random.default_rng(0).bytes(5000)).run()
    assert not at.exception
    assert any("not a readable PyTorch checkpoint" in e.value for e in at.error), [e.value for e in at.error]
    assert any("Choose models A and B" in i.value for i in at.info)


def test_cuda_out_of_memory_falls_back_to_the_cpu(monkeypatch):
    """A CUDA OOM during inference reruns that image on a CPU copy of the same checkpoint."""
    import torch

    from app import cache, context, models

    path = bundled_models()["fapn_r18_semfpn"]
    handle = models.ModelHandle("bundled:x:cuda", "fapn", torch.nn.Linear(1, 1), {"_path": str(path)}, "cuda")
    image = np.zeros((64, 64, 3), np.uint8)
    calls = []

    def fake_predict(key, image_key, amp, h, img):
        calls.append((key, h.device))
        if h.device == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "prediction on " + h.device

    monkeypatch.setattr(cache, "predict_cached", fake_predict)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    ctx = context.Context(handle, handle, {}, image, "x", "k", [], None, None, None, "cuda", True, 1024)
    assert ctx.prediction("a") == "prediction on cpu"
    assert calls == [("bundled:x:cuda", "cuda"), ("bundled:x:cpu", "cpu")]


# ------------------------------------------------------------------------------------ server paths (issue #19)
@pytest.fixture()
def shared_server(monkeypatch):
    """The settings of a shared deployment: ``--server.address 0.0.0.0``, no FAPN_* path settings."""
    from streamlit.testing.v1.util import patch_config_options

    for name in ("FAPN_ALLOW_LOCAL_PATHS", "FAPN_MODEL_ROOTS", "FAPN_DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    with patch_config_options({"server.address": "0.0.0.0"}):
        yield monkeypatch


@pytest.fixture()
def checkpoint_reads(monkeypatch):
    """Every path the app hands to ``load_checkpoint``."""
    from app import models

    paths: list[str] = []
    real = models.load_checkpoint

    def spy(path, *args, **kwargs):
        paths.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(models, "load_checkpoint", spy)
    return paths


def test_shared_server_offers_no_server_paths(shared_server):
    at = _app().run()
    _no_errors(at)
    assert at.radio(key="src_a").options == ["Bundled", "Upload checkpoint"]
    at.switch_page("../pages/dataset.py").run()
    _no_errors(at)
    assert at.selectbox(key="ds_kind").options == ["Synthetic test split (seed 2, held out)"]
    assert any("Server paths: off" in c.value for c in at.caption)
    at.switch_page("../pages/about.py").run()
    _no_errors(at)
    about = " ".join(m.value for m in at.markdown)
    assert "Listening on **0.0.0.0**: a shared server." in about
    assert "Server paths: off" in about and "FAPN_ALLOW_LOCAL_PATHS=1" in about


def test_shared_server_confines_checkpoint_paths(shared_server, tmp_path, checkpoint_reads):
    from app.server_paths import CHECKPOINT_REFUSED

    root, bundled = tmp_path / "models", bundled_models()["fapn_r18_semfpn"]
    root.mkdir()
    (root / "escape.safetensors").symlink_to(bundled)  # a real checkpoint, but outside the root
    shared_server.setenv("FAPN_ALLOW_LOCAL_PATHS", "1")
    shared_server.setenv("FAPN_MODEL_ROOTS", str(root))
    at = _app().run()
    before = list(checkpoint_reads)
    at.radio(key="src_a").set_value("Local path").run()
    for text in (str(bundled), "../../etc/shadow.pth", "/etc/shadow.pth", "escape.safetensors", "~/x.pth",
                 str(root / ".." / "models" / ".." / bundled.name)):
        at.text_input(key="path_a").input(text).run()
        assert not at.exception
        assert [e.value for e in at.sidebar.error] == [f"Model A: {CHECKPOINT_REFUSED}"], text
        # issue #25: the page says it too, as an error where the user looks
        assert [e.value for e in at.main.error] == [f"Model A could not be loaded: {CHECKPOINT_REFUSED}"], text
    assert checkpoint_reads == before  # nothing was loaded
    at.switch_page("../pages/about.py").run()
    assert any(f"checkpoints under `{root}`" in m.value for m in at.markdown)


def test_a_root_of_no_user_is_refused_on_the_about_page(shared_server):
    """``~nosuchuser/models`` in FAPN_MODEL_ROOTS: no page raises; About names the refused root and why."""
    from app.server_paths import CHECKPOINT_REFUSED

    shared_server.setenv("FAPN_ALLOW_LOCAL_PATHS", "1")
    shared_server.setenv("FAPN_MODEL_ROOTS", "~nosuchuser_fapn/models")
    shared_server.setenv("FAPN_DATA_ROOTS", "~nosuchuser_fapn/data")
    at = _app().run()
    _no_errors(at)
    at.radio(key="src_a").set_value("Local path").run()
    at.text_input(key="path_a").input("x.pth").run()
    assert not at.exception
    assert [e.value for e in at.sidebar.error] == [f"Model A: {CHECKPOINT_REFUSED}"]  # no root left to look under
    assert [e.value for e in at.main.error] == [f"Model A could not be loaded: {CHECKPOINT_REFUSED}"]  # issue #25
    at.switch_page("../pages/dataset.py").run()
    assert not at.exception
    at.switch_page("../pages/about.py").run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any("FAPN_MODEL_ROOTS `~nosuchuser_fapn/models`: its `~user` names no user" in w for w in warnings), warnings
    assert any("FAPN_DATA_ROOTS `~nosuchuser_fapn/data`" in w for w in warnings), warnings


def test_checkpoint_under_an_allowed_root_loads(shared_server):
    from app import models

    shared_server.setenv("FAPN_ALLOW_LOCAL_PATHS", "1")
    shared_server.setenv("FAPN_MODEL_ROOTS", str(ROOT / "assets"))
    at = _app().run()
    at.radio(key="src_b").set_value("Local path").run()
    at.text_input(key="path_b").input("models/fapn_r18_semfpn.safetensors").run()  # relative to the root
    _no_errors(at)
    assert at.dataframe  # the Compare page ran with B from the server path
    real = bundled_models()["fapn_r18_semfpn"].resolve()
    assert any(k.startswith(f"local:{real}:") for k in models.MODEL_LOADS), list(models.MODEL_LOADS)


def test_loopback_server_keeps_server_paths_under_the_working_folder(monkeypatch):
    from streamlit.testing.v1.util import patch_config_options

    for name in ("FAPN_ALLOW_LOCAL_PATHS", "FAPN_MODEL_ROOTS", "FAPN_DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT)
    with patch_config_options({"server.address": "127.0.0.1"}):
        at = _app().run()
        assert at.radio(key="src_a").options == ["Bundled", "Upload checkpoint", "Local path"]
        at.radio(key="src_a").set_value("Local path").run()
        at.text_input(key="path_a").input("assets/models/fpn_r18_semfpn.safetensors").run()
        _no_errors(at)
        assert at.dataframe
        at.switch_page("../pages/about.py").run()
        assert any("a private (loopback) server" in m.value for m in at.markdown)
        assert any(f"checkpoints under `{ROOT}`" in m.value for m in at.markdown)


def _folder_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "labels" / "a.png")
    return root


def test_dataset_page_refuses_a_folder_outside_the_roots(shared_server, tmp_path):
    import fapn_core.data

    from app.server_paths import FOLDER_REFUSED

    allowed, outside = tmp_path / "data", _folder_dataset(tmp_path / "outside")
    _folder_dataset(allowed / "inside")
    (allowed / "link").symlink_to(outside)
    opened: list[str] = []

    def spy(spec, *args, **kwargs):
        opened.append(spec)
        raise ValueError(f"spy opened {spec}")

    shared_server.setattr(fapn_core.data, "open_dataset", spy)
    shared_server.setenv("FAPN_ALLOW_LOCAL_PATHS", "1")
    shared_server.setenv("FAPN_DATA_ROOTS", str(allowed))
    at = _app().run()
    at.switch_page("../pages/dataset.py").run()
    at.selectbox(key="ds_kind").set_value("Folder (images/ + labels/)").run()
    for text in (str(outside), "../outside", "link", str(allowed / "inside" / ".." / ".." / "outside"), "~",
                 "/etc"):
        at.text_input(key="ds_root").input(text).run()
        assert not at.exception
        assert [e.value for e in at.error] == [FOLDER_REFUSED], text
        assert not at.button  # no "Run evaluation" for a refused folder
    assert opened == []
    at.text_input(key="ds_root").input("inside").run()
    at.button(key="ds_run").click().run()
    assert opened == [f"folder:{(allowed / 'inside').resolve()}"]  # the resolved folder, and only then read


# ------------------------------------------------------------------------- issue #16: three gaps in the app
SYNTHETIC_NOTE = "trained on synthetic street scenes only"


def _warnings(at) -> list[str]:
    return [w.value for w in at.warning]


def test_synthetic_note_shows_for_an_uploaded_image_and_not_for_a_gallery_sample():
    at = _app().run()
    _no_errors(at)
    assert not any(SYNTHETIC_NOTE in w for w in _warnings(at))  # gallery sample: no note
    image, _, _ = _sample_upload()
    _upload_image(at, "portrait.png", image)
    _no_errors(at)
    notes = [w for w in _warnings(at) if SYNTHETIC_NOTE in w]
    assert len(notes) == 1, _warnings(at)
    assert "A (`fpn_r18_semfpn`) and B (`fapn_r18_semfpn`) were" in notes[0]
    assert "10 classes: road, sidewalk" in notes[0] and "official checkpoint" in notes[0] and "About" in notes[0]
    at.switch_page("../pages/boundaries.py").run()
    # issue #25: the notice is on every page that interprets a result for this image, not only on Compare
    assert [w for w in _warnings(at) if SYNTHETIC_NOTE in w] == notes
    at.switch_page("../pages/compare.py").run()
    at.radio(key="img_src").set_value("Sample gallery").run()
    _no_errors(at)
    assert not any(SYNTHETIC_NOTE in w for w in _warnings(at))


def test_trained_on_synthetic_reads_the_card_before_the_source():
    from types import SimpleNamespace

    from app import ui

    def handle(key, training_data):
        return SimpleNamespace(key=key, card={"training_data": training_data})

    assert ui.trained_on_synthetic(handle("upload:x:cpu", "folder:data/synth_train"))  # a bundled file, uploaded
    assert ui.trained_on_synthetic(handle("local:x:cpu", "synthetic:n=3000,seed=0,size=256x512"))  # panoptic pair
    assert ui.trained_on_synthetic(handle("bundled:x:cpu", None))  # card silent: the Bundled source decides
    assert not ui.trained_on_synthetic(handle("bundled:x:cpu", "Cityscapes (assumed from the 19 classes)"))
    assert not ui.trained_on_synthetic(handle("upload:x:cpu", None))


def _shown_motivation(at) -> dict:
    import json

    charts = [c for c in at.get("plotly_chart") if "motivation" in c.proto.id]
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_about_shows_the_motivation_figure_for_the_current_image():
    from fapn_core.io import decode_image, read_image_file
    from fapn_core.viz import motivation_figure

    at = _app().run()
    at.switch_page("../pages/about.py").run()
    _no_errors(at)
    sample = read_image_file(ROOT / "assets" / "samples" / "synthetic_00.png").rgb
    expected = [a.text for a in motivation_figure(sample).layout.annotations]
    assert [a["text"] for a in _shown_motivation(at)["layout"]["annotations"]] == expected
    at.multiselect(key="about_strides").set_value([16, 2]).run()
    spec = _shown_motivation(at)
    assert [a["text"] for a in spec["layout"]["annotations"]] == [
        a.text for a in motivation_figure(sample, [2, 16]).layout.annotations]
    assert len([d for d in spec["data"] if d["type"] == "heatmap"]) == 2
    image, _, _ = _sample_upload()  # the figure follows the sidebar's image
    at.radio(key="img_src").set_value("Upload image").run()
    at.file_uploader(key="img_upload").upload("street.png", image, "image/png").run()
    _no_errors(at)
    assert [a["text"] for a in _shown_motivation(at)["layout"]["annotations"]] == [
        a.text for a in motivation_figure(decode_image(image).rgb, [2, 16]).layout.annotations]


def test_about_lists_the_official_releases_and_their_commands():
    """All 13 FaPN-full releases (and their plain counterparts) load, each with its convert command; every
    parameter count equals the official manifest of that release (issue #29)."""
    import json

    from fapn_core.models.zoo import list_models

    at = _app().run()
    at.switch_page("../pages/about.py").run()
    _no_errors(at)
    table = next(t.value for t in at.table if "native model" in t.value.columns)
    table = table.apply(lambda col: col.str.strip("`"))  # code spans around names and commands
    expected = {f"{n}_r{d}_{h}" for n in ("fapn", "fpn") for d in (50, 101)
                for h in ("pointrend", "fasterrcnn", "maskrcnn", "panoptic")}
    expected |= {f"{n}_{b}_maskformer" for n in ("fapn", "fpn") for b in ("r50", "r101", "swinl")}
    expected |= {f"{n}_r50_{h}" for n in ("fapn", "fpn") for h in ("pointrend_rcnn", "panopticfcn")}
    assert set(table["native model"]) == expected and expected <= set(list_models())
    assert (table["source"] == "FaPN-full").sum() == 13  # the released checkpoints (R50 MaskFormer: a config only)
    for _, row in table.iterrows():
        assert row["convert"].startswith("fapn convert model_final")
        assert row["convert"].endswith(f" {row['native model']}.safetensors [--config config.yaml]")
        assert row["in the app"].startswith("yes")
        task, dataset = row["task"].split(" · ")
        assert dataset == ("Cityscapes" if row["native model"].endswith("_pointrend") else
                           "ADE20K" if row["native model"].endswith(("r50_maskformer", "swinl_maskformer")) else
                           "COCO-Stuff-10K" if row["native model"].endswith("maskformer") else "COCO"), row
    assert set(table[table["native model"].str.endswith("maskformer")]["in the app"]) == {"yes: label-map views, Queries"}
    notes = " ".join(" ".join(m.value.split()) for m in at.markdown)
    assert "every release in the table loads directly" in notes and "All 13 FaPN-full releases load" in notes
    fixtures = ROOT.parent / "shared" / "fixtures" / "reference"
    for _, row in table.iterrows():  # each count equals the official manifest of that release
        name = row["release (config)"]
        manifest = next((p for p in (fixtures / f"keys_{name}.json", fixtures / "rcnn" / f"keys_{name}.json",
                                     fixtures / "maskformer" / f"keys_{name}.json",
                                     fixtures / "panopticfcn" / f"keys_{name}.json") if p.is_file()), None)
        if manifest is not None:
            assert int(row["parameters"].replace(",", "")) == json.loads(manifest.read_text())["num_params"], name


def test_offsets_page_alignment_numbers_equal_the_library():
    from fapn_core.alignment import align_level
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.introspect import predict_with_captures
    from fapn_core.io import decode_label, read_image_file

    at = _app().run()
    at.switch_page("../pages/offsets.py").run()
    _no_errors(at)
    at.select_slider(key="off_radius").set_value(2).run()
    _no_errors(at)
    folder = ROOT / "assets" / "samples"
    image = read_image_file(folder / "synthetic_00.png").rgb
    gt = decode_label((folder / "synthetic_00_label.png").read_bytes())
    model, _ = load_checkpoint(bundled_models()["fapn_r18_semfpn"])
    fam = predict_with_captures(model, image).captures.fam["p2"]
    ref = align_level(fam, gt=gt, radius=2)
    assert any(ref.verdict()[:40] in i.value for i in at.info), [i.value for i in at.info]
    shown = {m.label: m.value for m in at.metric}
    assert shown["confident cells"] == f"{ref.displacement.confident_share:.0%}"  # of measurable cells
    deltas = {m.label: m.delta for m in at.metric}
    assert deltas["confident cells"] == f"null {ref.displacement.null_share:.0%}"  # beside unrelated features' share
    assert shown["endpoint error (feature px)"] == f"{ref.overall['epe']:.2f}"  # the unit named (issue #25)
    table = at.dataframe[-1].value
    assert list(table["where"])[:3] == ["all confident", "within 8 image px of a GT boundary", "away from boundaries"]


@pytest.fixture(scope="module")
def tiny_panoptic(tmp_path_factory):
    """A Panoptic FPN trained 2 steps on the synthetic classes (its card maps ROI classes and semantic channels to
    the dataset's ids, as the bundled pair's does)."""
    from fapn_core.train import TrainConfig, train

    out = tmp_path_factory.mktemp("pan")
    cfg = TrainConfig(model="fapn_r18_panoptic", data="synthetic:n=4,seed=3,size=64x128", out_dir=str(out), steps=2,
                      batch_size=2, crop=(64, 96), warmup=1, workers=0, threads=1, half=False,
                      model_overrides={"neck_channels": 16, "head_conv_dims": 32, "box_fc_dim": 32,
                                       "mask_conv_dims": 16, "stem_out_channels": 16,
                                       "panoptic_instances_score_thresh": 0.0})
    return train(cfg, progress=False)


def test_panoptic_model_as_a_every_page_and_labels_equal_the_library(tiny_panoptic):
    import torch

    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.io import read_image_file
    from fapn_core.models.rcnn.panoptic import panoptic_to_labels

    at = _app().run()
    at.radio(key="src_a").set_value("Upload checkpoint").run()
    at.file_uploader(key="upload_a").upload("pan.safetensors", tiny_panoptic.read_bytes()).run()
    _no_errors(at)
    assert any("Instances and panoptic segments" in h.value for h in at.subheader)
    apptest_helpers.visit_every_page(at)
    at.switch_page("../pages/attribution.py").run()
    assert any("Panoptic FPN" in i.value for i in at.info)
    # the labels the semantic views use are the library's panoptic → dataset-class conversion
    from app import cache, models

    model, card = load_checkpoint(tiny_panoptic)
    image = read_image_file(ROOT / "assets" / "samples" / "synthetic_00.png").rgb
    det = model.predict(image)
    ref = panoptic_to_labels(det.panoptic_seg, det.segments_info, det.sem_seg.argmax(0), card["thing_category_ids"],
                             card["stuff_category_ids"])
    handle = models.ModelHandle("test:pan", "pan", model, card, "cpu")
    pred = cache.predict_cached(handle.key, "synthetic_00", False, handle, image)
    assert torch.equal(torch.from_numpy(pred.labels.astype("int64")), ref)
    assert handle.num_classes == 10 and handle.semantic[0][5] == "pole"
