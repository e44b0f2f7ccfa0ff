"""The native R-CNN family reproduces the official detectron2 / FaPN-full code on ``reference/rcnn`` fixtures.

Tolerances are the fixtures' README's: features, FAM captures and RPN outputs 1e-4; proposals and detections as
sets (boxes 1e-3 px / 2e-3 px at output size, scores 1e-5); pasted masks may flip the few pixels within 1e-4 of
0.5; panoptic ids ≤ 10 pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_official
from fapn_core.checkpoints import (
    config_from_detectron2, convert, detectron2_to_native, import_official, infer_config, load_checkpoint,
    load_state_dict,
)
from fapn_core.introspect import CaptureHooks
from fapn_core.models.rcnn.poolers import assign_levels
from fapn_core.models.zoo import build_from_config, build_model, count_parameters

MANIFESTS = {
    "faster_rcnn_R_50_FAN_1x": "fapn_r50_fasterrcnn", "faster_rcnn_R_50_FPN_1x": "fpn_r50_fasterrcnn",
    "faster_rcnn_R_101_FAN_3x": "fapn_r101_fasterrcnn", "faster_rcnn_R_101_FPN_3x": "fpn_r101_fasterrcnn",
    "mask_rcnn_R_50_FAN_1x": "fapn_r50_maskrcnn", "mask_rcnn_R_50_FPN_1x": "fpn_r50_maskrcnn",
    "mask_rcnn_R_101_FAN_3x": "fapn_r101_maskrcnn", "mask_rcnn_R_101_FPN_3x": "fpn_r101_maskrcnn",
    "panoptic_fan_R_50_1x": "fapn_r50_panoptic", "panoptic_fpn_R_50_1x": "fpn_r50_panoptic",
    "panoptic_fan_R_101_3x": "fapn_r101_panoptic", "panoptic_fpn_R_101_3x": "fpn_r101_panoptic",
}
# the manifests' prefixes → native prefixes
PREFIXES = {"backbone.bottom_up": "backbone.", "proposal_generator": "proposal_generator.",
            "roi_heads.box_head": "roi_heads.box_head.", "roi_heads.box_predictor": "roi_heads.box_predictor.",
            "roi_heads.mask_head": "roi_heads.mask_head.", "sem_seg_head": "head."}


@pytest.fixture(scope="module")
def rcnn_dir(reference_dir) -> Path:
    d = reference_dir / "rcnn"
    if not d.is_dir():
        pytest.skip(f"R-CNN reference fixtures not found at {d}")
    return d


def _manifest_path(rcnn_dir: Path, config: str) -> Path:
    p = rcnn_dir / f"keys_{config}.json"
    return p if p.is_file() else rcnn_dir.parent / f"keys_{config}.json"


@pytest.mark.parametrize("config,name", sorted(MANIFESTS.items()))
def test_manifest_maps_one_to_one_with_exact_counts(rcnn_dir, config, name):
    data = json.loads(_manifest_path(rcnn_dir, config).read_text())
    model = build_model(name)
    native = model.state_dict()
    mapped = {detectron2_to_native(k): tuple(shape) for k, shape, _ in data["state_dict"]}
    assert len(mapped) == len(data["state_dict"]) == data["num_state_dict_entries"]
    assert sorted(set(mapped) ^ set(native)) == []
    assert {k: tuple(native[k].shape) for k in mapped} == mapped
    assert count_parameters(model) == data["num_params"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == data["num_params_trainable_requires_grad"]  # FREEZE_AT 2
    by_prefix = data["num_params_by_prefix"]
    for theirs, ours in PREFIXES.items():
        if theirs in by_prefix:
            assert count_parameters(model, ours) == by_prefix[theirs], theirs
    neck = by_prefix["backbone (neck = backbone minus backbone.bottom_up)"]
    assert count_parameters(model, "neck.") == neck
    buffers = sum(b.numel() for k, b in native.items() if k not in dict(model.named_parameters()))
    assert buffers == data["num_state_dict_buffer_elements"]


@pytest.mark.parametrize("config", sorted(MANIFESTS))
def test_config_dump_builds_the_same_model(rcnn_dir, config):
    yaml_path = rcnn_dir / f"config_{config}.yaml"
    if not yaml_path.is_file():
        yaml_path = rcnn_dir.parent / f"config_{config}.yaml"
    cfg = config_from_detectron2(yaml_path)
    assert cfg.name == MANIFESTS[config]
    assert cfg.num_classes == 80 and cfg.freeze_at == 2
    if cfg.head == "panoptic":
        assert cfg.sem_seg_num_classes == 54 and cfg.head_conv_dims == 128
    data = json.loads(_manifest_path(rcnn_dir, config).read_text())
    assert count_parameters(build_from_config(cfg)) == data["num_params"]


def test_pointrend_instance_configs_and_keys_give_the_pointrend_head(rcnn_dir):
    """Once refused; now ``pointrend_rcnn`` (matched in detail by tests/test_pointrend_rcnn_fixtures.py)."""
    for name in ("pointrend_rcnn_R_50_FAN_1x_coco", "pointrend_rcnn_R_50_FPN_1x_coco"):
        assert config_from_detectron2(rcnn_dir / f"config_{name}.yaml").head == "pointrend_rcnn"
        data = json.loads((rcnn_dir / f"keys_{name}.json").read_text())
        keys = {n: torch.zeros(s) for k, s, _ in data["state_dict"] if (n := detectron2_to_native(k)) is not None}
        assert infer_config(keys, native=True).head == "pointrend_rcnn"


# ------------------------------------------------------------------------------------------- mini fixtures
def _flat(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("state_dict", "state_dict_extra", "features", "fam", "meta"):
            out.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
        else:
            out[k] = v
    return out


def _load(rcnn_dir: Path, neck: str, task: str):
    ref = _flat(torch.load(rcnn_dir / f"mini_{neck}_{task}.pt", map_location="cpu", weights_only=True))
    if task == "panoptic":
        base = torch.load(rcnn_dir / Path(ref["state_dict_base"]).name, map_location="cpu", weights_only=True)
        sd = dict(base["state_dict"])
        sd.update(ref["state_dict_extra"])
        ref["state_dict"] = {k: sd[k] for k in ref["state_dict_keys"]}
    cfg = config_from_detectron2(rcnn_dir / f"mini_{neck}_{task}_config.yaml")
    model = build_from_config(cfg).eval()
    report = load_state_dict(model, {n: v for k, v in ref["state_dict"].items()
                                     if (n := detectron2_to_native(k)) is not None})
    assert report.ok and report.loaded == len(ref["state_dict"])
    return model, ref


@pytest.fixture(scope="module", params=["fpn", "fapn"])
def mini(request, rcnn_dir):
    model, ref = _load(rcnn_dir, request.param, "maskrcnn")
    image = ref["image"].flip(0)  # the fixture is BGR; the API takes RGB
    raw = {}
    hooks = [model.proposal_generator.rpn_head.register_forward_hook(lambda m, i, o: raw.__setitem__("rpn", o)),
             model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: raw.setdefault("box", o)),
             model.roi_heads.mask_head.register_forward_hook(lambda m, i, o: raw.__setitem__("mask", o))]
    with torch.no_grad(), CaptureHooks(model, ("offsets", "attention", "fam_features", "features")) as cap:
        x, sizes = model.preprocess([image])
        feats = model.neck(model.backbone(x))
        proposals, _ = model.proposal_generator(feats, sizes)
        result = model([image], output_sizes=[(ref["height"], ref["width"])])[0]
    for h in hooks:
        h.remove()
    caps = cap.captures(tuple(ref["image_size"]))[0]
    return dict(neck=request.param, model=model, ref=ref, feats=feats, proposals=proposals[0], raw=raw,
                result=result, caps=caps)


def _close(a, b, atol, rtol=0.0):
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol)


def test_neck_features(mini):
    for k, v in mini["ref"]["features"].items():
        _close(mini["feats"][k], v, 1e-4, 1e-4)


def test_fam_captures(mini):
    if mini["neck"] != "fapn":
        assert not mini["caps"].fam
        return
    for level, ref in mini["ref"]["fam"].items():
        fam = mini["caps"].fam[level]
        raw = ref["offset_mask_raw"][0]
        groups = raw.shape[0] // 27
        h, w = raw.shape[-2:]
        _close(torch.from_numpy(fam.offsets), raw[: 18 * groups].view(groups, 9, 2, h, w), 1e-4, 1e-4)
        _close(torch.from_numpy(fam.mask), raw[18 * groups:].sigmoid().view(groups, 9, h, w), 1e-4, 1e-4)
        _close(torch.from_numpy(mini["caps"].fsm[level].attention), ref["fsm_attention"].flatten(), 1e-5)
        _close(torch.from_numpy(fam.feat_up), ref["feat_up"][0], 1e-4, 1e-4)
        _close(torch.from_numpy(fam.aligned), ref["fam_out"][0], 1e-4, 1e-4)


def test_rpn_head_outputs_and_anchors(mini):
    ref = mini["ref"]
    logits, deltas = mini["raw"]["rpn"]
    for a, b in zip(logits, ref["rpn.pred_objectness_logits"]):
        _close(a, b, 1e-4, 1e-4)
    for a, b in zip(deltas, ref["rpn.pred_anchor_deltas"]):
        _close(a, b, 1e-4, 1e-4)
    anchors = mini["model"].proposal_generator.anchor_generator([tuple(x.shape[-2:]) for x in logits])
    for a, b in zip(anchors, ref["rpn.anchors"]):
        _close(a, b, 1e-5)


def _match_rows(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """For each reference row, the index of our nearest row (max-abs distance); they must be one-to-one."""
    dist = (theirs[:, None, :] - ours[None, :, :]).abs().amax(-1)
    idx = dist.argmin(1)
    assert len(set(idx.tolist())) == len(idx), "rows do not match one-to-one"
    return idx


def test_proposals_match_as_sets(mini):
    ref, props = mini["ref"], mini["proposals"]
    assert len(props["boxes"]) == len(ref["proposals.boxes"])
    idx = _match_rows(props["boxes"], ref["proposals.boxes"])
    _close(props["boxes"][idx], ref["proposals.boxes"], 1e-3)
    _close(props["objectness_logits"][idx], ref["proposals.objectness_logits"], 1e-4)
    # the ROI pooler's level of each proposal (p2..p5 → 0..3), as the official pooler assigned it
    assert torch.equal(assign_levels(props["boxes"][idx], 2, 5), ref["proposals.levels"])


def test_box_predictor_on_the_reference_proposals(mini):
    ref = mini["ref"]
    scores, deltas = mini["raw"]["box"]  # first call = the proposals of this image
    idx = _match_rows(mini["proposals"]["boxes"], ref["proposals.boxes"])
    _close(scores[idx], ref["box_predictor.scores"], 5e-4)
    _close(deltas[idx], ref["box_predictor.proposal_deltas"], 5e-4)


def test_final_instances_match(mini):
    ref, res = mini["ref"], mini["result"]
    assert res.image_size == (ref["height"], ref["width"])
    assert len(res) == len(ref["instances.scores"])
    _close(res.scores, ref["instances.scores"], 1e-5)  # both sorted by score
    _close(res.boxes, ref["instances.pred_boxes"], 2e-3)
    assert torch.equal(res.classes, ref["instances.pred_classes"])
    _close(res.mask_probs, ref["detections.mask_probs"][ref["instances.kept_index"]], 5e-4)
    flipped = (res.masks != ref["instances.pred_masks"]).flatten(1).sum(1)
    assert int(flipped.max()) <= 2, flipped.tolist()


@pytest.mark.parametrize("neck", ["fpn", "fapn"])
def test_panoptic_matches(rcnn_dir, neck):
    model, ref = _load(rcnn_dir, neck, "panoptic")
    with torch.no_grad():
        res = model([ref["image"].flip(0)], output_sizes=[(ref["height"], ref["width"])])[0]
    _close(res.sem_seg, ref["sem_seg"], 1e-4)
    assert int((res.panoptic_seg != ref["panoptic_seg"]).sum()) <= 10
    assert len(res.segments_info) == len(ref["segments_info"])
    for a, b in zip(res.segments_info, ref["segments_info"]):
        assert (a["id"], a["category_id"], a["isthing"]) == (b["id"], b["category_id"], b["isthing"])
        if a["isthing"]:
            assert abs(a["score"] - b["score"]) <= 1e-5 and a["instance_id"] == b["instance_id"]
        else:
            assert abs(a["area"] - b["area"]) <= 10


# ------------------------------------------------------------------------------------------- import paths
@pytest.mark.parametrize("fmt", ["pth", "pkl"])
@pytest.mark.parametrize("with_config", [False, True])
def test_import_official_reproduces_the_fixture(rcnn_dir, tmp_path, fmt, with_config):
    ref = _flat(torch.load(rcnn_dir / "mini_fapn_maskrcnn.pt", map_location="cpu", weights_only=True))
    path = write_official(tmp_path, ref["state_dict"], fmt)
    config = rcnn_dir / "mini_fapn_maskrcnn_config.yaml" if with_config else None
    model, report = import_official(path, config=config)
    assert report.ok and model.config.head == "maskrcnn" and model.config.num_classes == 5
    with torch.no_grad():
        res = model([ref["image"].flip(0)], output_sizes=[(ref["height"], ref["width"])])[0]
    _close(res.scores, ref["instances.scores"], 1e-5)
    _close(res.boxes, ref["instances.pred_boxes"], 2e-3)


def test_panoptic_head_inferred_from_keys_and_converted_to_native(rcnn_dir, tmp_path):
    model, ref = _load(rcnn_dir, "fpn", "panoptic")
    path = write_official(tmp_path, ref["state_dict"], "pth")
    out, report = convert(path, tmp_path / "pan.safetensors", stuff_classes=["things", "a", "b", "c"])
    assert report.ok
    loaded, card = load_checkpoint(out)
    assert card["task"] == "panoptic" and card["config"]["sem_seg_num_classes"] == 4
    assert card["stuff_classes"] == ["things", "a", "b", "c"]
    with torch.no_grad():
        res = loaded([ref["image"].flip(0)], output_sizes=[(ref["height"], ref["width"])])[0]
    assert [s["category_id"] for s in res.segments_info] == [s["category_id"] for s in ref["segments_info"]]


def test_mismatched_checkpoint_names_the_head_and_keys(rcnn_dir, tmp_path):
    ref = _flat(torch.load(rcnn_dir / "mini_fpn_maskrcnn.pt", map_location="cpu", weights_only=True))
    cfg = config_from_detectron2(rcnn_dir / "mini_fpn_maskrcnn_config.yaml")
    path = write_official(tmp_path, ref["state_dict"], "pth")
    with pytest.raises(Exception, match=r"roi_heads\.box_predictor\.cls_score\.weight checkpoint \(6, 128\) vs model \(11, 128\)"):
        import_official(path, config=cfg.replace(num_classes=10))
    with pytest.raises(Exception, match=r"missing: .*head\.p2\.0\.weight"):
        import_official(path, config=cfg.replace(head="panoptic", sem_seg_num_classes=4))


def test_official_coco_checkpoint_gets_coco_class_names(tmp_path):
    from fapn_core.checkpoints import export_detectron2_state_dict

    model = build_model("fpn_r50_panoptic")
    path = tmp_path / "model_final.pth"
    torch.save({"model": export_detectron2_state_dict(model)}, path)
    loaded, card = load_checkpoint(path)
    assert card["task"] == "panoptic" and len(card["classes"]) == 80
    assert card["classes"][0] == "person" and card["thing_category_ids"][11] == 13  # stop sign: ids have gaps
    assert card["stuff_classes"][0] == "things" and card["stuff_classes"][1] == "banner"
    assert card["stuff_category_ids"][-1] == 200 and len(card["stuff_category_ids"]) == 54
