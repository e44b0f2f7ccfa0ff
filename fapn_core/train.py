"""Training: one recipe for FPN and FaPN, CPU or CUDA (AMP), single process or ``torchrun`` (DDP).

The batch schedule is a pure function of ``(seed, step)``: a resumed run sees exactly the batches and
augmentations an uninterrupted run would have seen. Checkpoints are written atomically (temp file + rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from .checkpoints import make_card, save_native
from .models.zoo import build_model, count_parameters, get_model_config

STATE_FILE = "train_state.pt"


@dataclass
class TrainConfig:
    model: str
    data: str
    out_dir: str
    val_data: str | None = None
    steps: int = 1000
    batch_size: int = 8  # global batch (split across DDP processes)
    crop: tuple[int, int] = (256, 256)
    scale: tuple[float, float] = (0.75, 1.5)
    hflip: bool = True
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    grad_clip: float = 5.0
    seed: int = 0
    workers: int = 1
    threads: int | None = None
    device: str = "auto"
    amp: bool = True  # used on CUDA only
    eval_every: int = 250
    val_images: int = 64
    ckpt_every: int = 100
    half: bool = True  # store the final native checkpoint in float16
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init: str | None = None  # a checkpoint (bundled name or native path) whose matching weights start the model
    train_only: tuple[str, ...] = ()  # module path prefixes that train; the rest is frozen (and kept in eval mode)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["crop"], d["scale"], d["train_only"] = list(self.crop), list(self.scale), list(self.train_only)
        return d


# ------------------------------------------------------------------------------------------- augmentation
def augment(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, crop: tuple[int, int],
    scale: tuple[float, float], hflip: bool, ignore_index: int = 255, instances: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Random scale, random crop (padding with ignore), horizontal flip → ``(image, label)``.

    With ``instances`` (an id map, 0 = none) it gets the same geometry (nearest, padded with 0) and
    ``(image, label, instances)`` is returned; the random draws are the same either way.
    """
    s = float(rng.uniform(*scale))
    if abs(s - 1.0) > 1e-3:
        h, w = label.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        if instances is not None:  # float32 holds ids < 2**24 exactly; same nearest grid as the label's
            instances = cv2.resize(instances.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)
    ch, cw = crop
    h, w = label.shape
    if h < ch or w < cw:
        ph, pw = max(0, ch - h), max(0, cw - w)
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=ignore_index)
        if instances is not None:
            instances = np.pad(instances, ((0, ph), (0, pw)))
        h, w = label.shape
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    image, label = image[y0:y0 + ch, x0:x0 + cw], label[y0:y0 + ch, x0:x0 + cw]
    if instances is not None:
        instances = instances[y0:y0 + ch, x0:x0 + cw]
    if hflip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
        if instances is not None:
            instances = instances[:, ::-1]
    if instances is None:
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
    return np.ascontiguousarray(image), np.ascontiguousarray(label), np.ascontiguousarray(instances).astype(np.int32)


class _AugmentedItems(Dataset):
    """``dataset[(index, seed)]`` → augmented (image CHW float tensor, label HW int64 tensor)."""

    def __init__(self, dataset: Dataset, cfg: TrainConfig, ignore_index: int) -> None:
        self.dataset, self.cfg, self.ignore_index = dataset, cfg, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        item = self.dataset[index]
        label = np.asarray(item["label"]).astype(np.uint8 if self.ignore_index == 255 else np.int32)
        image, label = augment(np.asarray(item["image"]), label, np.random.default_rng(seed), tuple(self.cfg.crop),
                               tuple(self.cfg.scale), self.cfg.hflip, self.ignore_index)
        return torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(label.astype(np.int64))


