"""Benchmark helpers: FLOPs include the deformable conv; tables build on tiny shapes."""

from __future__ import annotations


import torch

from fapn_core.bench import (TRAINED_OFFSET_RMS, bench_dcn, count_flops, flop_counter, format_dcn_table,
                              interleaved_medians, set_trained_like_offsets)
from fapn_core.models.deform import dcn_impl, modulated_deform_conv2d
from fapn_core.models.zoo import build_model


def test_flop_counter_counts_the_deformable_conv():
    # torch's own counter sees nothing in torchvision::deform_conv2d; ours counts its dense 3×3 conv (2 FLOPs per
    # multiply-add) plus 9 FLOPs per sampled value, for any DCN implementation the model would pick.
    x, w = torch.randn(2, 16, 6, 7), torch.randn(24, 16, 3, 3)
    off, m = torch.randn(2, 2 * 2 * 9, 6, 7), torch.rand(2, 2 * 9, 6, 7)
    samples = 2 * 16 * 9 * 6 * 7
    for impl in ("fast", "reference"):
        counter = flop_counter()
        with counter, dcn_impl("reference"):
            modulated_deform_conv2d(x, off, m, w, impl=impl)
        assert counter.get_total_flops() == 2 * 24 * samples + 9 * samples


def test_fapn_flops_exceed_fpn_by_the_alignment_modules():
    kw = dict(num_classes=5, neck_channels=16, head_conv_dims=32)
    fpn, fapn = build_model("fpn_r18_semfpn", **kw).eval(), build_model("fapn_r18_semfpn", **kw).eval()
    f_fpn, f_fapn = count_flops(fpn, (64, 64)), count_flops(fapn, (64, 64))
    assert f_fpn["backbone"] == f_fapn["backbone"] > 0
    assert f_fapn["neck"] > f_fpn["neck"]
    assert f_fapn["total"] == f_fapn["backbone"] + f_fapn["neck"] + f_fapn["head"]
    # At least the three FAMs' own layers, per cell of p2..p4 (16², 8², 4²): the DCN (2·16·16·9 + 9·16·9), its
    # offset/mask predictor (2·16·9·216) and the offset 1×1 conv over [FSM(lateral), 2·up] (2·32·16).
    per_cell = (2 * 16 * 16 * 9 + 9 * 16 * 9) + 2 * 16 * 9 * 216 + 2 * 32 * 16
    assert f_fapn["neck"] - f_fpn["neck"] >= per_cell * (16 * 16 + 8 * 8 + 4 * 4)


def test_fused_1x1_convs_count_the_flops_of_their_unfused_definitions():
    # FaPN's offset conv over cat[a, 2·b] runs as mm + in-place addmm_, the FSM as a per-image matmul: the counter
    # must see the FLOPs of the official 1×1 convs (2·C_out·C_in per pixel), not fewer
    from fapn_core.models.necks import ConcatPointwise, FeatureSelection

    a, b, x = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6), torch.randn(2, 12, 5, 6)
    for mode in (torch.inference_mode, torch.enable_grad):
        counter = flop_counter()
        with mode(), counter:
            ConcatPointwise(8, 8, 16)(a, b)
        assert counter.get_total_flops() == 2 * 16 * 16 * 2 * 5 * 6
        counter = flop_counter()
        with mode(), counter:
            FeatureSelection(12, 16)(x)
        assert counter.get_total_flops() == 2 * (16 * 12 * 5 * 6 + 12 * 12) * 2


def test_dcn_bench_rows_and_table():
    rows = bench_dcn([(16, 8, 12)], repeats=1)
    assert len(rows) == 1 and rows[0].fast_fwd_ms > 0 and rows[0].ref_fwdbwd_ms > 0
    assert "| C=16 8x12 N=1 |" in format_dcn_table(rows)


def test_interleaved_medians_runs_every_function():
    calls = {"a": 0, "b": 0}
    out = interleaved_medians({"a": lambda: calls.__setitem__("a", calls["a"] + 1),
                               "b": lambda: calls.__setitem__("b", calls["b"] + 1)}, repeats=3, warmup=1)
    assert calls == {"a": 4, "b": 4} and set(out) == {"a", "b"}


def test_trained_like_offsets_reach_the_trained_magnitudes():
    model = build_model("fapn_r18_semfpn", num_classes=5, neck_channels=16, head_conv_dims=32).eval()
    x = torch.rand(1, 3, 128, 160) * 255
    captured = {}
    for lvl in (2, 3, 4):
        getattr(model.neck, f"align{lvl}").dcn.conv_offset_mask.register_forward_hook(
            lambda m, i, o, lvl=lvl: captured.__setitem__(lvl, o[:, :144]))
    with torch.inference_mode():
        model(x)
    assert all(float(captured[lvl].abs().max()) == 0 for lvl in (2, 3, 4))  # official init: no offsets at all
    set_trained_like_offsets(model, x)
    with torch.inference_mode():
        model(x)
    for lvl in (2, 3, 4):
        rms = float(captured[lvl].pow(2).mean().sqrt())
        assert abs(rms / TRAINED_OFFSET_RMS[lvl] - 1) < 0.05, (lvl, rms)
    # FPN has no deformable conv: nothing to do
    assert set_trained_like_offsets(build_model("fpn_r18_semfpn", num_classes=5).eval(), x) == {}


def test_build_ext_command_reports_a_failed_build_and_exits_nonzero(monkeypatch, capsys):
    from fapn_core import cli
    from fapn_core.models import dcn_ext

    def broken(verbose=False):
        raise OSError("g++: command not found")

    monkeypatch.setattr(dcn_ext, "build", broken)
    assert cli.main(["build-ext"]) == 1
    err = capsys.readouterr().err
    assert "could not build the compiled CPU DCN" in err and "g++: command not found" in err
    assert "PyTorch fast path" in err


