"""Native checkpoints, official-checkpoint import and conversion, and refusal of hostile files."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from fapn_core.checkpoints import (
    CheckpointError, config_from_detectron2, export_detectron2_state_dict, import_official, load_checkpoint,
    make_card, read_card, read_official_state_dict, save_native,
)
from fapn_core.cli import main as cli_main
from fapn_core.models.zoo import build_model, get_model_config


def _fake_official(manifest: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint with exactly the manifest's keys and shapes (random values)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape, _ in manifest["state_dict"]:
        t = torch.randn(shape, generator=g) * 0.01
        if key.endswith("running_var"):
            t = t.abs() + 1.0
        sd[key] = t
    return sd


@pytest.mark.parametrize("name", ["R_50_FAN", "R_50_FPN"])
@pytest.mark.parametrize("fmt", [".pth", ".pkl"])
def test_fapn_convert_official_checkpoint_to_native(reference_dir, tmp_path, name, fmt, capsys):
    manifest = json.loads((reference_dir / f"keys_pointrend_semantic_{name}_1x_cityscapes.json").read_text())
    sd = _fake_official(manifest)
    src = tmp_path / f"model_final{fmt}"
    if fmt == ".pth":
        torch.save({"model": sd, "iteration": 90000}, src)
    else:
        with open(src, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "FaPN"}, f)
    out = tmp_path / "native.safetensors"
    cfg_yaml = reference_dir / f"config_pointrend_semantic_{name}_1x_cityscapes.yaml"
    assert cli_main(["convert", str(src), str(out), "--config", str(cfg_yaml)]) == 0
    assert "tensors loaded" in capsys.readouterr().out
    assert out.is_file() and out.with_suffix(".json").is_file()
    model, card = load_checkpoint(out)
    expected = "fapn_r50_pointrend" if "FAN" in name else "fpn_r50_pointrend"
    assert card["name"] == expected and model.config.name == expected
    assert card["num_params"] == manifest["num_params"]
    back = export_detectron2_state_dict(model)
    assert set(back) == set(sd)
    for k in ("backbone.bottom_up.res4.5.conv2.weight", "sem_seg_head.point_head.fc1.weight"):
        assert torch.equal(back[k], sd[k])
    # the factory's config for that name is exactly what the detectron2 config dump describes
    assert config_from_detectron2(cfg_yaml) == get_model_config(expected)


def test_convert_infers_architecture_without_config(reference_dir, tmp_path):
    manifest = json.loads((reference_dir / "keys_pointrend_semantic_R_101_FAN_1x_cityscapes.json").read_text())
    src = tmp_path / "fapn_r101.pth"
    torch.save({"model": _fake_official(manifest)}, src)
    model, report = import_official(src)
    assert report.ok and model.config.name == "fapn_r101_pointrend" and model.config.num_classes == 19


def test_unsupported_meta_architecture_is_refused_clearly(reference_dir):
    import yaml

    cfg = yaml.safe_load((reference_dir / "config_mask_rcnn_R_50_FAN_1x.yaml").read_text())
    assert config_from_detectron2(cfg).name == "fapn_r50_maskrcnn"  # the R-CNN family is supported
    cfg["MODEL"]["META_ARCHITECTURE"] = "RetinaNet"
    with pytest.raises(CheckpointError, match="unsupported META_ARCHITECTURE 'RetinaNet'"):
        config_from_detectron2(cfg)
    cfg["MODEL"]["META_ARCHITECTURE"] = "GeneralizedRCNN"
    cfg["MODEL"]["ROI_HEADS"]["NAME"] = "CascadeROIHeads"
    with pytest.raises(CheckpointError, match="ROI_HEADS.NAME = 'CascadeROIHeads'"):
        config_from_detectron2(cfg)


def test_mismatched_checkpoint_is_refused_unless_partial(reference_dir, tmp_path):
    manifest = json.loads((reference_dir / "keys_pointrend_semantic_R_50_FAN_1x_cityscapes.json").read_text())
    sd = _fake_official(manifest)
    del sd["backbone.fan_align3.offset.weight"]
    sd["backbone.fpn_output2.bias"] = torch.zeros(128)
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(3, 3)
    src = tmp_path / "broken.pth"
    torch.save({"model": sd}, src)
    cfg = get_model_config("fapn_r50_pointrend")
    with pytest.raises(CheckpointError) as err:
        import_official(src, config=cfg)
    msg = str(err.value)
    assert "1 missing: neck.align3.offset.weight" in msg
    assert "1 unexpected: roi_heads.box_predictor.cls_score.weight" in msg
    assert "neck.output2.bias checkpoint (128,) vs model (256,)" in msg
    model, report = import_official(src, config=cfg, allow_partial=True)
    assert not report.ok and report.loaded == len(sd) - 2
    assert cli_main(["convert", str(src), str(tmp_path / "x.safetensors"), "--config",
                     str(reference_dir / "config_pointrend_semantic_R_50_FAN_1x_cityscapes.yaml")]) == 2


def test_native_roundtrip_half_and_card(tmp_path):
    torch.manual_seed(0)
    model = build_model("fapn_r18_semfpn", num_classes=3, neck_channels=32, head_conv_dims=32).eval()
    card = make_card(model, classes=["a", "b", "c"], palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
                     training_data="unit test", metrics={"mIoU": 12.5})
    path = save_native(model, tmp_path / "m.safetensors", card, half=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temp files left
    assert read_card(path)["classes"] == ["a", "b", "c"]
    assert json.loads(path.with_suffix(".json").read_text())["metrics"] == {"mIoU": 12.5}
    loaded, card2 = load_checkpoint(path)
    assert card2["config"] == model.config.to_dict()
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    a, b = model.predict(image), loaded.predict(image)
    assert float((a - b).abs().max()) < 2e-2 * float(a.abs().max())
    with pytest.raises(ValueError, match="card lists 2 classes"):
        make_card(model, classes=["a", "b"])


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {"w": _Evil(str(marker))}}))
    with pytest.raises(CheckpointError, match="refused to unpickle (posix|os).system"):
        read_official_state_dict(evil)
    assert not marker.exists()
    evil_pth = tmp_path / "evil.pth"
    with open(evil_pth, "wb") as f:
        torch.save({"model": {"w": _Evil(str(marker))}}, f)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_official_state_dict(evil_pth)
    assert not marker.exists()


def test_unexpected_objects_and_garbage_are_refused(tmp_path):
    odd = tmp_path / "odd.pth"
    torch.save({"model": {"w": torch.zeros(2), "note": "hello"}}, odd)
    with pytest.raises(CheckpointError, match="entry 'note' is a str"):
        read_official_state_dict(odd)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_official_state_dict(garbage)
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps({"model": {"w": np.zeros(100)}})[:50])
    with pytest.raises(CheckpointError, match="not a readable detectron2 .pkl"):
        read_official_state_dict(trunc)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_official_state_dict(empty)
    with pytest.raises(CheckpointError, match="over the 0 MiB limit"):
        read_official_state_dict(odd, max_bytes=10)
    fake_st = tmp_path / "fake.safetensors"
    fake_st.write_text("not really")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(fake_st)
    with pytest.raises(CheckpointError, match="unsupported checkpoint type"):
        load_checkpoint(tmp_path / "weights.h5")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
