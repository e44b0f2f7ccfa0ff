"""PointRend instance segmentation (``pointrend_rcnn``) reproduces detectron2's PointRend project with the FPN and
the FaPN-full neck on the ``reference/pointrend_inst`` minis, stage by stage, through ``convert`` →
``load_checkpoint`` → the model.

Tolerances are the fixtures' README's: (a) the mask head **in isolation** on the reference p2 and detections:
logits and features 1e-4; (b) **end to end** from the image: coarse logits 1e-3, point and mask logits 2e-3,
``mask_probs`` 5e-4; selected points equal **as sets** per detection and step; boxes 2e-3 px, scores 1e-5, at most
10 flipped pixels per pasted mask. Everything before the mask head is the R-CNN minis' (``../rcnn``) and is
compared against their tensors (features, FAM captures and RPN 1e-4, proposals as sets, box predictor 5e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_official
from fapn_core.checkpoints import (
    CheckpointError, config_from_detectron2, convert, detectron2_to_native, import_official, infer_config,
    load_checkpoint,
)
from fapn_core.introspect import CaptureHooks
from fapn_core.models.rcnn.point_rend import PointRendOutput
from fapn_core.models.zoo import build_from_config, build_model, count_parameters
from test_rcnn_fixtures import PREFIXES, _close, _match_rows  # tests/ is on sys.path (rootdir conftest)

MANIFESTS = {"pointrend_rcnn_R_50_FAN_1x_coco": "fapn_r50_pointrend_rcnn",
             "pointrend_rcnn_R_50_FPN_1x_coco": "fpn_r50_pointrend_rcnn"}
# the subdivision schedule is a config value, not in the weights: a key-inferred mini uses the official one
SCHEDULE = ("subdivision_steps", "subdivision_num_points")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Mini models: one thread is faster and immune to a shared machine's oversubscription (the fixtures were made
    at two; the README's 1-vs-2-thread reruns selected the same points)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pr_dir(reference_dir) -> Path:
    d = reference_dir / "pointrend_inst"
    if not (d / "README.md").is_file():
        pytest.skip(f"PointRend instance reference fixtures not found at {d}")
    return d


# ------------------------------------------------------------------------------------------------ manifests
@pytest.mark.parametrize("config,name", sorted(MANIFESTS.items()))
def test_manifest_maps_one_to_one_with_exact_counts(reference_dir, config, name):
    rcnn = reference_dir / "rcnn"
    data = json.loads((rcnn / f"keys_{config}.json").read_text())
    model = build_model(name)
    native = model.state_dict()
    mapped = {detectron2_to_native(k): tuple(shape) for k, shape, _ in data["state_dict"]}
    assert len(mapped) == len(data["state_dict"]) == data["num_state_dict_entries"]
    assert sorted(set(mapped) ^ set(native)) == []
    assert {k: tuple(native[k].shape) for k in mapped} == mapped
    # detectron2 builds the point head before the coarse head: same order in the state dict
    assert [k for k in native if k.startswith("roi_heads.mask_head.")] == \
        [k for k, _, _ in data["state_dict"] if k.startswith("roi_heads.mask_head.")]
    assert count_parameters(model) == data["num_params"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == data["num_params_trainable_requires_grad"]
    for theirs, ours in PREFIXES.items():
        if theirs in data["num_params_by_prefix"]:
            assert count_parameters(model, ours) == data["num_params_by_prefix"][theirs], theirs
    assert count_parameters(model, "neck.") == data["num_params_by_prefix"][
        "backbone (neck = backbone minus backbone.bottom_up)"]
    assert count_parameters(model, "roi_heads.mask_head.coarse_head.") == 18_176_080
    assert count_parameters(model, "roi_heads.mask_head.point_head.") == 285_776
    # the head is inferred from the keys alone, and the config dump builds the same model
    keys = {n: torch.zeros(s) for k, s, _ in data["state_dict"] if (n := detectron2_to_native(k)) is not None}
    inferred = infer_config(keys, native=True)
    dumped = config_from_detectron2(rcnn / f"config_{config}.yaml")
    assert inferred.name == dumped.name == name and inferred == dumped
    assert dumped.task == "instance" and dumped.train_on_pred_boxes and dumped.freeze_at == 2
    assert (dumped.subdivision_steps, dumped.subdivision_num_points, dumped.train_num_points) == (5, 784, 196)
    assert model.roi_heads.mask_head.init_resolution == 28 and model.roi_heads.mask_head.output_resolution == 224


# ---------------------------------------------------------------------------------------------- mini models
def _reference(pr_dir: Path, neck: str) -> tuple[dict, dict, dict]:
    """(PointRend file, its base R-CNN file, the merged official state dict in the official key order)."""
    ref = torch.load(pr_dir / f"mini_{neck}_pointrend.pt", map_location="cpu", weights_only=True)
    base = torch.load(pr_dir / ref["state_dict_base"], map_location="cpu", weights_only=True)
    sd = dict(base["state_dict"])
    sd.update(ref["state_dict_extra"])
    return ref, base, {k: sd[k] for k in ref["state_dict_keys"]}


@pytest.fixture(scope="module", params=["fpn", "fapn"])
def mini(request, pr_dir, tmp_path_factory):
    neck = request.param
    ref, base, sd = _reference(pr_dir, neck)
    folder = tmp_path_factory.mktemp(f"pointrend_{neck}")
    native, report = convert(write_official(folder, sd, "pth"), folder / f"mini_{neck}.safetensors",
                             config=pr_dir / f"mini_{neck}_pointrend_config.yaml")
    assert report.ok and report.loaded == len(sd)
    model, card = load_checkpoint(native)
    assert card["task"] == "instance" and card["config"]["head"] == "pointrend_rcnn"
    raw: dict = {}
    head = model.roi_heads.mask_head
    hooks = [model.neck.register_forward_hook(lambda m, i, o: raw.__setitem__("feats", o)),
             model.proposal_generator.rpn_head.register_forward_hook(lambda m, i, o: raw.__setitem__("rpn", o)),
             model.proposal_generator.register_forward_hook(lambda m, i, o: raw.__setitem__("proposals", o[0][0])),
             model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: raw.setdefault("box", o)),
             model.roi_heads.register_forward_hook(lambda m, i, o: raw.__setitem__("detections", o[0][0])),
             head.register_forward_hook(lambda m, i, o: raw.__setitem__("head", o))]
    image = ref["image"].flip(0)  # BGR fixture → the RGB API
    with torch.no_grad(), CaptureHooks(model, ("offsets", "attention")) as cap:
        result = model([image], output_sizes=[(ref["height"], ref["width"])])[0]
    for h in hooks:
        h.remove()
    det = ref["detections"]
    with torch.no_grad():  # (a) the head in isolation, on the official p2 and detections
        alone = head(base["features"], [det["pred_boxes"]], det["pred_classes"], keep_features=True)
    return dict(neck=neck, model=model, ref=ref, base=base, feats=raw["feats"], proposals=raw["proposals"],
                raw=raw, result=result, caps=cap.captures(tuple(ref["image_size"]))[0], alone=alone)


def _aligned(step, ref_step) -> tuple[torch.Tensor, torch.Tensor]:
    """Per detection, the order that sorts our points and the reference's by cell index (step 0: identity)."""
    if step.point_indices is None:
        idx = torch.arange(step.point_coords.shape[1]).expand(step.point_coords.shape[0], -1)
        return idx, idx
    ours, order = step.point_indices.sort(1)
    theirs, ref_order = ref_step["point_indices"].sort(1)
    assert torch.equal(ours, theirs), "selected cells differ as sets"
    return order, ref_order


