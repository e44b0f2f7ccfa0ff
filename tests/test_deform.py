"""Modulated deformable conv: the official offset layout, and the fast path against torchvision's op."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fapn_core.models import dcn_ext
from fapn_core.models.deform import ModulatedDeformConv, dcn_impl, modulated_deform_conv2d, resolve_impl

CPP_MISSING = dcn_ext.load() is None
needs_cpp = pytest.mark.skipif(CPP_MISSING, reason=f"compiled DCN not built here ({dcn_ext.status()}); "
                                                   "scripts/env.sh builds it with `fapn build-ext`")
IMPLS = ["reference", "fast", pytest.param("cpp", marks=needs_cpp)]


def _numpy_dcn(x, offset, mask, weight, bias):
    """Loop reference written from the fixture README: sample (y-1+i+dy, x-1+j+dx), zero outside, × mask."""
    n, c, h, w = x.shape
    cout, _, kh, kw = weight.shape
    groups = mask.shape[1] // (kh * kw)
    cg = c // groups

    def sample(img, py, px):
        if py <= -1 or py >= h or px <= -1 or px >= w:
            return 0.0
        y0, x0 = int(np.floor(py)), int(np.floor(px))
        val = 0.0
        for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
            for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                if 0 <= yy < h and 0 <= xx < w:
                    val += wy * wx * img[yy, xx]
        return val

    out = np.zeros((n, cout, h, w))
    for b in range(n):
        for y in range(h):
            for xo in range(w):
                cols = np.zeros((c, kh * kw))
                for ci in range(c):
                    g = ci // cg
                    for k in range(kh * kw):
                        i, j = divmod(k, kw)
                        dy = offset[b, 2 * (g * kh * kw + k), y, xo]
                        dx = offset[b, 2 * (g * kh * kw + k) + 1, y, xo]
                        m = mask[b, g * kh * kw + k, y, xo]
                        cols[ci, k] = m * sample(x[b, ci], y - 1 + i + dy, xo - 1 + j + dx)
                out[b, :, y, xo] = weight.reshape(cout, -1) @ cols.reshape(-1) + bias
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_loop_reference_from_readme_layout(impl):
    # float64 for the PyTorch paths (exact to 1e-9); the compiled path is float32-only
    dtype, tol = (torch.float32, 1e-5) if impl == "cpp" else (torch.float64, 1e-9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 5, 6, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 2 * 8 * 9, 5, 6, generator=g, dtype=torch.float64) * 1.5
    mask = torch.rand(1, 8 * 9, 5, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 16, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    ours = modulated_deform_conv2d(*(t.to(dtype) for t in (x, offset, mask, weight, bias)), impl=impl)
    ref = _numpy_dcn(x.numpy(), offset.numpy(), mask.numpy(), weight.numpy(), bias.numpy())
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("axis", ["dy", "dx"])
def test_integer_shift_equals_shifted_conv(impl, axis):
    """Offset +1 on every point in component dy (dx) samples one row down (column right)."""
    torch.manual_seed(1)
    x = torch.randn(2, 16, 7, 9)
    weight, bias = torch.randn(8, 16, 3, 3), torch.randn(8)
    offset = torch.zeros(2, 144, 7, 9)
    offset[:, slice(0 if axis == "dy" else 1, None, 2)] = 1.0
    mask = torch.ones(2, 72, 7, 9)
    out = modulated_deform_conv2d(x, offset, mask, weight, bias, impl=impl)
    # output (y, x) reads rows y..y+2 (columns x..x+2): a valid conv over x padded 0 before and 2 after
    padded = F.pad(x, (1, 1, 0, 2)) if axis == "dy" else F.pad(x, (0, 2, 1, 1))
    torch.testing.assert_close(out, F.conv2d(padded, weight, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_module_raw_channel_layout_group_and_kernel_point(impl):
    """Through ``conv_offset_mask``: raw channel 2·(g·9+k) is dy of group g, point k; mask is 144 + g·9 + k.

    With C = 64 and 8 groups, moving group 1 / kernel point 4 (the centre) changes only what the output reads
    from input channels 8..15, and only through that mask channel.
    """
    torch.manual_seed(2)
    dcn = ModulatedDeformConv(64, 4, deformable_groups=8, impl=impl)
    x = torch.randn(1, 64, 6, 7)
    with torch.no_grad():
        dcn.conv_offset_mask.bias.zero_()
        dcn.conv_offset_mask.bias[144:] = 30.0  # every mask ≈ 1
        base = dcn(x, torch.zeros(1, 64, 6, 7))
        g, k = 1, 4
        dcn.conv_offset_mask.bias[2 * (g * 9 + k)] = 1.0  # dy = +1 → sample the row below
        moved = dcn(x, torch.zeros(1, 64, 6, 7))
        # expected: only the centre tap of channels 8..15 reads row y+1
        w = torch.zeros_like(dcn.weight)
        w[:, 8:16, 1, 1] = dcn.weight[:, 8:16, 1, 1]
        x_down = F.pad(x[:, :, 1:], (0, 0, 0, 1))  # centre tap of row y now reads row y+1
        expected = base + F.conv2d(x_down, w, padding=1) - F.conv2d(x, w, padding=1)
        torch.testing.assert_close(moved, expected, rtol=1e-5, atol=1e-5)
        # masking exactly that point with its mask channel removes exactly that contribution
        dcn.conv_offset_mask.bias[144 + g * 9 + k] = -60.0
        masked = dcn(x, torch.zeros(1, 64, 6, 7))
        torch.testing.assert_close(masked, moved - F.conv2d(x_down, w, padding=1), rtol=1e-5, atol=1e-5)


def test_split_offset_mask_is_official_chunk_cat():
    raw = torch.arange(216.0).view(1, 216, 1, 1)
    offset, mask = ModulatedDeformConv.split_offset_mask(raw)
    assert torch.equal(offset.flatten(), torch.arange(144.0))
    assert torch.equal(mask.flatten(), torch.sigmoid(torch.arange(144.0, 216.0)))


def _off_lattice_offsets(shape, gen):
    """Random offsets whose sampling points stay ≥ 0.05 px from integer rows/columns.

    Bilinear sampling's gradient w.r.t. position jumps at integer coordinates; two implementations that
    round the position differently by 1e-7 px can fall on different sides there, so gradients are compared
    away from that measure-zero set.
    """
    whole = torch.randint(-3, 4, shape, generator=gen).float()
    frac = 0.05 + 0.9 * torch.rand(shape, generator=gen)
    return whole + frac


@pytest.mark.parametrize("shape", [(2, 64, 12, 20), (1, 128, 16, 24)])
def test_fast_matches_torchvision_forward_and_gradients(shape):
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    offset = _off_lattice_offsets((n, 144, h, w), gen).requires_grad_()
    mask = torch.rand(n, 72, h, w, generator=gen, requires_grad=True)
    weight = (torch.randn(c, c, 3, 3, generator=gen) * 0.05).requires_grad_()
    bias = torch.randn(c, generator=gen, requires_grad=True)
    grad_out = torch.randn(n, c, h, w, generator=gen)
    results = {}
    for impl in ("reference", "fast"):
        out = modulated_deform_conv2d(x, offset, mask, weight, bias, impl=impl)
        results[impl] = (out, torch.autograd.grad(out, (x, offset, mask, weight, bias), grad_out))
    (ref_out, ref_grads), (out, grads) = results["reference"], results["fast"]
    rel = lambda a, b: float(((a - b).abs().max() / b.abs().max()).detach())  # noqa: E731
    assert rel(out, ref_out) < 1e-5
    for name, g_fast, g_ref in zip(("input", "offset", "mask", "weight", "bias"), grads, ref_grads):
        assert rel(g_fast, g_ref) < 1e-4, name


def test_fast_inference_row_chunking_is_exact():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 32, 20, 16, generator=gen)
    offset = torch.randn(1, 144, 20, 16, generator=gen)
    mask = torch.rand(1, 72, 20, 16, generator=gen)
    weight, bias = torch.randn(16, 32, 3, 3, generator=gen), torch.randn(16, generator=gen)
    with torch.inference_mode():
        whole = modulated_deform_conv2d(x, offset, mask, weight, bias, impl="fast")
        chunked = modulated_deform_conv2d(x, offset, mask, weight, bias, impl="fast", max_cols_bytes=1)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_impl_selection_and_errors():
    assert resolve_impl("auto", torch.device("cpu")) == "fast"
    assert resolve_impl("auto", torch.device("cuda")) == "reference"
    with dcn_impl("reference"):
        assert resolve_impl("auto", torch.device("cpu")) == "reference"
        assert resolve_impl("fast", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="unknown DCN implementation"):
        with dcn_impl("cuda-magic"):
            pass
    x = torch.randn(1, 16, 5, 5)
    with pytest.raises(ValueError, match="offset must have shape"):
        modulated_deform_conv2d(x, torch.zeros(1, 10, 5, 5), torch.zeros(1, 72, 5, 5), torch.zeros(4, 16, 3, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        modulated_deform_conv2d(x, torch.zeros(1, 144, 5, 5), torch.zeros(1, 9, 5, 5), torch.zeros(4, 16, 3, 3))
    with pytest.raises(ValueError, match="not divisible"):
        ModulatedDeformConv(12, 4, deformable_groups=8)


def test_official_init():
    dcn = ModulatedDeformConv(256, 256)
    assert torch.count_nonzero(dcn.conv_offset_mask.weight) == 0 and torch.count_nonzero(dcn.conv_offset_mask.bias) == 0
    assert torch.count_nonzero(dcn.bias) == 0
    assert float(dcn.weight.detach().abs().max()) <= 1 / (256 * 9) ** 0.5
    assert dcn.conv_offset_mask.out_channels == 216


@needs_cpp
@pytest.mark.parametrize("groups,c,stride,padding,dilation,n", [
    (8, 128, 1, 1, 1, 1),   # FaPN's shape (16 channels per group)
    (8, 64, 1, 1, 1, 2),    # 8 per group, batch 2
    (4, 128, 1, 1, 1, 1),   # 32 per group
    (3, 15, 2, 2, 2, 2),    # 5 per group (generic loop), stride 2, dilation 2
    (1, 7, 1, 0, 1, 1),     # one group, no padding
])
def test_compiled_forward_matches_torchvision(groups, c, stride, padding, dilation, n):
    from torchvision.ops import deform_conv2d

    gen = torch.Generator().manual_seed(5)
    h, w = 13, 18
    ho = (h + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (w + 2 * padding - dilation * 2 - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=gen)
    offset = torch.randn(n, 2 * groups * 9, ho, wo, generator=gen) * 4  # many samples fall off the border
    mask = torch.rand(n, groups * 9, ho, wo, generator=gen)
    weight, bias = torch.randn(24, c, 3, 3, generator=gen) * 0.1, torch.randn(24, generator=gen)
    with torch.inference_mode():
        ref = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation, mask=mask)
        ours = modulated_deform_conv2d(x, offset, mask, weight, bias, stride=stride, padding=padding,
                                       dilation=dilation, impl="cpp")
        chunked = modulated_deform_conv2d(x, offset, mask, weight, bias, stride=stride, padding=padding,
                                          dilation=dilation, impl="cpp", max_cols_bytes=1)  # one pixel per tile
        # channels-last input (and offsets/mask, read through their strides) gives a channels-last output
        to_cl = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
        cl = modulated_deform_conv2d(to_cl(x), to_cl(offset), to_cl(mask), weight, bias,
                                     stride=stride, padding=padding, dilation=dilation, impl="cpp")
        # offsets as a strided view of a bigger tensor (as the model's raw[:, :2·G·9] is)
        raw = torch.cat([offset, mask, torch.randn(n, 5, ho, wo, generator=gen)], dim=1)
        n_off, n_mask = offset.shape[1], mask.shape[1]
        view = modulated_deform_conv2d(x, raw[:, :n_off], raw[:, n_off: n_off + n_mask], weight, bias,
                                       stride=stride, padding=padding, dilation=dilation, impl="cpp")
    assert ours.shape == ref.shape and ours.is_contiguous()
    assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-5
    # (GEMMs over different tile sizes sum in different orders: equal to float32 rounding, not bit-identical)
    torch.testing.assert_close(chunked, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cl, ours, rtol=1e-5, atol=1e-5)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(view, ours, rtol=1e-5, atol=1e-5)


@needs_cpp
def test_compiled_forward_on_wide_maps_and_exact_borders():
    # several 32-pixel tiles per row with a partial last one; offsets that put samples exactly on the border lines
    # (-1, H - 1, H and W: inside or outside by torchvision's rule) and at random half-integers; 16 and 8 channels
    # per group (the vectorised sizes) with NCHW and channels-last offsets
    from torchvision.ops import deform_conv2d

    gen = torch.Generator().manual_seed(11)
    for c in (128, 64):
        x = torch.randn(1, c, 6, 77, generator=gen)
        ys = torch.arange(6.0).view(1, 1, 6, 1)
        xs = torch.arange(77.0).view(1, 1, 1, 77)
        k = torch.arange(9.0).view(1, 9, 1, 1)
        ky, kx = k.div(3, rounding_mode="floor") - 1, k.remainder(3) - 1
        # per kernel point a target row/column among -1, 0, H-1, H (resp. W) and beyond, minus the sampling base
        target_y = torch.tensor([-1.0, 0.0, 5.0, 6.0, -1.5, 5.5, 2.0, -0.5, 6.5]).view(1, 9, 1, 1)
        target_x = torch.tensor([-1.0, 76.0, 77.0, 0.0, 38.5, -0.5, 76.5, 1.0, 77.5]).view(1, 9, 1, 1)
        dy = (target_y - ys - ky).expand(1, 9, 6, 77)
        dx = (target_x - xs - kx).expand(1, 9, 6, 77)
        exact = torch.stack([dy, dx], dim=2).reshape(1, 18, 6, 77).repeat(1, 8, 1, 1)
        noisy = torch.round(torch.randn(1, 144, 6, 77, generator=gen) * 6) / 2
        for offset in (exact, noisy, noisy.contiguous(memory_format=torch.channels_last)):
            mask = torch.rand(1, 72, 6, 77, generator=gen)
            weight, bias = torch.randn(16, c, 3, 3, generator=gen) * 0.1, torch.randn(16, generator=gen)
            with torch.inference_mode():
                ref = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
                ours = modulated_deform_conv2d(x, offset, mask, weight, bias, impl="cpp")
            assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-5


@needs_cpp
def test_compiled_forward_gives_nan_offsets_zero_weight():
    # a NaN offset (e.g. from a diverged checkpoint) samples nothing, like an offset far outside the image;
    # torchvision's kernel has no defined result there, so the reference is an out-of-image offset
    gen = torch.Generator().manual_seed(2)
    x, weight = torch.randn(1, 16, 5, 7, generator=gen), torch.randn(4, 16, 3, 3, generator=gen)
    offset, mask = torch.randn(1, 144, 5, 7, generator=gen), torch.rand(1, 72, 5, 7, generator=gen)
    nan, far = offset.clone(), offset.clone()
    nan[:, 10, 2, 3] = float("nan")   # dy of group 0, kernel point 5, at pixel (2, 3)
    far[:, 10, 2, 3] = 1e6
    with torch.inference_mode():
        got = modulated_deform_conv2d(x, nan, mask, weight, impl="cpp")
        ref = modulated_deform_conv2d(x, far, mask, weight, impl="cpp")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


@needs_cpp
def test_auto_uses_compiled_forward_for_cpu_inference_only(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_impl("auto", cpu, inference=True) == "cpp"
    assert resolve_impl("auto", cpu, inference=False) == "fast"            # training: gradients needed
    assert resolve_impl("auto", cpu, inference=True, dtype=torch.float64) == "fast"
    assert resolve_impl("cpp", cpu, inference=False) == "fast"
    calls = []
    ext = dcn_ext.load()

    class CountingExt:
        @staticmethod
        def modulated_deform_conv2d_forward(*args):
            calls.append(1)
            return ext.modulated_deform_conv2d_forward(*args)

    monkeypatch.setattr(dcn_ext, "load", lambda: CountingExt)
    x, off, m, wt = torch.randn(1, 16, 5, 5), torch.randn(1, 144, 5, 5), torch.rand(1, 72, 5, 5), torch.randn(4, 16, 3, 3)
    with torch.inference_mode():
        modulated_deform_conv2d(x, off, m, wt)
    assert calls == [1]
    # under autograd the same call takes the differentiable fast path, with the same numbers
    xg = x.clone().requires_grad_()
    out = modulated_deform_conv2d(xg, off, m, wt)
    assert calls == [1] and out.requires_grad
    with torch.inference_mode():
        torch.testing.assert_close(out.detach(), modulated_deform_conv2d(x, off, m, wt), rtol=1e-5, atol=1e-5)


@needs_cpp
def test_compiled_path_hands_planes_too_large_for_it_to_fast(monkeypatch):
    from fapn_core.models import deform

    calls = []
    monkeypatch.setattr(deform, "_deform_fast", lambda *a: calls.append(a[0].shape) or torch.zeros(1))
    x, off, m, wt = torch.randn(1, 16, 5, 6), torch.randn(1, 144, 5, 6), torch.rand(1, 72, 5, 6), torch.randn(4, 16, 3, 3)
    with torch.inference_mode():
        modulated_deform_conv2d(x, off, m, wt, impl="cpp")
        assert calls == []
        monkeypatch.setattr(deform, "_CPP_MAX_PLANE", 5 * 6 * 2)  # one group's plane here is 5·6·2 values
        modulated_deform_conv2d(x, off, m, wt, impl="cpp")
    assert calls == [(1, 16, 5, 6)]


def test_missing_build_falls_back_or_says_how_to_build(monkeypatch, tmp_path):
    monkeypatch.setenv("FAPN_EXT_DIR", str(tmp_path))  # an empty build folder: nothing matches
    monkeypatch.setattr(dcn_ext, "_module", None)
    monkeypatch.setattr(dcn_ext, "_tried", False)
    assert dcn_ext.load() is None
    assert "fapn build-ext" in dcn_ext.status() and str(tmp_path) in dcn_ext.status()
    cpu = torch.device("cpu")
    assert resolve_impl("auto", cpu, inference=True) == "fast"
    with pytest.raises(RuntimeError, match="'cpp' was forced but is not available.*fapn build-ext"):
        resolve_impl("cpp", cpu, inference=True)
    # the build folder name changes with the source, so a build of other code is never loaded
    name = dcn_ext.module_name()
    src = tmp_path / "dcn_cpu.cpp"
    src.write_bytes(dcn_ext.SOURCE.read_bytes() + b"// changed\n")
    monkeypatch.setattr(dcn_ext, "SOURCE", src)
    assert dcn_ext.module_name() != name and dcn_ext.module_name().startswith("fapn_dcn_cpu_")