def test_maskformer_bench_rows_stages_and_attention_flops():
    """``fapn bench maskformer`` on the light pair: stage times add up, FLOPs count the transformer (attention
    included: more queries → more head FLOPs) and FaPN's pixel decoder costs more than the plain one."""
    from fapn_core.bench import count_flops
    from fapn_core.bench_stages import bench_maskformer

    rows, stages = bench_maskformer(["fpn_r18_maskformer", "fapn_r18_maskformer"], "64x96", repeats=1)
    assert [r.model for r in rows] == ["fpn_r18_maskformer", "fapn_r18_maskformer"]
    assert rows[1].gflops > rows[0].gflops
    for st in stages.values():
        parts = st["backbone"] + st["pixel decoder"] + st["transformer"] + st["semantic inference + rest"]
        assert abs(parts - st["total"]) < 1e-6 and st["transformer"] > 0 and st["pixel decoder"] > 0
    few = count_flops(build_model("fpn_r18_maskformer", num_queries=10).eval(), (64, 96))
    many = count_flops(build_model("fpn_r18_maskformer", num_queries=100).eval(), (64, 96))
    assert many["head"] > few["head"] > 0 and many["backbone"] == few["backbone"]


# ------------------------------------------------------------------------------------ per-stage timing
def test_stage_times_wrap_functions_and_restore_them():
    """A stage given as (owner, attribute) is timed through a wrapper that is gone afterwards; stages of one run
    never exceed its total; a method wrapped on an instance falls back to the class's afterwards."""
    import time as time_module
    import types

    from fapn_core.bench_stages import stage_times

    ns = types.SimpleNamespace(work=lambda: time_module.sleep(0.02))
    net = torch.nn.Linear(3, 3)
    original = ns.work

    def run():
        ns.work()
        net(torch.zeros(1, 3))
        net.extra_repr()

    med = stage_times(run, {"work": (ns, "work"), "linear": net, "repr": (net, "extra_repr")}, repeats=2)
    assert ns.work is original and "extra_repr" not in vars(net)
    assert 15 < med["work"] < med["total"] and med["linear"] > 0 and med["repr"] >= 0
    assert med["work"] + med["linear"] + med["repr"] <= med["total"] + 1e-6


def test_fixed_proposals_give_the_detector_a_trained_models_work():
    """With fixed COCO-like proposals and a score threshold of 0 a random-weight Mask R-CNN returns its full 100
    detections with non-empty masks (without them nearly every box is degenerate and nothing is pasted)."""
    from fapn_core.bench_stages import RCNN_FIXED, detector_stage_times, fix_proposals, random_boxes, scene, scene_image

    boxes = random_boxes(500, (96, 128), seed=3)
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
    assert sides.min() >= 16 - 1e-4 and sides[:, 0].max() <= 127
    model = build_model("fpn_r18_maskrcnn", **RCNN_FIXED).eval()
    image = scene_image((96, 128))
    handle = fix_proposals(model, image.shape[:2], n=200)
    res = model.predict(image)
    assert len(res) == 100 and int(res.masks.flatten(1).any(1).sum()) > 50
    st = detector_stage_times(model, scene(image), repeats=1)
    parts = sum(st[k] for k in ("backbone", "neck", "rpn", "box head", "mask head", "semantic head",
                                "postprocess + paste"))
    assert abs(parts - st["total"]) < 1e-6 and 0 < st["paste"] <= st["postprocess + paste"]
    handle.remove()


def test_rcnn_end_to_end_rows_and_table():
    from fapn_core.bench_stages import RCNN_FIXED, fix_proposals, format_end_to_end_table, rcnn_end_to_end, scene_image

    model = build_model("fpn_r18_maskrcnn", **RCNN_FIXED).eval()
    image = scene_image((64, 96))
    fix_proposals(model, image.shape[:2], n=50)
    rows = rcnn_end_to_end({"m": model}, image, repeats=1)
    r = rows["m"]
    stages = ("preprocess", "backbone", "neck", "rpn", "roi heads", "postprocess + paste")
    assert all(r[k] > 0 for k in stages) and abs(r["sum of stages"] - sum(r[k] for k in stages)) < 1e-6
    assert abs(r["overhead %"] - 100 * (r["end to end"] / r["sum of stages"] - 1)) < 1e-9
    assert "| end to end ÷ sum of stages − 1 |" in format_end_to_end_table(rows)


def test_panopticfcn_stages_add_up_and_fusion_is_timed():
    from fapn_core.bench_stages import PANOPTICFCN_STAGES, panopticfcn_stage_times, scene, scene_image

    model = build_model("fapn_r18_panopticfcn", center_thresh=0.0, stuff_thresh=0.0).eval()
    st = panopticfcn_stage_times(model, scene(scene_image((96, 128))), repeats=1)
    assert abs(sum(st[k] for k in PANOPTICFCN_STAGES) - st["total"]) < 1e-6
    assert all(st[k] > 0 for k in PANOPTICFCN_STAGES[:5])  # thresholds 0: candidates exist, fusion runs


def test_subdivision_times_per_detection_count():
    from fapn_core.bench_stages import format_subdivision_table, scene, scene_image, subdivision_times

    model = build_model("fpn_r18_pointrend_rcnn", num_classes=5).eval()
    t = subdivision_times(model, scene(scene_image((64, 96))), counts=(2, 4), repeats=1)
    assert list(t) == [2, 4] and all(v["subdivision steps"] > 0 and v["paste"] > 0 for v in t.values())
    assert "| m | 4 |" in format_subdivision_table({"m": t})
