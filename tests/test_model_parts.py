"""Each family's parts (issue #29, Models page): they cover every parameter once, their FLOPs and measured times
add up to the whole, and the Models page shows them with the library's numbers."""

from __future__ import annotations

import pytest
import torch

import apptest_helpers
from fapn_core.bench import count_flops, count_part_flops
from fapn_core.bench_stages import part_times
from fapn_core.models.parts import model_parts, part_parameters, rest_label
from fapn_core.models.zoo import build_model, count_parameters

FAMILIES = {
    "fapn_r18_semfpn": ["backbone", "neck", "semantic head"],
    "fpn_r18_pointrend": ["backbone", "neck", "PointRend semantic head"],
    "fapn_r18_maskrcnn": ["backbone", "neck", "RPN", "box head", "mask head"],
    "fapn_r18_pointrend_rcnn": ["backbone", "neck", "RPN", "box head", "mask head (PointRend: coarse + point head)"],
    "fpn_r18_panoptic": ["backbone", "neck", "RPN", "box head", "mask head", "semantic head"],
    "fapn_r18_maskformer": ["backbone", "pixel decoder", "transformer decoder + class/mask heads"],
    "fapn_r18_panopticfcn": ["backbone", "neck", "P6/P7 top block", "semantic FPN + feature encoder",
                             "position head (centres, regions)", "kernel head", "kernel generators (thing, stuff)"],
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_parts_cover_every_parameter_once_and_flops_add_up(name):
    model = build_model(name).eval()
    parts = model_parts(model)
    assert list(parts) == FAMILIES[name]
    assert sum(part_parameters(model, p) for p in parts.values()) == count_parameters(model)
    fl = count_part_flops(model, (64, 96), parts)
    assert fl["total"] == count_flops(model, (64, 96))["total"]
    assert sum(fl[k] for k in parts) + fl["rest"] == fl["total"] and fl["rest"] >= 0
    assert fl["backbone"] > 0


def test_part_times_add_up_to_the_forward():
    model = build_model("fapn_r18_maskformer").eval()
    t = part_times(model, torch.rand(1, 3, 64, 96) * 255, repeats=2)
    parts = list(model_parts(model))
    assert list(t) == [*parts, "rest", "total"]
    assert abs(sum(t[k] for k in [*parts, "rest"]) - t["total"]) < 1e-6 and all(t[k] > 0 for k in parts)


def test_models_page_shows_each_familys_parts_with_the_librarys_numbers():
    at = apptest_helpers.app().run()
    at.selectbox(key="bundled_a").set_value("fpn_r18_maskformer").run()
    at.selectbox(key="bundled_b").set_value("fapn_r18_panoptic").run()
    at.switch_page("../pages/models.py").run()
    apptest_helpers.no_errors(at)
    tables = [d.value for d in at.dataframe if "part" in d.value.columns and "GFLOPs" in d.value.columns]
    assert len(tables) == 2 and "latency ms" not in tables[0].columns
    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.checkpoints.bundled import bundled_models

    for table, name in zip(tables, ("fpn_r18_maskformer", "fapn_r18_panoptic")):
        model, _ = load_checkpoint(bundled_models()[name])
        parts = model_parts(model)
        assert list(table["part"]) == [*parts, rest_label(model)]
        for label, paths in parts.items():
            shown = float(table.loc[table["part"] == label, "params (M)"].iloc[0])
            assert shown == round(part_parameters(model, paths) / 1e6, 3)
    at.slider(key="lat_repeats").set_value(1).run()
    at.button(key="measure").click().run()
    apptest_helpers.no_errors(at)
    tables = [d.value for d in at.dataframe if "part" in d.value.columns and "latency ms" in d.value.columns]
    assert len(tables) == 2
    metrics = {m.label: m.value for m in at.metric}
    for table, tag in zip(tables, ("A", "B")):
        assert (table["latency ms"].iloc[:-1] > 0).all()  # every part ran; "rest" is what remains
        # the parts and "rest" add up to the latency shown (rounded to whole ms there)
        assert abs(table["latency ms"].sum() - float(metrics[f"{tag} latency"].split()[0])) <= 0.51
