"""Training: loss goes down, resume equals an uninterrupted run, atomic checkpoints, DDP on CPU (gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from fapn_core.checkpoints import load_checkpoint
from fapn_core.train import STATE_FILE, StepBatches, TrainConfig, augment, lr_at, train

DATA = "synthetic:n=16,seed=3,size=64x128"


def _cfg(out, **kw) -> TrainConfig:
    base = dict(model="fapn_r18_semfpn", data=DATA, out_dir=str(out), steps=6, batch_size=4, crop=(64, 64),
                lr=2e-3, warmup=2, workers=0, threads=1, eval_every=100, ckpt_every=2, half=False,
                model_overrides={"neck_channels": 16, "head_conv_dims": 32})
    base.update(kw)
    return TrainConfig(**base)


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    full = train(_cfg(tmp_path / "full"), progress=False)
    part = _cfg(tmp_path / "part")
    train(part, progress=False, stop_after=3)
    assert torch.load(tmp_path / "part" / STATE_FILE, weights_only=True)["step"] == 3
    assert not (tmp_path / "part" / "fapn_r18_semfpn.safetensors").exists()
    resumed = train(part, progress=False)
    a, card = load_checkpoint(full)
    b, _ = load_checkpoint(resumed)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)
    assert card["training"]["steps"] == 6 and card["recipe"]["model"] == "fapn_r18_semfpn"
    assert card["classes"][0] == "road" and len(card["palette"]) == 10


def test_crash_during_checkpoint_save_keeps_the_last_good_one(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    train(cfg, progress=False, stop_after=2)
    good = torch.load(tmp_path / STATE_FILE, weights_only=True)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, stop_after=2)
    monkeypatch.setattr(torch, "save", real_save)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)  # still the good one, loadable
    assert state["step"] == good["step"] == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    train(cfg, progress=False)  # resumes from step 2 and finishes
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 6


def test_resume_refuses_another_runs_state(tmp_path):
    train(_cfg(tmp_path), progress=False, stop_after=2)
    with pytest.raises(ValueError, match="belongs to another run"):
        train(_cfg(tmp_path, model="fpn_r18_semfpn"), progress=False)


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    cfg = _cfg(tmp_path, steps=30, lr=3e-3, warmup=1, data="synthetic:n=4,seed=3,size=64x128",
               model="fpn_r18_semfpn", scale=(1.0, 1.0), hflip=False, ckpt_every=100)
    train(cfg, progress=False)
    import json

    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3])


def test_batch_schedule_is_a_function_of_step_and_shards_cleanly():
    s = StepBatches(10, 4, seed=1, start=0, stop=5)
    again = StepBatches(10, 4, seed=1, start=3, stop=5)
    assert list(s)[3:] == list(again)
    r0 = list(StepBatches(10, 4, seed=1, start=0, stop=2, rank=0, world=2))
    r1 = list(StepBatches(10, 4, seed=1, start=0, stop=2, rank=1, world=2))
    whole = list(s)[:2]
    for a, b, w in zip(r0, r1, whole):
        assert sorted(a + b) == sorted(w)
    with pytest.raises(ValueError, match="not divisible"):
        StepBatches(10, 3, 0, 0, 1, world=2)
    assert lr_at(0, TrainConfig("m", "d", "o", lr=1.0, warmup=4, steps=10)) == 0.25
    assert lr_at(10, TrainConfig("m", "d", "o", lr=1.0, warmup=4, steps=10)) == 0.0


def test_augment_pads_with_ignore_and_flips_consistently():
    rng = np.random.default_rng(0)
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, :15] = 200
    label = np.zeros((20, 30), np.uint8)
    label[:, :15] = 1
    img, lab = augment(image, label, rng, (40, 40), (1.0, 1.0), hflip=True)
    assert img.shape == (40, 40, 3) and lab.shape == (40, 40)
    assert (lab == 255).sum() == 40 * 40 - 20 * 30
    assert np.all((img[..., 0] == 200) == (lab == 1))


def test_ddp_training_on_cpu_with_gloo(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "fapn_core.cli", "train", "--model", "fpn_r18_semfpn", "--data", DATA, "--out", str(tmp_path),
           "--steps", "3", "--batch-size", "4", "--crop", "64x64", "--workers", "0", "--threads", "1",
           "--set", "neck_channels=16", "--set", "head_conv_dims=32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, card = load_checkpoint(tmp_path / "fpn_r18_semfpn.safetensors")
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
