"""MaskFormer (plain and FaPN pixel decoders, R50/R101/Swin) reproduces the official MaskFormer + FaPN-full code on
the ``reference/maskformer`` fixtures.

Tolerances are the fixtures' README's: features, decoder levels, FAM captures, ``mask_features``, ``src_proj``
5e-5; ``pos`` 1e-6; ``hs``, ``mask_embed``, ``pred_logits`` 1e-4; ``aux_pred_logits`` 2e-4; ``pred_masks`` /
``aux_pred_masks`` 2e-4 / 4e-4; ``sem_seg`` 5e-5; argmax labels equal except where the reference top-2 gap is
below 1e-4; Swin's shift masks exactly.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fapn_core.checkpoints import (
    CheckpointError, config_from_detectron2, convert, detectron2_to_native, export_detectron2_state_dict,
    import_official, infer_config, load_checkpoint, load_state_dict, native_to_detectron2,
)
from fapn_core.introspect import predict_with_captures
from fapn_core.models import dcn_ext
from fapn_core.models.deform import dcn_impl
from fapn_core.models.swin import window_reverse
from fapn_core.models.zoo import build_from_config, build_model, count_parameters, get_model_config

MANIFESTS = {
    "maskformer_swin_large+FaPN_IN21k_384_bs16_160k_res640": "fapn_swinl_maskformer",
    "maskformer_swin_large_IN21k_384_bs16_160k_res640": "fpn_swinl_maskformer",
    "maskformer_R101+FaPN_bs32_60k": "fapn_r101_maskformer",
    "maskformer_R101_bs32_60k": "fpn_r101_maskformer",
    "maskformer_R50+FaPN_bs16_160k": "fapn_r50_maskformer",
    "maskformer_R50_bs16_160k": "fpn_r50_maskformer",
}
# the issue's / README's totals
PARAMS = {"fapn_swinl_maskformer": 215_232_723, "fpn_swinl_maskformer": 211_575_627,
          "fapn_r101_maskformer": 63_857_140, "fpn_r101_maskformer": 60_200_044,
          "fapn_r50_maskformer": 44_911_839, "fpn_r50_maskformer": 41_254_743}
MINIS = {"fapn": "fapn_r50_maskformer", "plain": "fpn_r50_maskformer", "fapn_swin": "fapn_swinl_maskformer"}
TOL = {"features": 5e-5, "decoder": 5e-5, "fam": 5e-5, "mask_features": 5e-5, "src_proj": 5e-5, "pos": 1e-6,
       "hs": 1e-4, "mask_embed": 1e-4, "pred_logits": 1e-4, "aux_pred_logits": 2e-4, "pred_masks": 2e-4,
       "aux_pred_masks": 4e-4, "sem_seg": 5e-5, "swin_blocks": 5e-5}


@pytest.fixture(scope="module")
def mf_dir(reference_dir) -> Path:
    d = reference_dir / "maskformer"
    if not (d / "README.md").is_file():
        pytest.skip(f"MaskFormer reference fixtures not found at {d}")
    return d


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("config,name", sorted(MANIFESTS.items()))
def test_manifest_maps_one_to_one_with_exact_counts(mf_dir, config, name):
    data = json.loads((mf_dir / f"keys_{config}.json").read_text())
    model = build_model(name)
    native = model.state_dict()
    official = [k for k, _, _ in data["state_dict"]]
    mapped = {detectron2_to_native(k): (tuple(shape), dtype) for k, shape, dtype in data["state_dict"]}
    assert len(mapped) == len(official) == data["num_state_dict_entries"], "key mapping must be one-to-one"
    assert sorted(set(mapped) ^ set(native)) == []
    assert {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in native.items()} == mapped
    # same order, and the inverse mapping gives the official keys back
    assert [native_to_detectron2(k, model.config.neck, "maskformer") for k in native] == official
    assert count_parameters(model) == data["num_params"] == PARAMS[name]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == data["num_params_trainable_requires_grad"]
    by_prefix = data["num_params_by_prefix"]
    for theirs, ours in (("backbone", "backbone."), ("sem_seg_head.pixel_decoder", "neck."),
                         ("sem_seg_head.predictor", "head.")):
        assert count_parameters(model, ours) == by_prefix[theirs], theirs
    for theirs, n in by_prefix.items():
        if theirs.startswith("sem_seg_head.predictor.") and theirs != "sem_seg_head.predictor.pe_layer":
            assert count_parameters(model, "head." + theirs.removeprefix("sem_seg_head.predictor.") + ".") == n, theirs
    all_params = {k for k, _ in model.named_parameters(remove_duplicate=False)}
    buffers = sum(v.numel() for k, v in native.items() if k not in all_params)
    assert buffers == data["num_state_dict_buffer_elements"]
    assert sum(v.numel() for v in native.values()) == data["num_state_dict_elements_counting_aliases_twice"]
    # the shared GroupNorm: one module (two keys, one parameter), canonical name align_N.offset.norm
    aliases = data["shared_parameter_aliases"]
    assert (name.startswith("fapn") and len(aliases) == 6) or (name.startswith("fpn") and aliases == [])
    names = dict(model.named_parameters())
    for alias, canonical in aliases:
        a, c = detectron2_to_native(alias), detectron2_to_native(canonical)
        assert c in names and a not in names
        assert native[a].data_ptr() == native[c].data_ptr()
    assert torch.equal(native["criterion.empty_weight"][:-1], torch.ones(model.num_classes))
    assert float(native["criterion.empty_weight"][-1]) == pytest.approx(0.1)


@pytest.mark.parametrize("config,name", sorted(MANIFESTS.items()))
def test_config_dump_builds_the_registered_model(mf_dir, config, name):
    cfg = config_from_detectron2(mf_dir / f"config_{config}.yaml")
    assert cfg.name == name
    assert cfg == get_model_config(name)


# ------------------------------------------------------------------------------------------------ mini models
def _load_mini(mf_dir: Path, kind: str):
    ref = torch.load(mf_dir / f"mini_{kind}_maskformer.pt", map_location="cpu", weights_only=True)
    cfg = config_from_detectron2(mf_dir / f"mini_{kind}_maskformer_config.yaml")
    model = build_from_config(cfg).eval()
    report = load_state_dict(model, {detectron2_to_native(k): v for k, v in ref["state_dict"].items()})
    assert report.ok and report.loaded == len(ref["state_dict"])
    return ref, model


def _run_with_captures(model, ref) -> dict[str, torch.Tensor]:
    """One forward of the fixture image with hooks on every stage the fixture saved."""
    got: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda m, i, o: got.__setitem__(name, o.clone() if isinstance(o, torch.Tensor) else o)

    hooks = [model.backbone.register_forward_hook(lambda m, i, o: got.update(
        {f"features.{k}": v for k, v in o.items()}))]
    dec = model.neck
    hooks.append(dec.layer_4.register_forward_hook(keep("decoder.layer_4")))
    for n in (1, 2, 3):
        hooks.append(getattr(dec, f"adapter_{n}").register_forward_hook(keep(f"decoder.adapter_{n}")))
        hooks.append(getattr(dec, f"layer_{n}").register_forward_hook(keep(f"decoder.layer_{n}")))
        align = getattr(dec, f"align_{n}", None)
        if align is not None:
            hooks.append(align.offset.register_forward_hook(keep(f"fam.align_{n}.offset_feat")))
            hooks.append(align.dcn.conv_offset_mask.register_forward_hook(keep(f"fam.align_{n}.offset_mask_raw")))
            hooks.append(align.upsample.register_forward_hook(keep(f"fam.align_{n}.feat_up")))
            hooks.append(align.dcn.register_forward_hook(keep(f"fam.align_{n}.dcn_out")))
            hooks.append(align.register_forward_hook(keep(f"fam.align_{n}.fam_out")))
    hooks.append(dec.mask_features.register_forward_hook(keep("mask_features")))
    head = model.head
    hooks.append(head.pe_layer.register_forward_hook(keep("predictor.pos")))
    hooks.append(head.input_proj.register_forward_hook(keep("predictor.src_proj")))
    hooks.append(head.transformer.register_forward_hook(lambda m, i, o: got.__setitem__("predictor.hs", o[0])))
    hooks.append(head.mask_embed.register_forward_hook(keep("predictor.mask_embed")))
    try:
        with torch.no_grad():
            sem_seg = model(ref["image"][None])[0]  # first: the run with deep-supervision outputs overwrites hooks
            out = model.forward_outputs(model.pad(model.normalize(ref["image"][None])), with_aux=True)
    finally:
        for h in hooks:
            h.remove()
    got["sem_seg"] = sem_seg
    got["predictor.pred_logits"] = out["pred_logits"]
    got["predictor.pred_masks"] = out["pred_masks"]
    got["predictor.aux_pred_logits"] = torch.stack([a["pred_logits"] for a in out["aux_outputs"]])
    got["predictor.aux_pred_masks"] = torch.stack([a["pred_masks"] for a in out["aux_outputs"]])
    return got


def _flatten(ref: dict) -> dict[str, torch.Tensor]:
    flat = {}
    for group in ("features", "decoder", "fam", "predictor"):
        for k, v in ref[group].items():
            if isinstance(v, dict):
                flat.update({f"{group}.{k}.{kk}": vv for kk, vv in v.items()})
            else:
                flat[f"{group}.{k}"] = v
    flat["mask_features"] = ref["mask_features"]
    flat["sem_seg"] = ref["sem_seg"]
    return flat


def _tolerance(key: str) -> float:
    last = key.split(".")[-1]
    return TOL.get(last, TOL.get(key.split(".")[0]))


def _assert_labels_equal_except_ties(ours: torch.Tensor, ref: torch.Tensor, gap: float = 1e-4) -> None:
    top2 = ref.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) >= gap
    assert torch.equal(ours.argmax(0)[decided], ref.argmax(0)[decided])


_IMPLS = ["reference", "fast", pytest.param("cpp", marks=pytest.mark.skipif(
    dcn_ext.load() is None, reason="compiled DCN not built here (scripts/env.sh builds it: `fapn build-ext`)"))]


@pytest.mark.parametrize("kind", ["fapn", "fapn_swin"])
@pytest.mark.parametrize("impl", _IMPLS)
def test_mini_fapn_model_matches_every_official_stage(mf_dir, kind, impl):
    _check_mini(mf_dir, kind, impl)


def test_mini_plain_model_matches_every_official_stage(mf_dir):
    _check_mini(mf_dir, "plain", "reference")


def _check_mini(mf_dir: Path, kind: str, impl: str) -> None:
    ref, model = _load_mini(mf_dir, kind)
    assert model.config.name == MINIS[kind].replace("swinl", "swin")
    with dcn_impl(impl):
        got = _run_with_captures(model, ref)
    expected = _flatten(ref)
    assert (len([k for k in expected if k.startswith("fam.")]) == 12) == kind.startswith("fapn")
    errors = {}
    for key, want in expected.items():
        err = _maxabs(got[key], want)
        errors[key] = err
        assert err <= _tolerance(key), (key, err)
    _assert_labels_equal_except_ties(got["sem_seg"], ref["sem_seg"])
    # the dropped captures' identities: the FAM's inputs and output
    if kind.startswith("fapn"):
        for n in (1, 2, 3):
            fam_out = torch.relu(got[f"fam.align_{n}.dcn_out"]) + got[f"decoder.adapter_{n}"]
            assert _maxabs(got[f"fam.align_{n}.fam_out"], fam_out) <= 1e-6


def test_mini_swin_blocks_pad_then_roll(mf_dir):
    """Block 1 (shifted) of every Swin stage: padded-then-rolled windows, shift masks (exact), attention output."""
    ref, model = _load_mini(mf_dir, "fapn_swin")
    got: dict[str, torch.Tensor] = {}
    hooks = []
    for i, stage in enumerate(model.backbone.layers):
        blk = stage.blocks[1]
        ws = blk.window_size
        key = f"layers.{i}.blocks.1"

        def pre(m, args, key=key):
            x, (h, w) = args[0], args[1]
            got[f"{key}.input"] = x.view(1, h, w, -1).clone()
            got[f"{key}.hw"] = torch.tensor([h, w])

        def attn_hook(m, args, kwargs, out, key=key, ws=ws):
            windows, mask = args[0], kwargs["mask"]
            h, w = got[f"{key}.hw"].tolist()
            hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
            got[f"{key}.shifted_x"] = window_reverse(windows.view(-1, ws, ws, windows.shape[-1]), ws, hp, wp)
            got[f"{key}.attn_out"] = window_reverse(out.view(-1, ws, ws, out.shape[-1]), ws, hp, wp)
            got[f"{key}.attn_mask"] = mask.clone()

        def post(m, args, out, key=key):
            h, w = got[f"{key}.hw"].tolist()
            got[f"{key}.output"] = out.view(1, h, w, -1).clone()

        hooks += [blk.register_forward_pre_hook(pre), blk.attn.register_forward_hook(attn_hook, with_kwargs=True),
                  blk.register_forward_hook(post)]
    with torch.no_grad():
        model.backbone(model.pad(model.normalize(ref["image"][None])))
    for h in hooks:
        h.remove()
    for key, want in ((f"{blk}.{k}", v) for blk, d in ref["swin_blocks"].items() for k, v in d.items()):
        if key.endswith("attn_mask"):
            assert torch.equal(got[key], want), key
        else:
            assert _maxabs(got[key], want) <= TOL["swin_blocks"], key


def test_mini_plain_and_fapn_share_the_transformer(mf_dir):
    """The transformer sees only the backbone's res5: hs/pred_logits are the same in both minis, masks differ."""
    outs = {}
    for kind in ("fapn", "plain"):
        ref, model = _load_mini(mf_dir, kind)
        with torch.no_grad():
            outs[kind] = model.forward_outputs(model.pad(model.normalize(ref["image"][None])))
    assert torch.equal(outs["fapn"]["pred_logits"], outs["plain"]["pred_logits"])
    assert not torch.allclose(outs["fapn"]["pred_masks"], outs["plain"]["pred_masks"], atol=1e-2)


