"""The app with MaskFormer models (issue #29, MaskFormer part): every page with a MaskFormer pair and in a mixed pair
with a semantic FPN, the Queries view's numbers equal to the library's, Channels saying the pixel decoder has no FSM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import apptest_helpers
from fapn_core.checkpoints import load_checkpoint, make_card, save_native
from fapn_core.data.synthetic import CLASS_NAMES, PALETTE
from fapn_core.introspect import predict_with_captures
from fapn_core.io import read_image_file
from fapn_core.models.zoo import build_model
from fapn_core.viz.queries import border_comparison, query_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def maskformers(tmp_path_factory) -> dict[str, Path]:
    """A plain and a FaPN MaskFormer (R18, random weights, the synthetic benchmark's classes) as native files."""
    out = tmp_path_factory.mktemp("maskformer")
    paths = {}
    for neck in ("fpn", "fapn"):
        torch.manual_seed(0)
        model = build_model(f"{neck}_r18_maskformer", num_classes=10).eval()
        card = make_card(model, classes=list(CLASS_NAMES), palette=PALETTE.tolist(), training_data="random (test)")
        paths[neck] = save_native(model, out / f"{neck}_r18_maskformer.safetensors", card, half=True)
    return paths


_upload = apptest_helpers.upload_checkpoint


def test_maskformer_pair_every_page_and_the_queries_view_equal_the_library(maskformers):
    at = apptest_helpers.app().run()
    _upload(at, "a", maskformers["fpn"])
    _upload(at, "b", maskformers["fapn"])
    apptest_helpers.no_errors(at)
    assert at.dataframe  # Compare's per-class table: MaskFormer is a semantic model
    apptest_helpers.visit_every_page(at)
    at.switch_page("../pages/channels.py").run()
    infos = [i.value for i in at.info]
    assert any("fapn neck has no FSM" in i for i in infos) and any("fpn neck has no FAM" in i for i in infos), infos
    at.switch_page("../pages/queries.py").run()
    apptest_helpers.no_errors(at)
    image = read_image_file(ROOT / "assets" / "samples" / "synthetic_00.png").rgb
    qs = {}
    for neck in ("fpn", "fapn"):
        model, _ = load_checkpoint(maskformers[neck])
        qs[neck] = predict_with_captures(model, image, ("queries",)).captures.queries
    ref = border_comparison(image, qs["fpn"], qs["fapn"])
    shown = {m.label: m.value for m in at.metric}
    assert shown["border cells only A"] == f"{ref.only_a:,}" and shown["border cells only B"] == f"{ref.only_b:,}"
    assert shown["owner class differs"] == f"{100 * ref.class_disagreement:.1f} %"
    table = at.dataframe[1].value  # B's queries, largest share first
    rows = query_table(qs["fapn"], list(CLASS_NAMES))
    assert list(table["query"]) == [r.query for r in rows]
    assert np.isclose(table["pixels %"].sum(), 100.0, atol=0.05)


def test_mixed_pair_semantic_fpn_and_maskformer(maskformers):
    at = apptest_helpers.app().run()  # A: the bundled semantic FPN
    _upload(at, "b", maskformers["fapn"])
    apptest_helpers.no_errors(at)
    assert at.dataframe  # both predict the synthetic classes: the label-map comparison runs
    at.switch_page("../pages/queries.py").run()
    apptest_helpers.no_errors(at)
    assert any(i.value.startswith("A · fpn_r18_semfpn is a semantic model (") and "without mask queries" in i.value
               for i in at.info)
    assert any(s.value.startswith("B · ") for s in at.subheader) and not at.metric  # no A/B border comparison
