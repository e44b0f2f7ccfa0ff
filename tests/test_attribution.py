"""fapn_core.attribution: completeness of IG, GradCAM/occlusion against hand computations, targets, progress,
deadline and cancellation, on tiny FPN and FaPN models (CPU, small images)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fapn_core.attribution import (
    LEVELS,
    METHODS,
    AttributionCancelled,
    AttributionTimeout,
    Target,
    attribute,
    gaussian_blur,
    level_module,
    normalize_map,
)
from fapn_core.models.zoo import build_model

H, W = 40, 56  # not a multiple of 32: exercises padding and cropping
NUM_CLASSES = 4


def _tiny(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=NUM_CLASSES, neck_channels=32, head_conv_dims=64, **kw).eval()


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {"fpn": _tiny("fpn_r18_semfpn"), "fapn": _tiny("fapn_r18_semfpn")}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.RandomState(0)
    img = rng.rand(H, W, 3) * 200
    img[10:30, 15:40] += 50  # some structure
    return img.astype(np.uint8)


def _logits(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(next(model.parameters()).dtype)
    with torch.no_grad():
        return model(x)[0]


class SmoothSeg(nn.Module):
    """A smooth (tanh) fully convolutional segmenter: Gauss–Legendre IG converges fast on it."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.tanh(self.c1(x / 64.0 - 2.0))) * 2.0


# --- Integrated Gradients: completeness ----------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["black", "blur", (255, 128, 0)])
def test_ig_completeness_smooth_model_float64(image, baseline):
    model = SmoothSeg().double()
    target = Target(2, box=(5, 8, 25, 30))
    r = attribute(model, image, target, n_steps=32, internal_batch_size=8, baseline=baseline)
    logits = _logits(model, image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    if baseline == "black":
        b = torch.zeros_like(x)
    elif baseline == "blur":
        b = gaussian_blur(x, 10.0)
    else:
        b = torch.tensor(baseline, dtype=torch.float64).view(1, 3, 1, 1).expand_as(x)
    with torch.no_grad():
        base_logits = model(b)[0]
    f_x = float(logits[2, 5:25, 8:30].mean())
    f_b = float(base_logits[2, 5:25, 8:30].mean())
    assert r.extra["score"] == pytest.approx(f_x, abs=1e-12)
    assert r.extra["baseline_score"] == pytest.approx(f_b, abs=1e-12)
    assert abs(f_x - f_b) > 0.01  # a non-trivial difference to explain
    total = float(np.sum(r.map, dtype=np.float64))  # map is float32: sum to ~1e-6
    assert total == pytest.approx(f_x - f_b, abs=1e-5)
    assert r.delta == pytest.approx(r.extra["attribution_sum"] - (f_x - f_b), abs=1e-12)
    assert abs(r.delta) < 1e-8


@pytest.mark.parametrize("name", ["fpn_r18_semfpn", "fapn_r18_semfpn"])
def test_ig_completeness_tiny_segmentors(name, image):
    # ReLU networks have discontinuous gradients along the path, so the quadrature error shrinks slowly and
    # erratically with n_steps; GroupNorm on a near-constant baseline makes the path steep (head_norm="" here).
    model = _tiny(name, head_norm="")
    img = image[:32, :32]
    target = Target(1, box=(4, 4, 20, 24))
    rel = {}
    for n in (16, 256):
        r = attribute(model, img, target, n_steps=n, internal_batch_size=128, baseline="blur")
        diff = r.extra["score"] - r.extra["baseline_score"]
        assert abs(diff) > 0.5
        assert r.delta == pytest.approx(float(np.sum(r.map, dtype=np.float64)) - diff, abs=1e-4)
        rel[n] = abs(r.delta) / abs(diff)
    assert rel[256] < 2e-3
    assert rel[256] < rel[16]


# --- all methods, both models --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fpn", "fapn"])
@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_finite(models, image, kind, method):
    r = attribute(models[kind], image, Target(1, box=(8, 10, 30, 40)), method, n_steps=4, window=16, stride=8)
    assert r.map.shape == (H, W) and r.map.dtype == np.float32
    assert np.isfinite(r.map).all()
    assert np.abs(r.map).max() > 0
    assert r.method == method and r.seconds > 0
    assert r.extra["region_pixels"] == 22 * 30 and r.extra["reduction"] == "mean"
    if method == "gradcam":
        assert (r.map >= 0).all()
    assert not models[kind].training


def _hand_gradcam(model: nn.Module, module: nn.Module, x: torch.Tensor) -> np.ndarray:
    """GradCAM written out for class 3 over the box (0, 0, 20, 20): ReLU(Σ_c mean(∂score/∂A_c) · A_c) of
    ``module``'s output, upsampled to the padded 64×64 input and cropped to H×W."""
    feats = {}
    handle = module.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    try:
        score = model(x)[0, 3, :20, :20].mean()
    finally:
        handle.remove()
    (g,) = torch.autograd.grad(score, feats["a"])
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * feats["a"]).sum(1, keepdim=True))
    return F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[0, 0, :H, :W].detach().numpy()


