"""``fapn`` command line: ``fapn models``, ``fapn convert IN OUT``, ``fapn info CKPT`` …"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def deco(fn):
        _COMMANDS[name] = fn
        return fn

    return deco


@command("models")
def _models(args: argparse.Namespace) -> int:
    from .models.zoo import build_model, count_parameters, list_models

    names = list_models(args.filter)
    if not args.params:
        print("\n".join(names))
        return 0
    print(f"{'model':32s} {'params (M)':>10s}")
    for name in names:
        print(f"{name:32s} {count_parameters(build_model(name)) / 1e6:10.3f}")
    return 0


@command("convert")
def _convert(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, convert

    card_fields = {}
    if args.classes:
        card_fields["classes"] = [c.strip() for c in args.classes.split(",")]
    try:
        out, report = convert(args.input, args.output, config=args.config, allow_partial=args.allow_partial,
                              half=args.half, **card_fields)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"fapn convert: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.with_suffix('.json')} ({report.summary()})")
    return 0


@command("info")
def _info(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, read_card

    try:
        card = read_card(args.checkpoint)
    except CheckpointError as e:
        print(f"fapn info: {e}", file=sys.stderr)
        return 2
    print(json.dumps(card, indent=2))
    return 0


def _pair(text: str, cast=int) -> tuple:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two values like 256x512, got {text!r}")
    return tuple(cast(p) for p in parts)


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"fapn: --set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(
        model=args.model, data=args.data, out_dir=args.out, val_data=args.val_data, steps=args.steps,
        batch_size=args.batch_size, crop=args.crop, scale=args.scale, lr=args.lr, weight_decay=args.weight_decay,
        warmup=args.warmup, seed=args.seed, workers=args.workers, threads=args.threads, device=args.device,
        amp=not args.no_amp, eval_every=args.eval_every, val_images=args.val_images, ckpt_every=args.ckpt_every,
        half=not args.fp32, model_overrides=_overrides(args.set), init=args.init,
        train_only=tuple(p for item in args.train_only for p in item.split(",") if p),
    )
    path = train(cfg)
    if path.exists():
        print(f"wrote {path}")
    return 0


@command("make-synthetic")
def _make_synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic import write_synthetic

    root = write_synthetic(args.out, args.n, seed=args.seed, size=args.size, split_name=args.split)
    print(f"wrote {args.n} samples to {root}")
    if args.coco or args.panoptic:
        from .data import coco
        from .data.datasets import FolderDataset

        written = coco.export_dataset(FolderDataset(root), root / "coco", instances=args.coco, panoptic=args.panoptic)
        print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .checkpoints import CheckpointError
    from .data import open_dataset
    from .evaluation import evaluate, load_models, load_predictions
    from .models.tta import TTASettings
    from .train import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
    device = resolve_device(args.device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(__import__("os").environ.get("LOCAL_RANK", "0")))
    if not args.models and not args.predictions:
        print("fapn evaluate: give --models and/or --predictions", file=sys.stderr)
        return 2
    try:
        dataset = open_dataset(args.data)
        models = load_models(args.models, device=str(device), tta=TTASettings() if args.tta else None)
        models += load_predictions(args.predictions, dataset, ids=args.prediction_ids,
                                   taken=[m.label for m in models])
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"fapn evaluate: {e}", file=sys.stderr)
        return 2
    report = evaluate(models, dataset, args.out, limit=args.limit, amp=args.amp, alignment=args.alignment)
    if report is not None:
        print((Path(args.out) / "tables.md").read_text())
        for label, r in report.predictions.items():
            problems = {k: r[k] for k in ("missing", "ambiguous", "extra", "unreadable", "size", "values") if r[k]}
            if problems:
                print(f"fapn evaluate: predictions {label} ({r['dir']}): "
                      + ", ".join(f"{v} {k}" for k, v in problems.items()) + f"; see {args.out}/summary.json",
                      file=sys.stderr)
    return 0


def _print_family(title: str, rows, stages) -> None:
    """One family's bench tables: models, FaPN/FPN ratios, time per stage."""
    from . import bench, bench_stages

    print(f"## {title}\n")
    print(bench.format_model_table(rows), "\n")
    print(bench.ratio_table(rows), "\n")
    print("Time per stage (ms, median):\n")
    print(bench_stages.format_stage_table(stages), "\n")


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    import platform

    import torch

    from . import bench, bench_stages
    from .models import dcn_ext
    from .models.zoo import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# fapn bench on {device}: {bench.hardware_string(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, python {platform.python_version()}")
    if device == "cpu":
        print(f"# {dcn_ext.status()}")
    print()
    say = (lambda s: print(f"  … {s}", file=sys.stderr, flush=True))
    if "dcn" in args.what:
        shapes = bench.dcn_shapes(args.channels, args.sizes)
        rows = bench.bench_dcn(shapes, repeats=args.repeats, device=device, progress=say,
                               backward=not args.no_backward)
        print("## Deformable conv (FaPN shapes: p2/p3/p4, 8 groups, batch 1)\n")
        print(bench.format_dcn_table(rows), "\n")
    if "models" in args.what:
        rows = bench.bench_models(args.models, args.sizes, repeats=args.repeats, device=device, amp=args.amp,
                                  channels_last=args.channels_last, trained_offsets=not args.zero_offsets,
                                  progress=say)
        print("## Whole models (inference, batch 1)\n")
        print("FaPN offsets: " + ("zero (the official initialisation)" if args.zero_offsets else
                                  "as large as trained ones (RMS " + "/".join(
                                      f"{v:g}" for v in bench.TRAINED_OFFSET_RMS.values()) + " feature px at p2/p3/p4)")
              + "; input: a synthetic street scene\n")
        print(bench.format_model_table(rows), "\n")
        print(bench.ratio_table(rows), "\n")
    if "rcnn" in args.what:
        rows, stages = bench_stages.bench_rcnn(args.rcnn_models, args.rcnn_size, repeats=args.repeats, device=device,
                                               trained_offsets=not args.zero_offsets, progress=say)
        _print_family(f"R-CNN family (inference, batch 1, {args.rcnn_size}, 80 COCO classes, random weights, 1000 "
                      "fixed COCO-like proposals, 100 detections)", rows, stages)
        for n, st in stages.items():
            if st.get("paste"):
                print(f"- {n}: the mask paste is {100 * st['paste'] / st['total']:.1f} % of the total")
        print()
        say("end to end vs the sum of the stages")
        models = {}
        image = bench_stages.scene_image(bench_stages.parse_size(args.rcnn_size))
        for n in args.rcnn_models:
            m = build_model(n, **bench_stages.RCNN_FIXED).eval()
            if not args.zero_offsets:
                bench.set_trained_like_offsets(m, bench_stages.scene(image))
            bench_stages.fix_proposals(m, image.shape[:2])
            models[n] = m
        e2e = bench_stages.rcnn_end_to_end(models, image, repeats=args.repeats)
        print("`predict(image)` end to end vs its stages run one after another (ms, median):\n")
        print(bench_stages.format_end_to_end_table(e2e), "\n")
    if "maskformer" in args.what:
        rows, stages = bench_stages.bench_maskformer(args.maskformer_models, args.maskformer_size,
                                                     repeats=args.repeats, device=device,
                                                     trained_offsets=not args.zero_offsets, progress=say)
        _print_family(f"MaskFormer (inference, batch 1, {args.maskformer_size}, the releases' class counts, random "
                      "weights)", rows, stages)
    if "panopticfcn" in args.what:
        rows, stages = bench_stages.bench_panopticfcn(args.panopticfcn_models, args.rcnn_size, repeats=args.repeats,
                                                      device=device, trained_offsets=not args.zero_offsets,
                                                      progress=say)
        _print_family(f"PanopticFCN (inference, batch 1, {args.rcnn_size}, 80 thing / 53 stuff classes, random "
                      "weights, thresholds 0: every level keeps its full top-k)", rows, stages)
    if "subdivision" in args.what:
        image = bench_stages.scene_image(bench_stages.parse_size(args.rcnn_size))
        times = {}
        for n in args.pointrend_models:
            say(f"subdivision, {n}")
            m = build_model(n, num_classes=80).eval()
            x = bench_stages.scene(image)
            if not args.zero_offsets:
                bench.set_trained_like_offsets(m, x)
            times[n] = bench_stages.subdivision_times(m, x, repeats=args.repeats)
        print(f"## PointRend instance: mask head per detection count ({args.rcnn_size}, 80 classes, fixed COCO-like "
              "boxes; ms, median)\n")
        print(bench_stages.format_subdivision_table(times), "\n")
    if "train" in args.what:
        t = bench.bench_train_step(["fpn_r18_semfpn", "fapn_r18_semfpn"], repeats=args.repeats, device=device)
        print("## Training step (R18 Semantic FPN, batch 8, 256×256 crops, AdamW)\n")
        print("| model | step s |\n|---|---:|")
        for k, v in t.items():
            print(f"| {k} | {v:.2f} |")
        print(f"\nFaPN / FPN step ratio: {t['fapn_r18_semfpn'] / t['fpn_r18_semfpn']:.2f}\n")
    return 0