# ------------------------------------------------------------------------------------------- through the files
@pytest.mark.parametrize("kind", ["fapn", "fapn_swin"])
def test_convert_load_predict_and_captures(mf_dir, kind, tmp_path):
    """``fapn convert`` → ``load_checkpoint`` → ``predict`` / ``predict_with_captures`` on the official weights."""
    ref = torch.load(mf_dir / f"mini_{kind}_maskformer.pt", map_location="cpu", weights_only=True)
    src = tmp_path / "model_final.pth"
    torch.save({"model": dict(ref["state_dict"]), "iteration": 1}, src)  # plain dict: no _metadata needed here
    dst, report = convert(src, tmp_path / "mini.safetensors", config=mf_dir / f"mini_{kind}_maskformer_config.yaml")
    assert report.ok
    model, card = load_checkpoint(dst)
    assert card["task"] == "semantic" and card["config"]["head"] == "maskformer"
    assert model.semantic_output == "scores"
    sem = model.predict(ref["image"])
    assert _maxabs(sem, ref["sem_seg"]) <= TOL["sem_seg"]
    image = ref["image"].permute(1, 2, 0).to(torch.uint8).numpy()
    assert np.array_equal(image.astype(np.float32), ref["image"].permute(1, 2, 0).numpy())
    pred = predict_with_captures(model, image, ("offsets", "fam_features", "features", "queries"))
    assert pred.task == "semantic" and pred.logits.shape == tuple(ref["sem_seg"].shape)
    assert np.abs(pred.logits - ref["sem_seg"].numpy()).max() <= TOL["sem_seg"]
    probs = ref["sem_seg"] / ref["sem_seg"].sum(0, keepdim=True)
    assert np.abs(pred.probabilities_max - probs.max(0).values.numpy()).max() < 1e-5
    caps = pred.captures
    assert caps.has_fam and not caps.has_fsm and sorted(caps.fam) == ["p2", "p3", "p4"]
    for n, level in ((1, "p2"), (2, "p3"), (3, "p4")):
        fam = caps.fam[level]
        g, h, w = fam.mask.shape[0], *fam.mask.shape[-2:]  # the image's valid region (the Swin mini is padded)
        raw = ref["fam"][f"align_{n}"]["offset_mask_raw"][0][:, :h, :w]
        assert fam.stride == 2 ** (n + 1) and g == 8
        assert np.abs(fam.offsets - raw[:144].reshape(g, 9, 2, h, w).numpy()).max() <= TOL["fam"]
        assert np.abs(fam.mask - torch.sigmoid(raw[144:]).reshape(g, 9, h, w).numpy()).max() <= TOL["fam"]
        assert np.abs(fam.feat_up - ref["fam"][f"align_{n}"]["feat_up"][0, :, :h, :w].numpy()).max() <= TOL["fam"]
        assert np.abs(fam.lateral - ref["decoder"][f"adapter_{n}"][0, :, :h, :w].numpy()).max() <= TOL["fam"]
        assert np.abs(caps.features[level] - ref["decoder"][f"layer_{n}"][0, :, :h, :w].numpy()).max() <= TOL["decoder"]
    q = caps.queries
    assert q is not None and q.num_queries == 10 and q.stride == 4
    want = torch.softmax(ref["predictor"]["pred_logits"][0], -1).numpy()
    assert np.abs(q.class_probs - want).max() < 1e-5
    h, w = q.mask_logits.shape[1:]
    assert (h, w) == (-(-ref["height"] // 4), -(-ref["width"] // 4))
    want_masks = ref["predictor"]["pred_masks"][0, :, :h, :w].numpy()
    assert np.abs(q.mask_logits - want_masks).max() <= TOL["pred_masks"]
    assert q.owners().shape == q.mask_logits.shape[1:] and q.owners().max() < 10


def test_importer_reads_pth_and_pkl_with_and_without_config(mf_dir, tmp_path):
    ref = torch.load(mf_dir / "mini_fapn_maskformer.pt", map_location="cpu", weights_only=True)
    pth, pkl = tmp_path / "model_final.pth", tmp_path / "model_final.pkl"
    torch.save({"model": ref["state_dict"]}, pth)
    with open(pkl, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in ref["state_dict"].items()}, "__author__": "test"}, f)
    yaml_cfg = config_from_detectron2(mf_dir / "mini_fapn_maskformer_config.yaml")
    for path in (pth, pkl):
        model, report = import_official(path, config=mf_dir / "mini_fapn_maskformer_config.yaml")
        assert report.ok
        with torch.no_grad():
            assert _maxabs(model(ref["image"][None])[0], ref["sem_seg"]) <= TOL["sem_seg"]
        # without a config: everything the weights determine is inferred; the head count is not in the weights
        model, report = import_official(path)
        assert report.ok and model.config.replace(nheads=2) == yaml_cfg
    # the Swin mini's architecture from its keys alone
    swin = torch.load(mf_dir / "mini_fapn_swin_maskformer.pt", map_location="cpu", weights_only=True)
    inferred = infer_config({detectron2_to_native(k): v for k, v in swin["state_dict"].items()}, native=True)
    yaml_swin = config_from_detectron2(mf_dir / "mini_fapn_swin_maskformer_config.yaml")
    assert inferred.replace(nheads=2) == yaml_swin