@dataclass(frozen=True)
class DetectionClasses:
    """How a dataset's class ids map onto a detector's: thing class ``things[i]`` is ROI class ``i``; for Panoptic
    FPN, semantic channel 0 is every thing and channel ``i + 1`` is stuff class ``stuff[i]``."""

    things: tuple[int, ...]
    stuff: tuple[int, ...]

    @classmethod
    def of(cls, dataset: Any) -> "DetectionClasses":
        things = getattr(dataset, "thing_classes", None)
        if not things:
            raise ValueError(f"{type(dataset).__name__} declares no thing classes: a detector needs objects")
        things = tuple(int(c) for c in things)
        return cls(things, tuple(c for c in range(int(dataset.num_classes)) if c not in things))

    def targets(self, label: np.ndarray, instances: np.ndarray, panoptic: bool,
                ignore_index: int = 255) -> dict[str, torch.Tensor]:
        """Detector training targets from (augmented) label and instance maps."""
        from .data.instances import objects_from_maps, panoptic_semantic_target

        obj = objects_from_maps(label, instances, self.things)
        roi = {c: i for i, c in enumerate(self.things)}
        out = {"boxes": torch.from_numpy(obj.boxes),
               "classes": torch.tensor([roi[int(c)] for c in obj.classes], dtype=torch.int64),
               "masks": torch.from_numpy(obj.masks)}
        if panoptic:
            out["sem_seg"] = torch.from_numpy(panoptic_semantic_target(label, self.things, self.stuff, ignore_index))
        return out


class _DetectionItems(_AugmentedItems):
    """``dataset[(index, seed)]`` → augmented (image CHW float tensor, detector target dict)."""

    def __init__(self, dataset: Dataset, cfg: TrainConfig, ignore_index: int, classes: DetectionClasses,
                 panoptic: bool) -> None:
        super().__init__(dataset, cfg, ignore_index)
        self.classes, self.panoptic = classes, panoptic

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, seed = key
        item = self.dataset[index]
        label = np.asarray(item["label"]).astype(np.uint8 if self.ignore_index == 255 else np.int32)
        instances = np.asarray(item.get("instances", np.zeros(label.shape, np.int32))).astype(np.int32)
        image, label, instances = augment(
            np.asarray(item["image"]), label, np.random.default_rng(seed), tuple(self.cfg.crop),
            tuple(self.cfg.scale), self.cfg.hflip, self.ignore_index, instances=instances)
        target = self.classes.targets(label.astype(np.int64), instances, self.panoptic, self.ignore_index)
        return torch.from_numpy(image).permute(2, 0, 1).float(), target


def _collate_detection(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


class StepBatches:
    """Batch sampler whose step ``s`` is a pure function of ``(seed, s)``: epochs are seeded permutations."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} is not divisible by {world} processes")
        if n < global_batch:
            raise ValueError(f"dataset has {n} samples, fewer than one batch of {global_batch}")
        self.n, self.batch, self.seed, self.start, self.stop = n, global_batch, seed, start, stop
        self.rank, self.world = rank, world
        self.per_epoch = n // global_batch

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def indices(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return [int(i) for i in perm[pos * self.batch:(pos + 1) * self.batch]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            idx = self.indices(step)
            mine = list(range(self.rank, self.batch, self.world))
            yield [(idx[j], int(np.random.default_rng([self.seed, step, j]).integers(2**31))) for j in mine]


def _collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


# ------------------------------------------------------------------------------------------------ helpers
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then poly (power 0.9) decay to zero."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (1 - min(progress, 1.0)) ** 0.9


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def hardware_description(device: torch.device) -> str:
    """The machine in words for model cards (GPU name, or CPU model and torch threads)."""
    from .bench import hardware_string

    if device.type == "cuda":
        return hardware_string("cuda")
    return f"{hardware_string('cpu').rsplit(',', 1)[0]}, {torch.get_num_threads()} threads"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@torch.inference_mode()
def evaluate_miou(model: torch.nn.Module, dataset: Dataset, num_classes: int, limit: int,
                  device: torch.device, ignore_index: int = 255) -> dict[str, float]:
    """mIoU and pixel accuracy of ``model`` on the first ``limit`` images (full resolution)."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for i in range(min(limit, len(dataset))):
        item = dataset[i]
        pred = model.predict(np.asarray(item["image"])).argmax(0).cpu()
        gt = torch.as_tensor(np.asarray(item["label"]).astype(np.int64))
        keep = gt != ignore_index
        cm += torch.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes ** 2).view(num_classes, -1)
    if was_training:
        train_mode(model)
    tp = cm.diag().double()
    union = cm.sum(0).double() + cm.sum(1).double() - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return {"mIoU": float(np.nanmean(iou.numpy()) * 100), "pixel_acc": float(tp.sum() / cm.sum().clamp_min(1) * 100)}


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