@command("build-ext")
def _build_ext(args: argparse.Namespace) -> int:
    from .models import dcn_ext

    try:
        path = dcn_ext.build(verbose=args.verbose)
    except Exception as e:  # noqa: BLE001 - any compiler/toolchain failure means "use the PyTorch path"
        print(f"fapn build-ext: could not build the compiled CPU DCN ({type(e).__name__}: {e}); "
              "models use the PyTorch fast path instead", file=sys.stderr)
        return 1
    print(f"compiled CPU DCN ready: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fapn", description="FaPN Lab: FaPN vs FPN segmentation tools")
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list the registered model names")
    m.add_argument("filter", nargs="?", default="", help="substring to filter names")
    m.add_argument("--params", action="store_true", help="also build each model and print its parameter count")
    c = sub.add_parser("convert", help="official detectron2/FaPN-full checkpoint (.pth/.pkl) → native safetensors")
    c.add_argument("input")
    c.add_argument("output", help="output .safetensors path (a .json model card is written beside it)")
    c.add_argument("--config", help="detectron2 config dump (YAML) of the checkpoint; inferred from keys if absent")
    c.add_argument("--classes", help="comma-separated class names for the model card")
    c.add_argument("--allow-partial", action="store_true", help="load what matches instead of refusing")
    c.add_argument("--half", action="store_true", help="store float tensors as float16")
    i = sub.add_parser("info", help="print the model card of a native checkpoint")
    i.add_argument("checkpoint")
    t = sub.add_parser("train", help="train a model (CPU/CUDA; run under torchrun for DDP)")
    t.add_argument("--model", required=True, help="registered model name, e.g. fapn_r18_semfpn")
    t.add_argument("--data", required=True, help="dataset spec, e.g. synthetic:n=3000,seed=0 or folder:/path")
    t.add_argument("--val-data", help="validation dataset spec")
    t.add_argument("--out", required=True, help="run folder (resumes from its train_state.pt if present)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=8, help="global batch size")
    t.add_argument("--crop", type=_pair, default=(256, 256), help="training crop HxW")
    t.add_argument("--scale", type=lambda s: _pair(s, float), default=(0.75, 1.5), help="scale jitter range, e.g. 0.75x1.5")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1, help="data-loading worker processes")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--val-images", type=int, default=64)
    t.add_argument("--ckpt-every", type=int, default=100)
    t.add_argument("--fp32", action="store_true", help="store the final checkpoint in float32 (default float16)")
    t.add_argument("--init", metavar="CHECKPOINT",
                   help="start from the weights of this checkpoint (bundled name or file) wherever key and shape fit, "
                        "e.g. a Panoptic FPN's backbone and neck for a PanopticFCN; the rest starts as initialised")
    t.add_argument("--train-only", action="append", default=[], metavar="PREFIX[,PREFIX]",
                   help="train only the modules under these paths (e.g. roi_heads.mask_head); the rest is frozen "
                        "and kept in eval mode (repeatable)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, e.g. --set neck_channels=96 (repeatable)")
    ms = sub.add_parser("make-synthetic", help="write the synthetic street benchmark as a folder dataset")
    ms.add_argument("out")
    ms.add_argument("--n", type=int, default=200)
    ms.add_argument("--seed", type=int, default=0)
    ms.add_argument("--size", type=_pair, default=(256, 512), help="HxW")
    ms.add_argument("--split", default="train", help="split name used in file names")
    ms.add_argument("--coco", action="store_true", help="also write the ground truth as COCO instances JSON (RLE), "
                    "coco/instances.json")
    ms.add_argument("--panoptic", action="store_true", help="also write COCO panoptic ground truth, "
                    "coco/panoptic.json + coco/panoptic/*.png")
    e = sub.add_parser("evaluate", help="every metric over a dataset for one or more models or saved "
                       "prediction sets (first = baseline)")
    e.add_argument("--models", nargs="+", default=[], help="bundled model names or checkpoint paths")
    e.add_argument("--predictions", nargs="+", default=[], metavar="LABEL=DIR",
                   help="folders of saved prediction PNGs (<name>.png, <name>_pred.png or the official Cityscapes "
                        "results naming), scored after the models")
    e.add_argument("--prediction-ids", default="auto", choices=["auto", "labelIds", "trainIds"],
                   help="ids in the prediction PNGs: Cityscapes labelIds, trainIds (the dataset's class ids), "
                        "or auto (decided per folder)")
    e.add_argument("--data", required=True, help="dataset spec (see fapn train --help)")
    e.add_argument("--out", required=True, help="output folder (resumes if it holds an unfinished run)")
    e.add_argument("--limit", type=int, help="only the first N images")
    e.add_argument("--device", default="auto")
    e.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    e.add_argument("--threads", type=int, help="torch CPU threads")
    e.add_argument("--alignment", action="store_true",
                   help="also measure whether each FaPN-family model's FAM aligns (table 'alignment')")
    e.add_argument("--tta", action="store_true",
                   help="also score each semantic model with multi-scale + flip test-time augmentation (detectron2's "
                        "TEST.AUG: short side 320..1120, long side <= 4480), as '<model> (TTA)' beside the "
                        "single-scale row")
    b = sub.add_parser("bench", help="DCN, whole-model and training-step benchmarks (printed as tables)")
    b.add_argument("what", nargs="*", default=["dcn", "models", "train"], choices=["dcn", "models", "train", "rcnn",
                                                                                   "maskformer", "panopticfcn",
                                                                                   "subdivision"])
    b.add_argument("--rcnn-models", nargs="+", default=["fpn_r50_maskrcnn", "fapn_r50_maskrcnn"])
    b.add_argument("--rcnn-size", default="800x1333")
    b.add_argument("--maskformer-models", nargs="+", default=["fpn_swinl_maskformer", "fapn_swinl_maskformer"])
    b.add_argument("--maskformer-size", default="640x640")
    b.add_argument("--panopticfcn-models", nargs="+", default=["fpn_r50_panopticfcn", "fapn_r50_panopticfcn"])
    b.add_argument("--pointrend-models", nargs="+", default=["fpn_r50_pointrend_rcnn", "fapn_r50_pointrend_rcnn"],
                   help="models of the 'subdivision' table (PointRend's mask head per detection count)")
    b.add_argument("--device", default="auto")
    b.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    b.add_argument("--channels", nargs="+", type=int, default=[128, 256])
    b.add_argument("--models", nargs="+",
                   default=["fpn_r18_semfpn", "fapn_r18_semfpn", "fpn_r50_semfpn", "fapn_r50_semfpn"])
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    b.add_argument("--no-backward", action="store_true", help="DCN: forward only")
    b.add_argument("--channels-last", action="store_true", help="models in channels-last memory format")
    b.add_argument("--zero-offsets", action="store_true",
                   help="time FaPN with its initial all-zero offsets (default: offsets as large as trained ones)")
    b.add_argument("--threads", type=int)
    x = sub.add_parser("build-ext", help="compile the fast CPU deformable conv (optional; needs a C++ compiler)")
    x.add_argument("--verbose", action="store_true")
    for extra in _EXTRA_PARSERS:
        extra(sub)
    return p


_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