def _take(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``t`` (R, C, P) or (R, P, 2) with its points in ``order`` (R, P)."""
    if t.shape[-1] == 2 and t.dim() == 3:
        return torch.gather(t, 1, order[..., None].expand(-1, -1, 2))
    return torch.gather(t, 2, order[:, None].expand(-1, t.shape[1], -1))


def _pred_class(t: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return t[torch.arange(len(classes)), classes][:, None]


# ----------------------------------------------------------------------------- everything before the mask head
def test_neck_features_and_fam_captures(mini):
    for k, v in mini["base"]["features"].items():
        _close(mini["feats"][k], v, 1e-4, 1e-4)
    if mini["neck"] == "fpn":
        assert not mini["caps"].fam
        return
    for level, ref in mini["base"]["fam"].items():
        fam, raw = mini["caps"].fam[level], ref["offset_mask_raw"][0]
        groups, (h, w) = raw.shape[0] // 27, raw.shape[-2:]
        _close(torch.from_numpy(fam.offsets), raw[: 18 * groups].view(groups, 9, 2, h, w), 1e-4, 1e-4)
        _close(torch.from_numpy(fam.mask), raw[18 * groups:].sigmoid().view(groups, 9, h, w), 1e-4, 1e-4)
        _close(torch.from_numpy(mini["caps"].fsm[level].attention), ref["fsm_attention"].flatten(), 1e-5)


def test_rpn_proposals_and_box_predictor(mini):
    base, props = mini["base"], mini["proposals"]
    logits, deltas = mini["raw"]["rpn"]
    for a, b in zip(logits, base["rpn"]["pred_objectness_logits"]):
        _close(a, b, 1e-4, 1e-4)
    for a, b in zip(deltas, base["rpn"]["pred_anchor_deltas"]):
        _close(a, b, 1e-4, 1e-4)
    assert len(props["boxes"]) == len(base["proposals"]["boxes"])
    idx = _match_rows(props["boxes"], base["proposals"]["boxes"])
    _close(props["boxes"][idx], base["proposals"]["boxes"], 1e-3)
    _close(props["objectness_logits"][idx], base["proposals"]["objectness_logits"], 1e-4)
    scores, box_deltas = mini["raw"]["box"]
    _close(scores[idx], base["box_predictor"]["scores"], 5e-4)
    _close(box_deltas[idx], base["box_predictor"]["proposal_deltas"], 5e-4)


def test_detections_the_mask_head_sees(mini):
    ours, ref = mini["raw"]["detections"], mini["ref"]["detections"]
    assert len(ours["boxes"]) == len(ref["pred_boxes"])  # 21 (FPN) / 19 (FaPN), sorted by score
    _close(ours["scores"], ref["scores"], 1e-5)
    _close(ours["boxes"], ref["pred_boxes"], 2e-3)
    assert torch.equal(ours["classes"], ref["pred_classes"])


# ------------------------------------------------------------------------------------ (a) the head in isolation
def test_head_in_isolation_matches_every_tensor(mini):
    ref, out = mini["ref"], mini["alone"]
    classes = ref["detections"]["pred_classes"]
    _close(out.coarse_logits, ref["pointrend"]["coarse_logits"], 1e-4)
    assert [s.grid_side for s in out.steps] == [s["grid_side"] for s in ref["pointrend"]["steps"]] == [14, 28, 56]
    for step, ref_step in zip(out.steps, ref["pointrend"]["steps"], strict=True):
        order, ref_order = _aligned(step, ref_step)
        _close(_take(step.point_coords, order), _take(ref_step["point_coords"], ref_order), 1e-6)
        _close(_take(step.fine_features, order), _take(ref_step["fine_grained_features"], ref_order), 1e-4)
        _close(_take(step.coarse_features, order), _take(ref_step["coarse_features"], ref_order), 1e-4)
        _close(_take(step.point_logits, order), _take(ref_step["point_logits"], ref_order), 1e-4)
    assert out.mask_logits.shape == (len(classes), 1, 56, 56)  # each detection's own class
    _close(out.mask_logits, ref["detections"]["mask_logits_pred_class"], 1e-4)


# ---------------------------------------------------------------------------------------- (b) end to end
def test_end_to_end_coarse_logits_points_and_step_maps(mini):
    ref, out = mini["ref"], mini["raw"]["head"]
    assert isinstance(out, PointRendOutput)
    classes = ref["detections"]["pred_classes"]
    _close(out.coarse_logits, ref["pointrend"]["coarse_logits"], 1e-3)
    logits = None
    for s, (step, ref_step) in enumerate(zip(out.steps, ref["pointrend"]["steps"], strict=True)):
        assert step.point_coords.shape == ref_step["point_coords"].shape == (len(classes), 196, 2)
        order, ref_order = _aligned(step, ref_step)  # the selected cells are equal as sets
        _close(_take(step.point_coords, order), _take(ref_step["point_coords"], ref_order), 1e-6)
        _close(_take(step.point_logits, order), _take(ref_step["point_logits"], ref_order), 2e-3)
        # the map this step leaves: rebuilt from the points as detectron2 does, all K channels (rule 12)
        if logits is None:
            logits = step.point_logits.reshape(len(classes), -1, 14, 14)
        else:
            logits = torch.nn.functional.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            r, k, h, w = logits.shape
            logits = logits.reshape(r, k, h * w).scatter(
                2, step.point_indices[:, None].expand(-1, k, -1), step.point_logits).view(r, k, h, w)
        if "mask_logits_pred_class" in ref_step:
            _close(_pred_class(logits, classes), ref_step["mask_logits_pred_class"], 2e-3)
    # carrying only the detection's class through the steps gives exactly that channel of the K-channel map
    torch.testing.assert_close(_pred_class(logits, classes), out.mask_logits, atol=0, rtol=0)
    _close(out.mask_logits, ref["detections"]["mask_logits_pred_class"], 2e-3)


def test_final_instances_masks_and_capture(mini):
    ref, res = mini["ref"], mini["result"]
    ins, det = ref["instances"], ref["detections"]
    assert res.image_size == (ref["height"], ref["width"]) == (160, 208)
    assert len(res) == len(ins["scores"]) and torch.equal(ins["kept_index"], torch.arange(len(res)))
    _close(res.scores, ins["scores"], 1e-5)
    _close(res.boxes, ins["pred_boxes"], 2e-3)
    assert torch.equal(res.classes, ins["pred_classes"])
    assert res.mask_probs.shape == (len(res), 1, 56, 56)
    _close(res.mask_probs, det["mask_probs"][ins["kept_index"]], 5e-4)
    flipped = (res.masks != ins["pred_masks"]).flatten(1).sum(1)
    assert int(flipped.max()) <= 10, flipped.tolist()
    # the capture: each step's points in pixels of the 160×208 result, the coarse mask of each instance's class
    cap = res.point_rend
    assert len(cap) == len(res) and cap.grid_sides == (14, 28, 56)
    sx, sy = ref["width"] / ref["image_size"][1], ref["height"] / ref["image_size"][0]
    boxes = det["pred_boxes"][ins["kept_index"]]
    for s, (points, ref_step) in enumerate(zip(cap.points, ref["pointrend"]["steps"])):
        step = mini["raw"]["head"].steps[s]
        order, ref_order = _aligned(step, ref_step)
        uv = _take(ref_step["point_coords"], ref_order)
        expect = torch.stack((uv[..., 0] * (boxes[:, 2:3] - boxes[:, 0:1]) + boxes[:, 0:1],
                              uv[..., 1] * (boxes[:, 3:4] - boxes[:, 1:2]) + boxes[:, 1:2]), -1)
        _close(_take(points, order), expect * torch.tensor([sx, sy]), 2e-3)
    _close(cap.coarse_logits[:, None], _pred_class(ref["pointrend"]["coarse_logits"], ins["pred_classes"]), 1e-3)
    _close(cap.initial_logits[:, None], _pred_class(
        ref["pointrend"]["steps"][0]["point_logits"].view(len(res), -1, 14, 14), ins["pred_classes"]), 2e-3)
    assert res.select(torch.tensor([2, 0])).point_rend.points[1].shape == (2, 196, 2)
    assert res.to("cpu").point_rend.coarse_logits.shape == (len(res), 7, 7)


# --------------------------------------------------------------------------------------------- import paths
@pytest.mark.parametrize("fmt", ["pth", "pkl"])
@pytest.mark.parametrize("with_config", [False, True])
def test_import_official_with_and_without_config(pr_dir, tmp_path, fmt, with_config):
    ref, _, sd = _reference(pr_dir, "fapn")
    yaml_path = pr_dir / "mini_fapn_pointrend_config.yaml"
    model, report = import_official(write_official(tmp_path, sd, fmt), config=yaml_path if with_config else None)
    assert report.ok and report.loaded == len(sd) == 324
    dumped = config_from_detectron2(yaml_path)
    assert count_parameters(model) == 2_945_652 and count_parameters(model, "roi_heads.mask_head.") == 251_091
    if with_config:
        assert model.config == dumped
    else:  # everything the keys tell is the dump's; the schedule is the official default (784 points, 5 steps)
        assert model.config.replace(**{k: getattr(dumped, k) for k in SCHEDULE}) == dumped
        assert (model.config.subdivision_steps, model.config.subdivision_num_points) == (5, 784)
    if with_config and fmt == "pkl":
        det = ref["detections"]
        base = torch.load(pr_dir / ref["state_dict_base"], map_location="cpu", weights_only=True)
        with torch.no_grad():
            out = model.roi_heads.mask_head(base["features"], [det["pred_boxes"]], det["pred_classes"])
        _close(out.mask_logits, det["mask_logits_pred_class"], 1e-4)


def test_legacy_pointrend_key_names_load_the_same_weights(pr_dir, tmp_path):
    """Checkpoints from before detectron2 renamed the heads (``mask_point_head``, ``mask_coarse_head``,
    ``coarse_mask_fc{i}``) load as PointRendROIHeads / ConvFCHead convert them."""
    _, _, sd = _reference(pr_dir, "fpn")

    def old(k: str) -> str:
        k = k.replace("roi_heads.mask_head.point_head.", "roi_heads.mask_point_head.")
        k = k.replace("roi_heads.mask_head.coarse_head.", "roi_heads.mask_coarse_head.")
        return k.replace("mask_coarse_head.fc", "mask_coarse_head.coarse_mask_fc")

    legacy = {old(k): v for k, v in sd.items()}
    assert "roi_heads.mask_coarse_head.coarse_mask_fc1.weight" in legacy
    model, report = import_official(write_official(tmp_path, legacy, "pth"),
                                    config=pr_dir / "mini_fpn_pointrend_config.yaml")
    assert report.ok and report.loaded == len(sd)
    state = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(state[detectron2_to_native(k)], v), k


def test_mini_configs_and_counts(pr_dir):
    for neck, total in (("fapn", 2_945_652), ("fpn", 2_387_500)):
        cfg = config_from_detectron2(pr_dir / f"mini_{neck}_pointrend_config.yaml")
        assert cfg.name == f"{neck}_r50_pointrend_rcnn" and cfg.num_classes == 5
        assert (cfg.subdivision_num_points, cfg.subdivision_steps) == (196, 3)
        assert (cfg.mask_fc_dim, cfg.point_fc_dim, cfg.mask_conv_dims) == (64, 64, 64)
        model = build_from_config(cfg)
        assert count_parameters(model) == total
        assert count_parameters(model, "roi_heads.mask_head.coarse_head.") == 237_301
        assert count_parameters(model, "roi_heads.mask_head.point_head.") == 13_790
        head = model.roi_heads.mask_head
        assert (head.init_resolution, head.refine_steps, head.output_resolution) == (14, 2, 56)


def test_pointrend_settings_implemented_otherwise_are_refused_by_name(pr_dir):
    base = yaml.safe_load((pr_dir / "mini_fpn_pointrend_config.yaml").read_text())
    for section, key, value in (("POINT_HEAD", "CLS_AGNOSTIC_MASK", True), ("POINT_HEAD", "IN_FEATURES", ["p2", "p3"]),
                                ("ROI_MASK_HEAD", "POOLER_TYPE", "ROIAlignV2"),
                                ("ROI_MASK_HEAD", "POINT_HEAD_ON", False)):
        cfg = yaml.safe_load(yaml.safe_dump(base))
        cfg["MODEL"][section][key] = value
        with pytest.raises(CheckpointError, match=f"{section}.{key} = "):
            config_from_detectron2(cfg)
    # the old format (FaPN-full's): PointRendROIHeads rewrites the mask head and its pooler type
    cfg = yaml.safe_load(yaml.safe_dump(base))
    cfg["MODEL"]["ROI_HEADS"]["NAME"] = "PointRendROIHeads"
    cfg["MODEL"]["ROI_MASK_HEAD"].update(NAME="CoarseMaskHead", POOLER_TYPE="ROIAlignV2")
    assert config_from_detectron2(cfg) == config_from_detectron2(base)
