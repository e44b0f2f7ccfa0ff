"""Benchmark helpers: FLOPs include the deformable conv; tables build on tiny shapes."""

from __future__ import annotations


from fapn_core.bench import bench_dcn, count_flops, format_dcn_table, interleaved_medians
from fapn_core.models.zoo import build_model


def test_fapn_flops_exceed_fpn_by_the_alignment_modules():
    kw = dict(num_classes=5, neck_channels=16, head_conv_dims=32)
    fpn, fapn = build_model("fpn_r18_semfpn", **kw).eval(), build_model("fapn_r18_semfpn", **kw).eval()
    f_fpn, f_fapn = count_flops(fpn, (64, 64)), count_flops(fapn, (64, 64))
    assert f_fpn["backbone"] == f_fapn["backbone"] > 0
    assert f_fapn["neck"] > f_fpn["neck"]
    # the DCN of p2 alone (16 ch, 16×16 cells, 3×3): 2·16·(16·9·256) + 9·(16·9·256)
    dcn_p2 = 2 * 16 * 16 * 9 * 256 + 9 * 16 * 9 * 256
    assert f_fapn["neck"] - f_fpn["neck"] > dcn_p2
    assert f_fapn["total"] == f_fapn["backbone"] + f_fapn["neck"] + f_fapn["head"]


def test_dcn_bench_rows_and_table():
    rows = bench_dcn([(16, 8, 12)], repeats=1)
    assert len(rows) == 1 and rows[0].fast_fwd_ms > 0 and rows[0].ref_fwdbwd_ms > 0
    assert "| C=16 8x12 N=1 |" in format_dcn_table(rows)


def test_interleaved_medians_runs_every_function():
    calls = {"a": 0, "b": 0}
    out = interleaved_medians({"a": lambda: calls.__setitem__("a", calls["a"] + 1),
                               "b": lambda: calls.__setitem__("b", calls["b"] + 1)}, repeats=3, warmup=1)
    assert calls == {"a": 4, "b": 4} and set(out) == {"a", "b"}
