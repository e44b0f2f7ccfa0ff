"""The new families beside the others (issue #29): pairings not covered by each family's own app tests render every
page, and the out-of-domain notice describes each model as what it is (a PanopticFCN, a PointRend Mask R-CNN, a
MaskFormer), pointing to its own family's official releases, on the family views too."""

from __future__ import annotations

import pytest

import apptest_helpers
import family_checkpoints
from fapn_core.checkpoints import bundled_models

pytestmark = pytest.mark.skipif(
    not {"fapn_r18_panoptic", "fpn_r18_maskformer"} <= set(bundled_models()), reason="bundled models missing")


def _notes(at) -> list[str]:
    return [w.value for w in at.warning if "trained on synthetic street scenes only" in w.value]


def test_notice_names_each_family_and_its_releases(tmp_path):
    # the card of a model meant for the synthetic scenes (its weights are random: only the card's words matter here)
    fcn = family_checkpoints.panopticfcn(tmp_path, "fapn", "fapn", training_data="synthetic street scenes (test)")
    pointrend = family_checkpoints.pointrend(tmp_path, bundled_models()["fpn_r18_panoptic"])
    at = apptest_helpers.app().run()
    apptest_helpers.upload_checkpoint(at, "a", fcn)
    apptest_helpers.upload_checkpoint(at, "b", pointrend)
    at.selectbox(key="sample_name").set_value("astronaut").run()
    for page in ("compare", "positions", "points"):
        at.switch_page(f"../pages/{page}.py").run()
        apptest_helpers.no_errors(at)
        notes = _notes(at)
        assert len(notes) == 1, (page, notes)
        text = notes[0]
        assert "A PanopticFCN finds objects of its thing classes only (4 classes: pole, traffic sign, person, car)" \
            in text and "`PanopticFCN-R50+FaPN-1x-FAST` (FaPN) or `PanopticFCN-R50-1x-FAST`" in text
        assert "A PointRend Mask R-CNN finds boxes and masks of its thing classes only" in text
        assert "`pointrend_rcnn_R_50_FAN_1x_coco` (FaPN) or `pointrend_rcnn_R_50_FPN_1x_coco`" in text
        assert "Panoptic FPN" not in text and "A Mask R-CNN" not in text
    at.radio(key="src_a").set_value("Bundled").run()  # A: the bundled MaskFormer
    at.selectbox(key="bundled_a").set_value("fpn_r18_maskformer").run()
    at.switch_page("../pages/queries.py").run()
    apptest_helpers.no_errors(at)
    text = _notes(at)[0]
    assert "A MaskFormer (a semantic model) gives every pixel one of its classes" in text
    assert "the ADE20K release `maskformer_swin_large+FaPN_IN21k_384_bs16_160k_res640` (FaPN)" in text
    assert "A PointRend Mask R-CNN finds boxes and masks" in text


@pytest.mark.parametrize("pair", ["panopticfcn+panoptic_fpn", "maskformer+panopticfcn"])
def test_mixed_pairs_render_every_page(pair, tmp_path):
    """A PanopticFCN beside the bundled Panoptic FPN (the same task: label maps and panoptic views compare them)
    and beside the bundled MaskFormer (different tasks: what they share, and why the rest is hidden)."""
    fcn = family_checkpoints.panopticfcn(tmp_path, "fpn", "fpn")
    at = apptest_helpers.app().run()
    if pair == "panopticfcn+panoptic_fpn":
        apptest_helpers.upload_checkpoint(at, "a", fcn)
        at.selectbox(key="bundled_b").set_value("fapn_r18_panoptic").run()
    else:
        at.selectbox(key="bundled_a").set_value("fpn_r18_maskformer").run()
        apptest_helpers.upload_checkpoint(at, "b", fcn)
    apptest_helpers.no_errors(at)
    apptest_helpers.visit_every_page(at)
    at.switch_page("../pages/compare.py").run()
    headers = {h.value for h in at.subheader}
    if pair == "panopticfcn+panoptic_fpn":  # two panoptic models: objects and label maps both compare
        assert "Where A and B disagree (objects)" in headers
        assert any(d.value.shape[0] > 0 for d in at.dataframe)
    at.switch_page("../pages/positions.py").run()
    infos = " ".join(i.value for i in at.info)
    other = "B · fapn_r18_panoptic" if pair == "panopticfcn+panoptic_fpn" else "A · fpn_r18_maskformer"
    assert other in infos and "needs a PanopticFCN" in infos


def test_maskformer_pair_attribution_and_dataset_like_the_library(tmp_path):
    """The bundled MaskFormer pair on the pages that compute on demand: LayerGradCAM at p2 (the pixel decoder's
    layer_1) for A and B without an error, and the Dataset page's mIoU equal to ``fapn_core.evaluation``."""
    import numpy as np

    from fapn_core.checkpoints import load_checkpoint
    from fapn_core.data import open_dataset
    from fapn_core.evaluation import ModelEntry, evaluate

    at = apptest_helpers.app().run()
    at.selectbox(key="bundled_a").set_value("fpn_r18_maskformer").run()
    at.selectbox(key="bundled_b").set_value("fapn_r18_maskformer").run()
    at.switch_page("../pages/attribution.py").run()
    method = next(o for o in at.selectbox(key="att_method").options if "gradcam" in o.lower())
    at.selectbox(key="att_method").set_value(method).run()
    at.button(key="att_run").click().run()
    apptest_helpers.no_errors(at)
    assert len(at.image) >= 2  # A's and B's maps
    at.switch_page("../pages/dataset.py").run()
    at.number_input(key="ds_limit").set_value(2).run()
    at.button(key="ds_run").click().run()
    apptest_helpers.no_errors(at)
    shown = next(d.value for d in at.dataframe if {"method", "mIoU"} <= set(d.value.columns))
    entries = [ModelEntry(tag, *load_checkpoint(bundled_models()[name]))
               for tag, name in (("A", "fpn_r18_maskformer"), ("B", "fapn_r18_maskformer"))]
    report = evaluate(entries, open_dataset("synthetic:n=2,seed=2,size=256x512"), tmp_path, progress=False)
    want = [r["mIoU"] for r in report.tables["ablation"]]
    np.testing.assert_allclose(shown["mIoU"].to_numpy(float), want, atol=0.006)  # the page rounds to 2 decimals
