"""Training the R-CNN family with ``fapn_core.train``: targets from the dataset's maps, resume, card."""

from __future__ import annotations

import numpy as np
import torch

from fapn_core.checkpoints import load_checkpoint
from fapn_core.data import open_dataset
from fapn_core.train import DetectionClasses, TrainConfig, augment, train

DATA = "synthetic:n=8,seed=3,size=64x128"
TINY = {"neck_channels": 16, "head_conv_dims": 32, "box_fc_dim": 32, "mask_conv_dims": 16,
        "stem_out_channels": 16, "rpn_post_nms_topk_train": 200, "roi_batch_size_per_image": 64}


def _cfg(out, **kw) -> TrainConfig:
    base = dict(model="fapn_r18_panoptic", data=DATA, out_dir=str(out), steps=4, batch_size=2, crop=(64, 96),
                lr=1e-3, warmup=1, workers=0, threads=1, ckpt_every=2, half=False, model_overrides=TINY)
    base.update(kw)
    return TrainConfig(**base)


def test_targets_follow_the_augmented_maps():
    ds = open_dataset(DATA)
    classes = DetectionClasses.of(ds)
    assert classes.things == (5, 7, 8, 9) and classes.stuff == (0, 1, 2, 3, 4, 6)
    item = ds[0]
    image, label, inst = augment(item["image"], item["label"].astype(np.uint8), np.random.default_rng(0),
                                 (64, 96), (0.8, 1.2), True, 255, instances=item["instances"])
    assert image.shape == (64, 96, 3) and label.shape == inst.shape == (64, 96)
    t = classes.targets(label.astype(np.int64), inst, panoptic=True)
    n = len(t["classes"])
    assert t["boxes"].shape == (n, 4) and t["masks"].shape == (n, 64, 96)
    for box, mask, cls in zip(t["boxes"], t["masks"], t["classes"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert int(label[mask.numpy()][0]) == classes.things[int(cls)]
    sem = t["sem_seg"]
    things = np.isin(label, classes.things)
    assert (sem[torch.from_numpy(things)] == 0).all()
    assert set(torch.unique(sem).tolist()) <= set(range(7)) | {255}


def test_panoptic_training_resumes_exactly_and_writes_a_detector_card(tmp_path):
    full = train(_cfg(tmp_path / "full"), progress=False)
    part = _cfg(tmp_path / "part")
    train(part, progress=False, stop_after=2)
    resumed = train(part, progress=False)
    a, card = load_checkpoint(full)
    b, _ = load_checkpoint(resumed)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)
    assert card["task"] == "panoptic" and card["classes"] == ["pole", "traffic sign", "person", "car"]
    assert card["thing_category_ids"] == [5, 7, 8, 9] and card["stuff_category_ids"] == [None, 0, 1, 2, 3, 4, 6]
    assert card["stuff_classes"][0] == "things" and len(card["stuff_classes"]) == 7
    assert a.num_classes == 4 and a.num_stuff_classes == 7
    res = a.predict(open_dataset(DATA)[1]["image"])
    assert res.sem_seg.shape == (7, 64, 128) and res.panoptic_seg.shape == (64, 128)


def test_ddp_detector_training_on_cpu_with_gloo(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "fapn_core.cli", "train", "--model", "fpn_r18_maskrcnn", "--data", DATA, "--out", str(tmp_path),
           "--steps", "2", "--batch-size", "2", "--crop", "64x96", "--workers", "0", "--threads", "1", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, card = load_checkpoint(tmp_path / "fpn_r18_maskrcnn.safetensors")
    assert card["task"] == "instance" and card["training"]["processes"] == 2


def test_cityscapes_instance_labels_become_detector_targets(tmp_path):
    """Cityscapes-style files (instanceIds with group regions and crowd/void) → thing objects of classes 11–18."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from cityscapes_scenes import write_cityscapes

    write_cityscapes(tmp_path, n=2, size=(64, 128))
    ds = open_dataset(f"cityscapes:{tmp_path}")
    classes = DetectionClasses.of(ds)
    assert classes.things == tuple(range(11, 19)) and len(classes.stuff) == 11
    item = ds[0]
    t = classes.targets(item["label"].astype(np.int64), item["instances"], panoptic=True)
    inst = item["instances"]
    expected = {int(i) for i in np.unique(inst) if i >= 1000 and np.isin(item["label"][inst == i], classes.things).any()}
    assert len(t["classes"]) == len(expected) > 0  # one object per official instance id, none for group regions
    for mask, cls in zip(t["masks"], t["classes"]):
        assert int(np.unique(item["label"][mask.numpy()])[0]) == classes.things[int(cls)]
    assert (t["sem_seg"][torch.from_numpy(item["label"] == 255)] == 255).all()