def test_mismatched_checkpoints_are_refused_with_key_names(mf_dir):
    ref = torch.load(mf_dir / "mini_fapn_maskformer.pt", map_location="cpu", weights_only=True)
    native = {detectron2_to_native(k): v for k, v in ref["state_dict"].items()}
    cfg = config_from_detectron2(mf_dir / "mini_fapn_maskformer_config.yaml")
    with pytest.raises(CheckpointError, match=r"unexpected: neck\.align_"):  # FaPN weights into the plain decoder
        load_state_dict(build_from_config(cfg.replace(neck="fpn")), native)
    with pytest.raises(CheckpointError, match=r"head\.query_embed\.weight checkpoint \(10, 64\) vs model \(20, 64\)"):
        load_state_dict(build_from_config(cfg.replace(num_queries=20)), native)
    with pytest.raises(CheckpointError, match=r"head\.class_embed\.weight"):
        load_state_dict(build_from_config(cfg.replace(num_classes=7)), native)
    bad = dict(native)
    bad["neck.layer_2.norm.weight"] = bad["neck.layer_2.norm.weight"] + 1  # the shared GN's two copies disagree
    with pytest.raises(CheckpointError, match=r"one shared parameter"):
        load_state_dict(build_from_config(cfg), bad)


def test_export_round_trip_gives_the_official_keys(mf_dir):
    ref = torch.load(mf_dir / "mini_fapn_swin_maskformer.pt", map_location="cpu", weights_only=True)
    _, model = _load_mini(mf_dir, "fapn_swin")
    exported = export_detectron2_state_dict(model)
    assert list(exported) == list(ref["state_dict"])
    assert all(torch.equal(exported[k], v) for k, v in ref["state_dict"].items())