@pytest.mark.parametrize("kind", ["fpn", "fapn"])
def test_gradcam_every_level_matches_hand_computation(models, image, kind):
    model = models[kind]
    expected_layers = {"p2": "neck.output2", "p3": "neck.output3", "p4": "neck.output4",
                       "p5": "neck.output5" if kind == "fpn" else "neck.lateral5"}
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    for level in LEVELS:
        name, module = level_module(model, level)
        assert name == expected_layers[level]
        r = attribute(model, image, Target(3, box=(0, 0, 20, 20)), "gradcam", level=level)
        assert r.map.shape == (H, W) and np.isfinite(r.map).all() and (r.map >= 0).all()
        stride = 2 ** int(level[1])
        assert r.extra["feature_size"] == (64 // stride, 64 // stride)  # padded 40x56 -> 64x64
        cam = _hand_gradcam(model, module, x)
        np.testing.assert_allclose(r.map, cam, rtol=1e-4, atol=1e-6 * float(np.abs(cam).max()))


def test_gradcam_dotted_module_and_bad_level(models, image):
    r = attribute(models["fapn"], image, Target(0), "gradcam", level="neck.align3")
    assert r.map.shape == (H, W) and r.extra["layer"] == "neck.align3"
    with pytest.raises(ValueError, match="unknown level"):
        attribute(models["fpn"], image, Target(0), "gradcam", level="p7")


@pytest.mark.parametrize("kind", ["fpn", "fapn"])
def test_occlusion_matches_brute_force(models, image, kind):
    # window == stride == half the image: four disjoint windows, each pixel covered once.
    model = models[kind]
    img = image[:32, :48]
    target = Target(2, box=(4, 4, 28, 40))
    r = attribute(model, img, target, "occlusion", window=16, stride=16, baseline=(10, 20, 30))
    assert r.extra["n_windows"] == 2 * 3
    base = float(_logits(model, img)[2, 4:28, 4:40].mean())
    for y0 in (0, 16):
        for x0 in (0, 16, 32):
            occ = img.copy()
            occ[y0:y0 + 16, x0:x0 + 16] = (10, 20, 30)
            expected = base - float(_logits(model, occ)[2, 4:28, 4:40].mean())
            np.testing.assert_allclose(r.map[y0:y0 + 16, x0:x0 + 16], expected, atol=1e-5)


def test_occlusion_window_clipped_to_image(models, image):
    r = attribute(models["fpn"], image[:20, :24], Target(0), "occlusion", window=32, stride=16)
    assert r.extra["window"] == (20, 24) and r.extra["n_windows"] == 1 and r.map.shape == (20, 24)


# --- targets -------------------------------------------------------------------------------------------------


def test_pixel_box_mask_targets_agree(models, image):
    model = models["fapn"]
    kw = dict(n_steps=4, internal_batch_size=4)
    box = (12, 20, 30, 41)
    mask = np.zeros((H, W), bool)
    mask[12:30, 20:41] = True
    r_box = attribute(model, image, Target(1, box=box), **kw)
    r_mask = attribute(model, image, Target(1, mask=mask), **kw)
    np.testing.assert_allclose(r_mask.map, r_box.map, rtol=1e-5, atol=1e-7)
    assert r_mask.extra["score"] == pytest.approx(r_box.extra["score"], abs=1e-6)
    logits = _logits(model, image)
    assert r_box.extra["score"] == pytest.approx(float(logits[1, 12:30, 20:41].mean()), abs=1e-5)

    # pixel == 1x1 box == single-pixel mask; a 2-pixel box is the mean of its pixels (IG is linear in F).
    one = np.zeros((H, W), np.uint8)
    one[7, 9] = 1
    maps = [attribute(model, image, t, **kw).map
            for t in (Target(1, pixel=(7, 9)), Target(1, box=(7, 9, 8, 10)), Target(1, mask=one))]
    np.testing.assert_allclose(maps[1], maps[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[2], maps[0], rtol=1e-5, atol=1e-7)
    m2 = attribute(model, image, Target(1, pixel=(7, 10)), **kw).map
    pair = attribute(model, image, Target(1, box=(7, 9, 8, 11)), **kw).map
    np.testing.assert_allclose(pair, (maps[0] + m2) / 2, atol=1e-5 * np.abs(pair).max())

    # occlusion and gradcam scores agree with the logits for every target kind
    for t, region in ((Target(2, pixel=(3, 50)), (slice(3, 4), slice(50, 51))),
                      (Target(2, mask=mask), (slice(12, 30), slice(20, 41))),
                      (Target(2), (slice(None), slice(None)))):
        expected = float(logits[2][region].mean())
        for method in ("gradcam", "occlusion"):
            r = attribute(model, image, t, method, level="p3", window=40, stride=40)
            assert r.extra["region_pixels"] == logits[2][region].numel()
            assert r.extra["score"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "target, match",
    [
        (Target(NUM_CLASSES, pixel=(0, 0)), "class_id 4 out of range"),
        (Target(-1, pixel=(0, 0)), "out of range"),
        (Target(1.5, pixel=(0, 0)), "class_id must be an integer"),
        (Target(0, pixel=(H, 0)), "outside"),
        (Target(0, pixel=(0, -1)), "outside"),
        (Target(0, box=(5, 5, 5, 9)), "empty box"),
        (Target(0, box=(5, 9, 8, 3)), "empty box"),
        (Target(0, box=(-1, 0, 5, 5)), "not inside"),
        (Target(0, box=(0, 0, H + 1, 5)), "not inside"),
        (Target(0, box=(0, 0, 5)), "4 integers"),
        (Target(0, mask=np.zeros((H, W), bool)), "empty mask"),
        (Target(0, mask=np.ones((W, H), bool)), "shape"),
        (Target(0, mask=np.ones((H, W), np.float32)), "boolean"),
        (Target(0, pixel=(1, 1), box=(0, 0, 2, 2)), "at most one"),
    ],
)
def test_bad_targets(models, image, target, match):
    with pytest.raises(ValueError, match=match):
        attribute(models["fpn"], image, target, "gradcam")


def test_bad_options(models, image):
    with pytest.raises(ValueError, match="unknown method"):
        attribute(models["fpn"], image, Target(0), "saliency")
    with pytest.raises(ValueError, match="n_steps"):
        attribute(models["fpn"], image, Target(0), n_steps=0)
    with pytest.raises(ValueError, match="stride"):
        attribute(models["fpn"], image, Target(0), "occlusion", stride=2.5)
    with pytest.raises(ValueError, match="unknown baseline"):
        attribute(models["fpn"], image, Target(0), baseline="white")
    with pytest.raises(ValueError, match="H×W×3"):
        attribute(models["fpn"], image[..., 0], Target(0))


# --- progress, deadline, cancel ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_progress_increasing_to_one(models, image, method):
    seen: list[float] = []
    attribute(models["fapn"], image, Target(1, pixel=(5, 5)), method, n_steps=8, internal_batch_size=2,
              window=16, stride=8, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert all(b > a for a, b in zip(seen, seen[1:]))
    assert all(0.0 <= f <= 1.0 for f in seen)
    if method != "gradcam":
        assert len(seen) >= 5  # one report per forward batch


def test_deadline_raises_and_restores_model(image):
    model = _tiny("fapn_r18_semfpn").train()
    t0 = time.perf_counter()
    with pytest.raises(AttributionTimeout, match="deadline of 0.05 s"):
        attribute(model, image, Target(1), n_steps=64, internal_batch_size=64, deadline_s=0.05)
    assert time.perf_counter() - t0 < 5.0
    assert model.training  # mode restored
    assert all(not m._forward_pre_hooks for m in model.modules())  # hooks removed
    with pytest.raises(AttributionTimeout):
        attribute(model, image, Target(1), "gradcam", deadline_s=0.0)


def test_cancel_checked_during_backward(models, image):
    calls: list[bool] = []
    seen: list[float] = []

    def cancel() -> bool:  # True only where grad mode is off: inside the first backward pass of IG
        calls.append(torch.is_grad_enabled())
        return not calls[-1]

    with pytest.raises(AttributionCancelled, match="0% done"):
        attribute(models["fapn"], image, Target(1), n_steps=8, internal_batch_size=8, cancel=cancel,
                  progress=seen.append)
    assert sum(calls) > 50 and calls[-1] is False  # forward checks per module, then one in backward
    assert seen == [0.0]


def test_cancel_event_only_stops_the_calling_thread(models, image):
    model = models["fpn"]
    stop = threading.Event()
    other: dict[str, object] = {}

    def on_progress(fraction: float) -> None:
        stop.set()

        def run_elsewhere() -> None:  # another thread's forward is not interrupted by our hooks
            try:
                other["out"] = _logits(model, image)
            except Exception as exc:  # noqa: BLE001
                other["out"] = exc

        t = threading.Thread(target=run_elsewhere)
        t.start()
        t.join()

    with pytest.raises(AttributionCancelled):
        attribute(model, image, Target(0), "occlusion", window=16, stride=8, progress=on_progress, cancel=stop)
    assert isinstance(other["out"], torch.Tensor)
    with pytest.raises(AttributionCancelled):
        attribute(model, image, Target(0), cancel=lambda: True)


# --- display ---------------------------------------------------------------------------------------------------


def test_normalize_map():
    m = np.linspace(-1, 1, 1000).reshape(20, 50)
    m[0, 0] = -100.0  # outlier: saturates instead of squashing the rest
    s = normalize_map(m, signed=True)
    assert s.dtype == np.float32 and s.min() == -1.0 and s.max() <= 1.0
    assert s[-1, -1] > 0.9
    u = normalize_map(m, signed=False)
    assert u.min() >= 0.0 and u.max() == 1.0
    np.testing.assert_allclose(u, np.abs(s), atol=1e-6)
    auto = normalize_map(np.abs(m))
    assert auto.min() >= 0.0
    assert (normalize_map(np.zeros((3, 3))) == 0).all()
    assert np.isfinite(normalize_map(np.array([[np.nan, 1.0], [np.inf, -2.0]]))).all()


def test_mean_baseline_is_the_models_rgb_pixel_mean(image):
    from fapn_core.models.zoo import IMAGENET_RGB_MEAN, MSRA_BGR_MEAN

    rgb = _tiny("fpn_r18_semfpn")
    bgr = _tiny("fpn_r18_semfpn", input_format="BGR", pixel_mean=MSRA_BGR_MEAN, pixel_std=(1.0, 1.0, 1.0))
    for model, colour in ((rgb, IMAGENET_RGB_MEAN), (bgr, MSRA_BGR_MEAN[::-1])):
        a = attribute(model, image, Target(0), n_steps=2, baseline="mean")
        b = attribute(model, image, Target(0), n_steps=2, baseline=tuple(colour))
        np.testing.assert_array_equal(a.map, b.map)
        assert a.extra["baseline_score"] == b.extra["baseline_score"]


def test_runs_under_inference_mode(models, image):
    with torch.inference_mode():
        r = attribute(models["fapn"], image, Target(1, pixel=(3, 3)), n_steps=2)
    assert np.isfinite(r.map).all() and np.abs(r.map).max() > 0


def test_gradcam_on_a_maskformer_pixel_decoder_matches_hand_computation(image):
    """MaskFormer's decoder levels are its ``layer_N`` outputs (p{N+1}); GradCAM on them is defined (issue #29:
    Attribution for MaskFormer) and equals the hand computation on its ``sem_seg`` scores."""
    torch.manual_seed(0)
    model = build_model("fapn_r18_maskformer", num_classes=5, num_queries=10).eval()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    for level, layer in zip(LEVELS, ("layer_1", "layer_2", "layer_3", "layer_4")):
        name, module = level_module(model, level)
        assert name == f"neck.{layer}"
    name, module = level_module(model, "p2")
    r = attribute(model, image, Target(3, box=(0, 0, 20, 20)), "gradcam", level="p2")
    cam = _hand_gradcam(model, module, x)
    np.testing.assert_allclose(r.map, cam, rtol=1e-4, atol=1e-6 * float(np.abs(cam).max()))