# --------------------------------------------------------------------------------------------------- train
def _place(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world, device) of this process; joins the process group under ``torchrun``."""
    rank, world, local_rank = _dist_info()
    device = resolve_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _build(cfg: TrainConfig, train_set: Any, ignore_index: int, device: torch.device
           ) -> tuple[torch.nn.Module, str, "DetectionClasses | None"]:
    """The model to train (from scratch, seeded), its task and, for detectors, the dataset's classes."""
    torch.manual_seed(cfg.seed)
    overrides = dict(cfg.model_overrides)
    overrides.setdefault("backbone_norm", "BN")
    model_cfg = get_model_config(cfg.model)
    classes = DetectionClasses.of(train_set) if model_cfg.task != "semantic" else None
    if classes is not None:
        overrides.setdefault("freeze_at", 0)  # from scratch: every stage trains
        if model_cfg.task == "panoptic":
            overrides["sem_seg_num_classes"] = 1 + len(classes.stuff)
    model_classes = len(classes.things) if classes is not None else int(train_set.num_classes)
    model = build_model(cfg.model, num_classes=model_classes, ignore_index=ignore_index, **overrides).to(device)
    if cfg.init:
        got = initialise_from(model, cfg.init)
        new = sorted({".".join(k.split(".")[:2]) for k in got["kept"]})
        print(f"--init {cfg.init}: {len(got['loaded'])} weights loaded, {len(got['kept'])} start as initialised"
              + (f" ({', '.join(new)})" if new else "") + f", {len(got['skipped'])} of the checkpoint unused",
              file=sys.stderr)
    if cfg.train_only:
        n = freeze_except(model, cfg.train_only)
        print(f"--train-only {', '.join(cfg.train_only)}: {n:,} of {count_parameters(model):,} parameters train",
              file=sys.stderr)
    return model, model_cfg.task, classes


# what a backbone's weights mean beyond their shapes: its input normalisation and where it strides
INIT_MUST_MATCH = ("pixel_mean", "pixel_std", "input_format", "backbone", "depth", "stride_in_1x1", "backbone_norm")


def initialise_from(model: torch.nn.Module, spec: str) -> dict[str, list[str]]:
    """Copy every weight of the checkpoint ``spec`` (a bundled name or a native/official file) whose key and shape
    the model has; ``{"loaded": keys, "kept": model keys left as initialised, "skipped": checkpoint keys unused}``.
    The whole backbone must fit, trained on the same input (normalisation, channel order) with the same strides;
    otherwise :class:`~fapn_core.checkpoints.CheckpointError` says what differs."""
    from .checkpoints import CheckpointError, resolve_model

    source, _ = resolve_model(spec)
    theirs = source.state_dict()
    mine = model.state_dict()
    fits = {k: v for k, v in theirs.items() if k in mine and tuple(v.shape) == tuple(mine[k].shape)}
    misfit = [k for k in mine if k.startswith("backbone.") and k not in fits]
    if misfit:
        raise CheckpointError(f"--init {spec}: its backbone does not fit {model.config.name}'s ({len(misfit)} of "
                              f"its weights missing or of another shape, e.g. {misfit[0]}): another architecture, or "
                              "other widths (pass the --set overrides it was trained with)")
    # equal shapes are not enough where the input or the backbone's strides differ: those must be the same
    if getattr(source, "config", None) is not None:
        differ = [f for f in INIT_MUST_MATCH
                  if getattr(source.config, f, None) != getattr(model.config, f, None)]
        if differ:
            raise CheckpointError(f"--init {spec}: its backbone was trained with other " + ", ".join(
                f"{f} ({getattr(source.config, f)!r} there, {getattr(model.config, f)!r} here)" for f in differ)
                + "; pass them with --set")
    with torch.no_grad():
        for k, v in fits.items():
            mine[k].copy_(v.to(mine[k].dtype))
    return {"loaded": sorted(fits), "kept": sorted(set(mine) - set(fits)), "skipped": sorted(set(theirs) - set(fits))}


