"""CUDA checks (marked ``gpu``; skipped without a device). Run on a lent GPU with benchmarks/gpu_check.sh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fapn_core.models.deform import modulated_deform_conv2d, resolve_impl
from fapn_core.models.zoo import build_model

pytestmark = pytest.mark.gpu


def test_fast_dcn_matches_torchvision_on_cuda():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 24, 40, generator=gen).cuda().requires_grad_()
    off = (torch.randn(2, 144, 24, 40, generator=gen) * 2).cuda().requires_grad_()
    mask = torch.rand(2, 72, 24, 40, generator=gen).cuda().requires_grad_()
    w = (torch.randn(64, 64, 3, 3, generator=gen) * 0.05).cuda().requires_grad_()
    b = torch.randn(64, generator=gen).cuda().requires_grad_()
    g = torch.randn(2, 64, 24, 40, generator=gen).cuda()
    outs = {}
    for impl in ("reference", "fast"):
        y = modulated_deform_conv2d(x, off, mask, w, b, impl=impl)
        outs[impl] = (y, torch.autograd.grad(y, (x, mask, w, b), g))
    rel = lambda a, r: float((a - r).abs().max() / r.abs().max())  # noqa: E731
    assert rel(outs["fast"][0], outs["reference"][0]) < 1e-4
    for a, r in zip(outs["fast"][1], outs["reference"][1]):
        assert rel(a, r) < 1e-3
    assert resolve_impl("auto", x.device) == "reference"


def test_model_on_cuda_with_amp_agrees_with_cpu():
    torch.manual_seed(0)
    model = build_model("fapn_r18_semfpn", num_classes=5, neck_channels=64, head_conv_dims=64).eval()
    image = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
    cpu = model.predict(image)
    model.cuda()
    fp32 = model.predict(image).cpu()
    amp = model.predict(image, amp=True).cpu()
    assert float((fp32 - cpu).abs().max()) < 1e-3 * float(cpu.abs().max()) + 1e-3
    assert float((amp.argmax(0) == cpu.argmax(0)).float().mean()) > 0.97
