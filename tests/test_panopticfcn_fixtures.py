"""PanopticFCN (FPN and FaPN necks) reproduces the official code on the ``reference/panopticfcn`` fixtures.

Manifests: every official key maps to one native key with its shape, parameter counts exact (41,442,015 FaPN,
36,999,511 plain). Minis: every stage (features, FAM, position-head offsets, logits, kernels, per-level candidates,
fusion, rescoring, instances, ``sem_seg``, panoptic) against the official outputs, with the README's tolerances:
features/logits 1e-4 relative, centre scores 1e-5, instance scores 1e-3, decisions as sets, masks and panoptic ids
within a few pixels, ``segments_info`` equal (score 1e-3, area ± 50 px).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fapn_core.checkpoints import load_state_dict
from fapn_core.introspect import CaptureHooks
from fapn_core.models.deform import ModulatedDeformConv
from fapn_core.models.panopticfcn import PanopticFCNOptions, panopticfcn_config
from fapn_core.models.panopticfcn.convert import (
    config_from_detectron2, export_official, infer_config, is_panopticfcn_state_dict, official_to_native,
)
from fapn_core.models.panopticfcn.generators import fuse_stuff_kernels, fuse_thing_kernels
from fapn_core.models.panopticfcn.inference import ImageHeads, merge_things, select_levels
from fapn_core.models.panopticfcn.postprocess import rescore
from fapn_core.models.zoo import build_from_config, count_parameters

RELEASES = {
    "PanopticFCN-R50+FaPN-1x-FAST": ("fapn", 41_442_015, 7),
    "PanopticFCN-R50-600+FaPN-3x-FAST": ("fapn", 41_442_015, 5),
    "PanopticFCN-R50-1x-FAST": ("fpn", 36_999_511, 7),
    "PanopticFCN-R50-600-3x-FAST": ("fpn", 36_999_511, 5),
}
# the manifests' prefixes → native prefixes
PREFIXES = {
    "backbone.bottom_up": "backbone.", "backbone.top_block": "top_block.", "semantic_fpn": "semantic_fpn.",
    "position_head": "position_head.", "position_head.out_inst": "position_head.out_inst.",
    "position_head.out_sem": "position_head.out_sem.", "kernel_head": "kernel_head.",
    "kernel_head.out_conv": "kernel_head.out_conv.", "feature_encoder": "feature_encoder.",
    "thing_generator": "thing_generator.", "stuff_generator": "stuff_generator.",
}


@pytest.fixture(scope="module")
def pfcn_dir(reference_dir) -> Path:
    d = reference_dir / "panopticfcn"
    if not (d / "README.md").is_file():
        pytest.skip(f"PanopticFCN reference fixtures not found at {d}")
    return d


def _zeros_from_manifest(data: dict) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(shape) for k, shape, _ in data["state_dict"]}


# ------------------------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_manifest_maps_one_to_one_with_exact_counts(pfcn_dir, release):
    neck, total, _ = RELEASES[release]
    data = json.loads((pfcn_dir / f"keys_{release}.json").read_text())
    model = build_from_config(panopticfcn_config(neck))
    native = model.state_dict()
    mapped = {official_to_native(k): tuple(shape) for k, shape, _ in data["state_dict"]}
    assert len(mapped) == len(data["state_dict"]) == data["num_state_dict_entries"]
    assert sorted(set(mapped) ^ set(native)) == []
    assert {k: tuple(native[k].shape) for k in mapped} == mapped
    assert count_parameters(model) == data["num_params"] == total
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == data["num_params_trainable_requires_grad"]  # FREEZE_AT 2
    by_prefix = data["num_params_by_prefix"]
    for theirs, ours in PREFIXES.items():
        assert count_parameters(model, ours) == by_prefix[theirs], theirs
    neck_total = by_prefix["backbone (neck = backbone minus backbone.bottom_up)"]
    assert count_parameters(model, "neck.") + count_parameters(model, "top_block.") == neck_total
    params = dict(model.named_parameters())
    assert sum(b.numel() for k, b in native.items() if k not in params) == data["num_state_dict_buffer_elements"]
    # and back: the native state dict exported under official names is the manifest, key for key
    assert set(export_official(native, neck)) == {k for k, _, _ in data["state_dict"]}
    assert is_panopticfcn_state_dict(mapped) and is_panopticfcn_state_dict(k for k, _, _ in data["state_dict"])


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_config_dump_and_keys_build_the_release(pfcn_dir, release):
    neck, total, pos_num = RELEASES[release]
    raw = yaml.safe_load((pfcn_dir / f"config_{release}.yaml").read_text())
    cfg, opts = config_from_detectron2(raw, neck, ValueError)
    assert (cfg.neck, cfg.depth, cfg.num_classes, cfg.sem_seg_num_classes, cfg.freeze_at) == (neck, 50, 80, 54, 2)
    assert cfg.pixel_mean == (123.675, 116.28, 103.53) and cfg.input_format == "BGR"  # the official quirk
    assert (opts["center_thresh"], opts["stuff_thresh"], opts["pos_num"]) == (0.2, 0.1, pos_num)
    assert cfg.panoptic_instances_score_thresh == 0.2 and cfg.panoptic_stuff_area_limit == 4096
    assert count_parameters(build_from_config(cfg.replace(**opts))) == total
    # the keys alone give the same network (the neck comes from them: the config cannot tell)
    data = json.loads((pfcn_dir / f"keys_{release}.json").read_text())
    native = {official_to_native(k): v for k, v in _zeros_from_manifest(data).items()}
    cfg2, opts2 = infer_config(native, lambda k: tuple(native[k].shape), ValueError)
    for field in ("neck", "depth", "num_classes", "sem_seg_num_classes", "neck_channels", "head_conv_dims",
                  "width_per_group", "res2_out_channels", "stem_out_channels", "backbone_norm"):
        assert getattr(cfg2, field) == getattr(cfg, field), field
    assert {k: opts[k] for k in opts2} == opts2


def test_config_needs_the_neck_and_refuses_unsupported_settings(pfcn_dir):
    raw = yaml.safe_load((pfcn_dir / "config_PanopticFCN-R50-1x-FAST.yaml").read_text())
    with pytest.raises(ValueError, match="neck"):
        config_from_detectron2(raw, "", ValueError)
    raw["MODEL"]["POSITION_HEAD"]["STUFF"]["WITH_THING"] = False
    with pytest.raises(ValueError, match="WITH_THING"):
        config_from_detectron2(raw, "fpn", ValueError)


# ------------------------------------------------------------------------------------------- mini fixtures
def _build_mini(pfcn_dir: Path, neck: str):
    ref = torch.load(pfcn_dir / f"mini_{neck}_panopticfcn.pt", map_location="cpu", weights_only=True)
    raw = yaml.safe_load((pfcn_dir / f"mini_{neck}_panopticfcn_config.yaml").read_text())
    cfg, opts = config_from_detectron2(raw, neck, ValueError)
    model = build_from_config(cfg.replace(**opts)).eval()
    report = load_state_dict(model, {official_to_native(k): v for k, v in ref["state_dict"].items()})
    assert report.ok and report.loaded == len(ref["state_dict"])
    return model, ref


@pytest.fixture(scope="module", params=["fpn", "fapn"])
def mini(request, pfcn_dir):
    neck = request.param
    model, ref = _build_mini(pfcn_dir, neck)
    image = ref["image"].flip(0)  # the fixture is BGR; the API takes RGB
    offsets: list[torch.Tensor] = []
    hooks = [getattr(model.position_head, f"conv{k}").conv_offset_mask.register_forward_hook(
        lambda m, i, o: offsets.append(o)) for k in (1, 2, 3)]
    out_size = (ref["height"], ref["width"])
    with torch.no_grad():
        x, sizes = model.preprocess([image])
        feats = model.pyramid(x)
        encode, centres, regions, kernels = model.heads(feats)
    for h in hooks:
        h.remove()
    heads = ImageHeads([c[0] for c in centres], [r[0] for r in regions], [k[0] for k in kernels], encode[0])
    with torch.no_grad():
        sels = select_levels(heads, model.options)
        th_kernels, th_classes, th_scores, table = merge_things(sels)
        meta = model.thing_generator.embed(th_kernels)
        fusion = fuse_thing_kernels(meta, th_classes, th_scores, thresh=model.options.similar_thresh)
        thing_logits = model.thing_generator.mask_logits(fusion.meta, encode[0])
        st_meta_in = model.stuff_generator.embed(torch.cat([s.stuff_kernels for s in sels]))
        st = fuse_stuff_kernels(st_meta_in, torch.cat([s.stuff_classes for s in sels]),
                                torch.cat([s.stuff_scores for s in sels]))
        stuff_logits = model.stuff_generator.mask_logits(st[0], encode[0])
    with CaptureHooks(model, ("offsets", "attention")) as cap, model.capture_maps() as maps:
        result = model.predict(image, output_size=out_size)
    return dict(neck=neck, model=model, ref=ref, x=x, sizes=sizes, feats=feats, encode=encode, centres=centres,
                regions=regions, kernels=kernels, offsets=offsets, sels=sels, table=table, meta=meta, fusion=fusion,
                thing_logits=thing_logits, st_meta_in=st_meta_in, stuff=st, stuff_logits=stuff_logits,
                result=result, caps=cap.captures(tuple(ref["image_size"]))[0], maps=maps[0])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)) if b.numel() else 0.0


def _ref_candidates(ref: dict) -> list[tuple[int, int, int]]:
    """(level, class, cell) of the official thing candidates in their score-sorted order."""
    rows = []
    for li, name in enumerate(ref["levels"]):
        lv = ref["per_level"][name]
        rows += [(float(s), li, int(c), int(i)) for s, c, i in zip(lv["thing_scores"], lv["thing_classes"],
                                                                    lv["thing_index"])]
    rows.sort(key=lambda r: -r[0])
    fused = ref["thing_fusion"]
    assert [r[2] for r in rows] == fused["classes_in"].tolist()  # the reconstruction is the official order
    torch.testing.assert_close(torch.tensor([r[0] for r in rows]), fused["scores_in"], atol=0, rtol=0)
    return [r[1:] for r in rows]


def _ours_candidates(mini) -> list[tuple[int, int, int]]:
    widths = [s.peaks.shape[-1] for s in mini["sels"]]
    return [(int(r[0]), int(r[1]), int(r[2]) * widths[int(r[0])] + int(r[3])) for r in mini["table"]]


def test_input_normalisation_and_padding(mini):
    ref = mini["ref"]
    assert list(mini["x"].shape[-2:]) == ref["padded_size"] and list(mini["sizes"][0]) == ref["image_size"]
    h, w = ref["image_size"]
    expected = ref["image"] - ref["pixel_mean"].view(3, 1, 1)  # RGB means on the BGR image, as stored
    torch.testing.assert_close(mini["x"][0, :, :h, :w], expected, atol=0, rtol=0)
    assert mini["x"][0, :, h:].abs().max() == 0 and mini["x"][0, :, :, w:].abs().max() == 0


def test_pyramid_features_p2_to_p7(mini):
    for k, v in mini["ref"]["features"].items():
        assert _rel(mini["feats"][k], v) <= 1e-4, k


def test_fam_captures(mini):
    if mini["neck"] != "fapn":
        assert not mini["caps"].has_fam and not mini["caps"].fam
        return
    ref, caps = mini["ref"], mini["caps"]
    h, w = ref["image_size"]
    for level, entry in ref["fam"].items():
        stride = 2 ** int(level[1:])
        raw = entry["offset_mask_raw"][..., : -(-h // stride), : -(-w // stride)]
        offset, mask = ModulatedDeformConv.split_offset_mask(raw)
        fam = caps.fam[level]
        torch.testing.assert_close(torch.from_numpy(fam.offsets), offset[0].reshape(fam.offsets.shape),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.from_numpy(fam.mask), mask[0].reshape(fam.mask.shape), atol=1e-4, rtol=0)
        torch.testing.assert_close(torch.from_numpy(caps.fsm[level].attention), entry["fsm_attention"].flatten(),
                                   atol=1e-5, rtol=0)


def test_position_head_offsets_logits_kernels_and_encoder(mini):
    ref = mini["ref"]
    assert _rel(mini["encode"], ref["encode_feat"]) <= 1e-4
    ph = ref["position_head"]
    for li, name in enumerate(ref["levels"]):
        for k in range(3):  # the hooks saw conv1..3 at p3, then at p4, ...
            assert _rel(mini["offsets"][3 * li + k], ph["offset_mask_raw"][name][k]) <= 1e-4, (name, k)
        assert _rel(mini["centres"][li], ph["center_logits"][name]) <= 1e-4, name
        assert _rel(mini["regions"][li], ph["region_logits"][name]) <= 1e-4, name
        assert _rel(mini["kernels"][li], ref["kernel_head"][name]) <= 1e-4, name


def test_per_level_selection(mini):
    ref = mini["ref"]
    for sel, name in zip(mini["sels"], ref["levels"]):
        lv = ref["per_level"][name]
        torch.testing.assert_close(sel.peaks, lv["centre_map"][0], atol=1e-5, rtol=0)
        assert sel.topk_scores.numel() == lv["K"]
        torch.testing.assert_close(sel.topk_scores, lv["topk_scores"][0], atol=1e-5, rtol=0)
        cut = float(lv["topk_scores"].min()) + 1e-4  # entries clear of the top-k cut, compared as sets
        ours = {(int(c), int(i)) for s, c, i in zip(sel.topk_scores, sel.topk_classes, sel.topk_cells) if s > cut}
        theirs = {(int(c), int(i)) for s, c, i in zip(lv["topk_scores"][0], lv["topk_clses"][0], lv["topk_inds"][0])
                  if s > cut}
        assert ours == theirs, name
        w = sel.peaks.shape[-1]
        assert torch.equal(lv["topk_ys"][0], torch.div(lv["topk_inds"][0], w, rounding_mode="floor").float())
        # thing candidates (same top-k order: scores differ by ≥ 5e-3 here), their scores and kernels
        assert list(zip(sel.thing_classes.tolist(), sel.thing_cells.tolist())) == list(
            zip(lv["thing_classes"].tolist(), lv["thing_index"].tolist())), name
        torch.testing.assert_close(sel.thing_scores, lv["thing_scores"], atol=1e-5, rtol=0)
        assert _rel(sel.thing_kernels, lv["thing_kernels"][0, :, :, 0].T) <= 1e-4
        # stuff candidates: classes ascending, scores, kernels pooled over the whole level
        assert sel.stuff_classes.tolist() == lv["stuff_classes"].tolist(), name
        torch.testing.assert_close(sel.stuff_scores, lv["stuff_scores"], atol=1e-5, rtol=0)
        assert _rel(sel.stuff_kernels, lv["stuff_kernels"][:, :, 0, 0]) <= 1e-4


def test_thing_kernel_fusion(mini):
    ref, fusion = mini["ref"], mini["fusion"]
    theirs = _ref_candidates(ref)
    ours = _ours_candidates(mini)
    assert sorted(ours) == sorted(theirs)
    perm = torch.tensor([ours.index(c) for c in theirs])  # ours[perm[j]] is their candidate j
    f = ref["thing_fusion"]
    assert _rel(mini["meta"][perm], f["meta_weight_in"]) <= 1e-4
    torch.testing.assert_close(fusion.similarity[perm][:, perm], f["similarity"], atol=1e-5, rtol=0)
    if torch.equal(perm, torch.arange(len(perm))):  # the upper-triangular decisions depend on the order
        assert torch.equal(fusion.label_matrix, f["label_matrix"])
        assert torch.equal(fusion.keep, f["keep"]) and torch.equal(fusion.assign, f["assign_matrix"])
    # one cell that peaks in two classes carries one kernel twice (cosine 1): class-specific fusion keeps both
    cells = [(lvl, cell) for lvl, _, cell in ours]
    for i, c in enumerate(cells):
        if cells.count(c) > 1:
            assert bool(fusion.keep[i]) and fusion.similarity[i, cells.index(c)] > 0.999
    kept_ours = [ours[i] for i in fusion.keep.nonzero()[:, 0].tolist()]
    kept_theirs = [theirs[i] for i in f["keep"].nonzero()[:, 0].tolist()]
    assert sorted(kept_ours) == sorted(kept_theirs)
    order = torch.tensor([kept_ours.index(c) for c in kept_theirs])
    assert _rel(fusion.meta[order], f["meta_weight_out"]) <= 1e-4
    assert torch.equal(fusion.classes[order], f["classes_out"])
    torch.testing.assert_close(fusion.scores[order], f["scores_out"], atol=1e-5, rtol=0)
    assert _rel(mini["thing_logits"][order], ref["thing_logits"][0]) <= 1e-4
    # rescoring on the padded stride-4 map: seg_score, mask areas (± the cells at the 0.4 tie), scores
    probs, area, seg_score, rescored = rescore(mini["thing_logits"], fusion.scores, 0.4)
    r = ref["rescoring"]
    assert (area[order] - r["mask_area_stride4"]).abs().max() <= 1
    torch.testing.assert_close(seg_score[order], r["seg_score"], atol=1e-3, rtol=0)
    torch.testing.assert_close(rescored[order], r["scores_rescored"], atol=1e-3, rtol=0)
    assert (rescored[area == 0] == 0).all()  # an empty stride-4 mask zeroes the score (dropped by the 0.05 floor)


def test_stuff_fusion_and_logits(mini):
    ref = mini["ref"]
    f = ref["stuff_fusion"]
    meta, classes, scores = mini["stuff"]
    assert _rel(mini["st_meta_in"], f["meta_weight_in"][:, :, 0, 0]) <= 1e-4
    assert torch.equal(classes, f["classes_out"])
    torch.testing.assert_close(scores, f["scores_out"], atol=1e-5, rtol=0)
    assert _rel(mini["stuff_logits"], ref["stuff_logits"][0]) <= 1e-4


def test_instances(mini):
    ref, res = mini["ref"], mini["result"]
    inst = ref["instances"]
    assert res.image_size == (ref["height"], ref["width"])
    assert len(res) == len(inst["scores"])
    assert res.classes.tolist() == inst["pred_classes"].tolist()  # sorted by score; gaps ≥ 2.5e-3
    torch.testing.assert_close(res.scores, inst["scores"], atol=1e-3, rtol=0)
    flips = (res.masks != inst["pred_masks"]).flatten(1).sum(1)
    assert int(flips.max()) <= 16, flips.tolist()  # only pixels at the 0.4 threshold may flip
    torch.testing.assert_close(res.boxes, inst["pred_boxes"], atol=1.0, rtol=0)
    assert res.masks.dtype == torch.bool and res.classes.dtype == torch.int64


def test_semantic_and_panoptic_outputs(mini):
    ref, res = mini["ref"], mini["result"]
    torch.testing.assert_close(res.sem_seg, ref["sem_seg"], atol=1e-4, rtol=0)
    assert int((res.panoptic_seg != ref["panoptic_seg"]).sum()) <= 64
    assert res.panoptic_seg.dtype == torch.int32
    ours, theirs = res.segments_info, ref["segments_info"]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert {k: a[k] for k in ("id", "isthing", "category_id")} == {k: b[k] for k in ("id", "isthing",
                                                                                          "category_id")}
        if b["isthing"]:
            assert a["instance_id"] == b["instance_id"] and abs(a["score"] - b["score"]) <= 1e-3
        else:
            assert abs(a["area"] - b["area"]) <= 50


def test_captured_maps_show_the_kept_peaks_and_regions(mini):
    ref, maps = mini["ref"], mini["maps"]
    h, w = ref["image_size"]
    assert list(maps.levels) == ref["levels"]
    for name, lv in maps.levels.items():
        r = ref["per_level"][name]
        hh, ww = -(-h // lv.stride), -(-w // lv.stride)
        assert lv.centres.shape == (ref["meta"]["thing_classes"], hh, ww)
        torch.testing.assert_close(torch.from_numpy(lv.nms), r["centre_map"][0, :, :hh, :ww], atol=1e-5, rtol=0)
        full_w = r["centre_map"].shape[-1]
        assert sorted((int(c), int(y) * full_w + int(x)) for c, y, x, _ in lv.peaks) == sorted(
            zip(r["thing_classes"].tolist(), r["thing_index"].tolist()))
        assert lv.regions.shape[0] == ref["meta"]["stuff_channels"]
        assert lv.stuff[:, 0].astype(int).tolist() == r["stuff_classes"].tolist()
        assert (lv.peaks_image_xy() >= 0).all()
    assert maps.candidates.shape[0] == len(ref["thing_fusion"]["classes_in"])
    assert maps.fusion_keep.all() == bool(ref["thing_fusion"]["keep"].all())


@pytest.mark.parametrize("neck", ["fpn", "fapn"])
def test_mini_config_from_keys_alone_equals_the_dump(pfcn_dir, neck):
    """A checkpoint without its config dump builds the same network (neck and sizes from the keys)."""
    ref = torch.load(pfcn_dir / f"mini_{neck}_panopticfcn.pt", map_location="cpu", weights_only=True)
    native = {official_to_native(k): v for k, v in ref["state_dict"].items()}
    cfg, opts = infer_config(native, lambda k: tuple(native[k].shape), ValueError)
    raw = yaml.safe_load((pfcn_dir / f"mini_{neck}_panopticfcn_config.yaml").read_text())
    cfg_dump, opts_dump = config_from_detectron2(raw, neck, ValueError)
    assert cfg == cfg_dump
    assert PanopticFCNOptions.from_config(None, **opts) == PanopticFCNOptions.from_config(None, **opts_dump)


def test_official_checkpoint_through_convert_and_load_checkpoint(pfcn_dir, tmp_path):
    """``fapn convert`` → ``load_checkpoint`` → ``predict`` on the FaPN mini (the family wired into
    ``fapn_core.checkpoints``: its key rules, ``infer_config`` and the zoo's ``panopticfcn`` head)."""
    from fapn_core import checkpoints

    assert checkpoints.detectron2_to_native("backbone.top_block.p6.weight") == "top_block.p6.weight"
    ref = torch.load(pfcn_dir / "mini_fapn_panopticfcn.pt", map_location="cpu", weights_only=True)
    src = tmp_path / "mini_fapn_panopticfcn.pth"
    torch.save({"model": ref["state_dict"]}, src)
    dst, report = checkpoints.convert(src, tmp_path / "mini.safetensors")
    assert report.ok
    model, card = checkpoints.load_checkpoint(dst)
    assert card["task"] == "panoptic" and model.task == "panoptic"
    res = model.predict(ref["image"].flip(0), output_size=(ref["height"], ref["width"]))
    assert [(s["id"], s["isthing"], s["category_id"]) for s in res.segments_info] == [
        (s["id"], s["isthing"], s["category_id"]) for s in ref["segments_info"]]
    torch.testing.assert_close(res.sem_seg, ref["sem_seg"], atol=1e-4, rtol=0)