def test_config_settings_implemented_otherwise_are_refused(mf_dir):
    import yaml

    base = yaml.safe_load((mf_dir / "mini_fapn_swin_maskformer_config.yaml").read_text())
    for path, value, message in (
        (("MODEL", "MASK_FORMER", "TEST", "PANOPTIC_ON"), True, "PANOPTIC_ON"),
        (("MODEL", "SWIN", "APE"), True, "SWIN.APE"),
        (("MODEL", "SEM_SEG_HEAD", "PIXEL_DECODER_NAME"), "TransformerEncoderPixelDecoder", "PIXEL_DECODER_NAME"),
        (("MODEL", "MASK_FORMER", "TRANSFORMER_IN_FEATURE"), "transformer_encoder", "TRANSFORMER_IN_FEATURE"),
    ):
        cfg = yaml.safe_load(yaml.safe_dump(base))
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(CheckpointError, match=message):
            config_from_detectron2(cfg)


def test_checkpoint_without_empty_weight_loads_with_the_configured_one(mf_dir):
    """``criterion.empty_weight`` is a constant of the config (ones, no-object weight last): official checkpoints
    carry it (loaded), a checkpoint stripped of it still loads."""
    ref = torch.load(mf_dir / "mini_plain_maskformer.pt", map_location="cpu", weights_only=True)
    native = {detectron2_to_native(k): v for k, v in ref["state_dict"].items() if k != "criterion.empty_weight"}
    model = build_from_config(config_from_detectron2(mf_dir / "mini_plain_maskformer_config.yaml"))
    report = load_state_dict(model, native)
    assert report.ok and report.loaded == len(ref["state_dict"]) - 1
    assert torch.equal(model.criterion.empty_weight, ref["state_dict"]["criterion.empty_weight"])