def freeze_except(model: torch.nn.Module, prefixes: Sequence[str]) -> int:
    """Train only the parameters under the module paths ``prefixes``; returns how many train. Frozen modules stay
    in eval mode during training (:func:`train_mode`), so their batch-norm statistics do not move either."""
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(n == p or n.startswith(p.rstrip(".") + ".") for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        raise ValueError(f"--train-only {', '.join(unknown)}: no parameter of {model.config.name} is under it "
                         f"(its modules: {', '.join(tops)})")
    trainable = 0
    for n, p in model.named_parameters():
        p.requires_grad_(any(n == q or n.startswith(q.rstrip(".") + ".") for q in prefixes))
        trainable += p.numel() if p.requires_grad else 0
    return trainable


def train_mode(model: torch.nn.Module) -> torch.nn.Module:
    """``model.train()``, except submodules without a trainable parameter (frozen by :func:`freeze_except`), which
    stay in eval mode."""
    model.train()
    for m in model.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()
    return model


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on weights only (not on norms and biases), over the trainable parameters."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _resume(state_path: Path, cfg: TrainConfig, model: torch.nn.Module, opt: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler) -> tuple[int, float, list[dict[str, Any]]]:
    """(step, elapsed seconds, history) of a saved run in this folder, its weights and optimizer restored."""
    if not state_path.is_file():
        return 0, 0.0, []
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    if state["config"]["model"] != cfg.model or state["config"]["data"] != cfg.data:
        raise ValueError(f"{state_path} belongs to another run ({state['config']['model']} on "
                         f"{state['config']['data']}); use another --out")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    return int(state["step"]), float(state["elapsed"]), json.loads(state["history"])


def _step(ddp_model: torch.nn.Module, model: torch.nn.Module, opt: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler, cfg: TrainConfig, step: int, images: Any, targets: Any,
          device: torch.device, detector: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step at ``step``'s learning rate; (total loss, losses by name)."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    if detector:  # the RPN/ROI samplers draw from torch's RNG: seeded per step, so a resume is exact
        torch.manual_seed(int(np.random.default_rng([cfg.seed, step, 1]).integers(2**62)))
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
    else:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
        losses = ddp_model(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower --lr or check the data")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    return loss, losses


def _card_classes(train_set: Any, classes: "DetectionClasses | None", task: str) -> dict[str, Any]:
    """The card's class fields: the dataset's classes, or a detector's thing (and stuff) classes with their ids."""
    num_classes = int(train_set.num_classes)
    names = list(getattr(train_set, "class_names", [f"class_{i}" for i in range(num_classes)]))
    palette = getattr(train_set, "palette", None)
    if classes is None:
        return {"classes": names, "palette": np.asarray(palette).tolist() if palette is not None else None}
    pal = np.asarray(palette) if palette is not None else None  # detectors: thing classes by ROI index
    fields: dict[str, Any] = {"classes": [names[c] for c in classes.things], "thing_category_ids": list(classes.things),
                              "palette": pal[list(classes.things)].tolist() if pal is not None else None}
    if task == "panoptic":
        fields.update(
            stuff_classes=["things"] + [names[c] for c in classes.stuff],
            stuff_category_ids=[None] + list(classes.stuff),
            stuff_palette=([[128, 128, 128]] + pal[list(classes.stuff)].tolist()) if pal is not None else None)
    return fields


def train(cfg: TrainConfig, *, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train ``cfg.model`` on ``cfg.data``; returns the final native checkpoint path (rank 0).

    ``stop_after``: leave after that many steps of this call (for tests of interruption/resume).
    """
    from .data import open_dataset

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, device = _place(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set = open_dataset(cfg.data)
    val_set = open_dataset(cfg.val_data) if cfg.val_data else None
    num_classes = int(train_set.num_classes)
    ignore_index = int(getattr(train_set, "ignore_index", 255))
    model, task, classes = _build(cfg, train_set, ignore_index, device)
    detector = classes is not None
    if world > 1 and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    opt = _optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    state_path = out / STATE_FILE
    start, elapsed, history = _resume(state_path, cfg, model, opt, scaler)
    ddp_model = model
    if world > 1:
        # detectors: a batch shard without foreground proposals leaves the mask head unused in that step
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=detector)

    stop = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    sampler = StepBatches(len(train_set), cfg.batch_size, cfg.seed, start, stop, rank, world)
    items = (_DetectionItems(train_set, cfg, ignore_index, classes, task == "panoptic") if classes is not None
             else _AugmentedItems(train_set, cfg, ignore_index))
    loader = DataLoader(items, batch_sampler=sampler, num_workers=cfg.workers,
                        collate_fn=_collate_detection if detector else _collate, persistent_workers=False)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.model}", unit="step", dynamic_ncols=True)

    def save_state(step: int) -> None:
        if rank != 0:
            return
        atomic_torch_save({
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
            "step": step, "elapsed": elapsed, "config": cfg.to_dict(), "history": json.dumps(history),
        }, state_path)

    train_mode(model)
    step = start
    t_last = time.perf_counter()
    for images, targets in loader:
        loss, losses = _step(ddp_model, model, opt, scaler, cfg, step, images, targets, device, detector)
        step += 1
        now = time.perf_counter()
        elapsed += now - t_last
        t_last = now
        record: dict[str, Any] = {"step": step, "loss": round(loss.item(), 5), "lr": lr_at(step - 1, cfg),
                                  "elapsed_s": round(elapsed, 1)}
        if detector:
            record["losses"] = {k: round(float(v.detach()), 5) for k, v in losses.items()}
        if val_set is not None and not detector and rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            record["val"] = evaluate_miou(model, val_set, num_classes, cfg.val_images, device, ignore_index)
            t_last = time.perf_counter()  # evaluation time is not training time
        history.append(record)
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.3f}", **({"val_mIoU": f"{record['val']['mIoU']:.1f}"}
                                                           if "val" in record else {}))
            bar.update(1)
        if rank == 0:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        if step % cfg.ckpt_every == 0 or step == stop:
            save_state(step)
    if bar is not None:
        bar.close()
    if world > 1:
        dist.barrier()
    final = out / f"{cfg.model}.safetensors"
    if step >= cfg.steps and rank == 0:
        vals = [h["val"] for h in history if "val" in h]
        card = make_card(
            model, **_card_classes(train_set, classes, task),
            training_data=cfg.data,
            metrics={"val": vals[-1], "val_data": cfg.val_data, "val_images": cfg.val_images} if vals else {},
            recipe=cfg.to_dict(),
            training={"steps": step, "wall_time_s": round(elapsed, 1), "hardware": hardware_description(device),
                      "processes": world, "torch": torch.__version__,
                      "final_loss": history[-1]["loss"] if history else None},
            num_params=count_parameters(model),
        )
        save_native(model.cpu(), final, card, half=cfg.half)
    return final
