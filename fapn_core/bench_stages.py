"""Where inference time goes, per family: time per stage (R-CNN, MaskFormer, PanopticFCN), the R-CNN predictor
end to end against the sum of its stages run one by one, and PointRend's subdivision time per instance count.

Stages are timed with forward hooks on modules and with wrappers around the plain functions a stage calls
(:func:`stage_times`); whatever no stage claims is reported as the last stage ("… + rest"), so the stages of a
run always add up to its total. Models are compared round-robin (one timed run each per round) so that machine
load affects every model alike, as in :mod:`fapn_core.bench`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np
import torch

from .bench import SIZES, ModelRow, _sync, bench_models, interleaved_medians, set_trained_like_offsets
from .models.zoo import build_model

# a stage is timed through modules (forward hooks) or through (owner, attribute) functions (temporary wrappers)
Timed = Union[torch.nn.Module, tuple[Any, str], Sequence[Union[torch.nn.Module, tuple[Any, str]]]]

RCNN_STAGES = ("backbone", "neck", "rpn", "box head", "mask head", "semantic head", "postprocess + paste")
MASKFORMER_STAGES = ("backbone", "pixel decoder", "transformer", "semantic inference + rest")
PANOPTICFCN_STAGES = ("backbone", "neck", "heads", "peak selection", "kernel fusion", "post-processing + rest")


@contextlib.contextmanager
def _wrapped(owner: Any, attr: str, on_time: Callable[[float], None]) -> Iterator[None]:
    """Replace ``owner.attr`` (a function or bound method) by a timing wrapper for the block."""
    own = attr in vars(owner)  # an instance attribute to restore, or a class method to un-shadow
    original = getattr(owner, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            on_time(time.perf_counter() - t)

    setattr(owner, attr, timed)
    try:
        yield
    finally:
        if own:
            setattr(owner, attr, original)
        else:
            delattr(owner, attr)


def stage_times(run: Callable[[], Any], timed: dict[str, Timed], repeats: int = 3,
                device: torch.device | None = None, warmup: bool = True) -> dict[str, float]:
    """Median milliseconds each named stage takes per ``run()`` and of the whole call (``total``), after one
    warm-up call (``warmup``).

    A stage is a module (forward hooks), an ``(owner, "attribute")`` function (wrapped for the measurement), or a
    list of both (summed). Nested calls of one stage inside another are counted in both: name disjoint parts.
    """
    dev = device or torch.device("cpu")
    samples: dict[str, list[float]] = {k: [] for k in [*timed, "total"]}
    current: dict[str, float] = {}
    starts: dict[int, float] = {}

    def add(name: str) -> Callable[[float], None]:
        def on_time(dt: float) -> None:
            current[name] = current.get(name, 0.0) + dt
        return on_time

    def pre(mod, inputs):
        _sync(dev)
        starts[id(mod)] = time.perf_counter()

    def post(name: str):
        def hook(mod, inputs, out):
            _sync(dev)
            add(name)(time.perf_counter() - starts[id(mod)])
        return hook

    with contextlib.ExitStack() as stack:
        for name, parts in timed.items():
            for part in ([parts] if isinstance(parts, (torch.nn.Module, tuple)) else list(parts)):
                if isinstance(part, torch.nn.Module):
                    for h in (part.register_forward_pre_hook(pre), part.register_forward_hook(post(name))):
                        stack.callback(h.remove)
                else:
                    stack.enter_context(_wrapped(*part, add(name)))
        with torch.inference_mode():
            if warmup:
                run()
            for _ in range(repeats):
                current.clear()
                _sync(dev)
                t = time.perf_counter()
                run()
                _sync(dev)
                samples["total"].append(time.perf_counter() - t)
                for n in timed:
                    samples[n].append(current.get(n, 0.0))
    return {k: statistics.median(v) * 1000 if v else 0.0 for k, v in samples.items()}


def _with_rest(med: dict[str, float], parts: Sequence[str], rest: str) -> dict[str, float]:
    out = {k: med[k] for k in parts}
    out[rest] = med["total"] - sum(out.values())
    out["total"] = med["total"]
    return out


def detector_stage_times(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Median milliseconds per stage of one detector inference ``model(x)``.

    ``box head`` = ROI heads minus the mask branch (box pooler, fc head, predictor, score filter and class NMS);
    ``paste`` = the mask paste alone (part of ``postprocess + paste``); ``postprocess + paste`` = the whole forward
    minus every other stage (preprocess, box scaling, mask paste, panoptic combine).
    """
    from .models.rcnn import detector as detector_module

    timed: dict[str, Timed] = {"backbone": model.backbone, "neck": model.neck, "rpn": model.proposal_generator,
                               "roi": model.roi_heads, "paste": (detector_module, "paste_masks")}
    if getattr(model.roi_heads, "mask_on", False):  # PointRend's mask head pools and samples points itself
        pooler = getattr(model.roi_heads, "mask_pooler", None)
        timed["mask"] = [model.roi_heads.mask_head, *([pooler] if pooler is not None else [])]
    if hasattr(model, "head"):
        timed["semantic head"] = model.head
    med = stage_times(lambda: model(x), timed, repeats, x.device)
    mask = med.get("mask", 0.0)
    out = {"backbone": med["backbone"], "neck": med["neck"], "rpn": med["rpn"], "box head": med["roi"] - mask,
           "mask head": mask, "semantic head": med.get("semantic head", 0.0)}
    out["postprocess + paste"] = med["total"] - sum(out.values())
    out["paste"] = med["paste"]
    out["total"] = med["total"]
    return out


def maskformer_stage_times(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Median milliseconds per stage of one MaskFormer inference: backbone, pixel decoder (levels and the mask
    features), transformer predictor (decoder, class and mask embeddings), and the rest (normalisation, padding,
    semantic inference: mask upsampling, softmax × sigmoid, crop)."""
    med = stage_times(lambda: model(x), {"backbone": model.backbone,
                                         "pixel decoder": [model.neck, model.neck.mask_features],
                                         "transformer": model.head}, repeats, x.device)
    return _with_rest(med, MASKFORMER_STAGES[:3], MASKFORMER_STAGES[3])


def panopticfcn_stage_times(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Median milliseconds per stage of one PanopticFCN inference: backbone; neck (+ P6/P7); heads (semantic FPN,
    feature encoder, position and kernel heads on p3–p7); peak selection (centre smoothing, max-pool NMS, top-k,
    stuff candidates per level, the merge); kernel fusion (thing and stuff kernel embedding and fusion); and the
    rest (mask logits, rescoring, resizing, boxes, stuff maps, panoptic combine, preprocess)."""
    from .models.panopticfcn import inference

    timed: dict[str, Timed] = {
        "backbone": model.backbone, "neck": [model.neck, model.top_block],
        "heads": [model.semantic_fpn, model.feature_encoder, model.position_head, model.kernel_head],
        "peak selection": [(inference, "select_levels"), (inference, "merge_things")],
        "kernel fusion": [(model.thing_generator, "embed"), (model.stuff_generator, "embed"),
                          (inference, "fuse_thing_kernels"), (inference, "fuse_stuff_kernels")],
    }
    med = stage_times(lambda: model(x), timed, repeats, x.device)
    return _with_rest(med, PANOPTICFCN_STAGES[:5], PANOPTICFCN_STAGES[5])


def part_times(model: torch.nn.Module, x: torch.Tensor, repeats: int = 1, warmup: bool = True) -> dict[str, float]:
    """Median milliseconds per part of :func:`fapn_core.models.parts.model_parts` for one ``model(x)``, ``rest``
    (what runs outside the parts' modules: box decoding, NMS, paste, kernel fusion, post-processing) and
    ``total``."""
    from .models.parts import model_parts

    parts = model_parts(model)
    med = stage_times(lambda: model(x), {k: [model.get_submodule(p) for p in v] for k, v in parts.items()},
                      repeats, x.device, warmup)
    return _with_rest(med, list(parts), "rest")


# --------------------------------------------------------------------------------------- fixed detector work
def random_boxes(n: int, image_hw: tuple[int, int], *, min_side: float = 16.0, max_side: float = 512.0,
                 seed: int = 0) -> torch.Tensor:
    """(n, 4) XYXY boxes inside the image, sides log-uniform in [min_side, max_side] (COCO-like sizes)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = image_hw
    sides = torch.exp(torch.empty(n, 2).uniform_(np.log(min_side), np.log(max_side), generator=gen))
    sides = torch.minimum(sides, torch.tensor([w - 1.0, h - 1.0]))
    x0 = torch.rand(n, generator=gen) * (w - sides[:, 0])
    y0 = torch.rand(n, generator=gen) * (h - sides[:, 1])
    return torch.stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]], 1)


def fix_proposals(model: torch.nn.Module, image_hw: tuple[int, int], n: int = 1000,
                  seed: int = 0) -> torch.utils.hooks.RemovableHandle:
    """Replace the RPN's proposals by ``n`` fixed COCO-like boxes (the RPN still runs and is timed).

    A random-weight RPN regresses anchors into degenerate boxes (a few hundred survive, then nearly every
    detection is empty and nothing is pasted); trained RPNs give objects of every size. With these proposals the
    box head, the mask head and the paste do a trained model's work, the same in every model compared.
    """
    boxes = random_boxes(n, image_hw, seed=seed)

    def replace(module, inputs, output):
        proposals, losses = output
        out = [{"boxes": boxes.to(p["boxes"].device, p["boxes"].dtype),
                "objectness_logits": torch.linspace(1, 0, n, device=p["boxes"].device),
                "levels": torch.zeros(n, dtype=torch.int64, device=p["boxes"].device)} for p in proposals]
        return out, losses

    return model.proposal_generator.register_forward_hook(replace)


# ------------------------------------------------------------------------------------------- family benches
def parse_size(size: str) -> tuple[int, int]:
    """``"800x1333"`` (or a name of ``SIZES``) → (H, W)."""
    return SIZES[size] if size in SIZES else tuple(int(v) for v in size.split("x"))


def scene_image(hw: tuple[int, int]) -> np.ndarray:
    """The benchmarks' input: a synthetic street scene (H, W, 3) uint8 (learned-like offsets then vary smoothly
    as they do on photos, unlike on noise)."""
    from .data.synthetic import make_sample

    return make_sample(0, seed=2, size=hw).image


def scene(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """An (H, W, 3) uint8 image as the (1, 3, H, W) float batch models take."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)


def _bench_family(names: Sequence[str], size: str, stages: Callable[[torch.nn.Module, torch.Tensor, int], dict],
                  *, repeats: int, device: str, trained_offsets: bool, progress: Callable[[str], None] | None,
                  build: Callable[[str], dict[str, Any]], prepare: Callable[[torch.nn.Module, tuple], Any] | None = None,
                  ) -> tuple[list[ModelRow], dict[str, dict[str, float]]]:
    """The :func:`~fapn_core.bench.bench_models` row of each model and its stage times (medians of round-robin
    runs); ``build(name)`` gives each model's build overrides, ``prepare`` fixes its work (e.g. its proposals)."""
    hw = parse_size(size)
    dev = torch.device(device)
    rows = [r for n in names for r in bench_models([n], [size], repeats=repeats, device=device,
                                                   trained_offsets=trained_offsets, progress=progress,
                                                   prepare=prepare, **build(n))]
    x = scene(scene_image(hw), dev)
    models = {n: build_model(n, **build(n)).to(dev).eval() for n in names}
    for m in models.values():
        if trained_offsets:
            set_trained_like_offsets(m, x)
        if prepare is not None:
            prepare(m, hw)
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(repeats):
        if progress:
            progress(f"stages, round {r + 1}/{repeats}")
        for n, m in models.items():
            runs[n].append(stages(m, x, 1))
    return rows, {n: {k: statistics.median(d[k] for d in v) for k in v[0]} for n, v in runs.items()}


# Fixed detector work: RPN NMS at 1.0 and a score threshold of 0 give the full 100 detections to the mask head and
# the paste, on the fixed proposals of :func:`fix_proposals` — a trained model's worst case, the same for all.
RCNN_FIXED = dict(score_thresh_test=0.0, rpn_nms_thresh=1.0, num_classes=80)


def bench_rcnn(names: Sequence[str], size: str = "800x1333", *, repeats: int = 3, device: str = "cpu",
               trained_offsets: bool = True, progress: Callable[[str], None] | None = None,
               ) -> tuple[list[ModelRow], dict[str, dict[str, float]]]:
    """Detectors at one input size (80 classes, 1000 fixed proposals, 100 detections): latency, FLOPs, peak
    memory and time per stage (:func:`detector_stage_times`, with the paste's share)."""
    return _bench_family(names, size, detector_stage_times, repeats=repeats, device=device,
                         trained_offsets=trained_offsets, progress=progress, build=lambda n: RCNN_FIXED,
                         prepare=lambda m, hw: fix_proposals(m, hw))


def bench_maskformer(names: Sequence[str], size: str = "640x640", *, repeats: int = 3, device: str = "cpu",
                     trained_offsets: bool = True, progress: Callable[[str], None] | None = None,
                     ) -> tuple[list[ModelRow], dict[str, dict[str, float]]]:
    """MaskFormer models at one input size (random weights, each release's class count): latency, FLOPs (DCN and
    attention counted), peak memory and :func:`maskformer_stage_times`."""
    from .models.zoo import get_model_config

    return _bench_family(names, size, maskformer_stage_times, repeats=repeats, device=device,
                         trained_offsets=trained_offsets, progress=progress,
                         build=lambda n: {"num_classes": get_model_config(n).num_classes})


def bench_panopticfcn(names: Sequence[str], size: str = "800x1333", *, repeats: int = 3, device: str = "cpu",
                      trained_offsets: bool = True, progress: Callable[[str], None] | None = None,
                      ) -> tuple[list[ModelRow], dict[str, dict[str, float]]]:
    """PanopticFCN models at one input size (the releases' 80 thing / 53 stuff classes, random weights): latency,
    FLOPs, peak memory and :func:`panopticfcn_stage_times`. Random centre heads put few peaks above the 0.1
    threshold, so the thresholds are set to 0: every level keeps its full top-k of thing candidates and every stuff
    class (a trained model's worst case, the same work for every model compared)."""
    return _bench_family(names, size, panopticfcn_stage_times, repeats=repeats, device=device,
                         trained_offsets=trained_offsets, progress=progress,
                         build=lambda n: {"center_thresh": 0.0, "stuff_thresh": 0.0})


# ------------------------------------------------------------------------------- R-CNN: end to end vs stages
def rcnn_end_to_end(models: dict[str, torch.nn.Module], image: np.ndarray, repeats: int = 5,
                    ) -> dict[str, dict[str, float]]:
    """Per model: ``predict(image)`` end to end beside its stages run one after another on the previous stage's
    output (preprocess, backbone, neck, RPN, ROI heads, postprocess with the paste), all round-robin; medians in ms
    and the overhead of the end-to-end call over the sum of the stages (``overhead %``)."""
    out: dict[str, dict[str, float]] = {}
    fns: dict[str, Callable[[], Any]] = {}
    state: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        st: dict[str, Any] = {}
        state[name] = st

        def pre(m=m, st=st):
            st["x"], st["sizes"] = m.preprocess([m.image_tensor(image).to(m.device, torch.float32)])

        stages = {
            "preprocess": pre,
            "backbone": lambda m=m, st=st: st.__setitem__("f", m.backbone(st["x"])),
            "neck": lambda m=m, st=st: st.__setitem__("f", m.neck(st["f"])),
            "rpn": lambda m=m, st=st: st.__setitem__("p", m.proposal_generator(st["f"], st["sizes"])[0]),
            "roi heads": lambda m=m, st=st: st.__setitem__("d", m.roi_heads(st["f"], st["p"], st["sizes"])[0]),
            "postprocess + paste": lambda m=m, st=st: m.postprocess(st["d"][0], st["sizes"][0], st["sizes"][0]),
        }
        for k, fn in stages.items():
            fns[f"{name}|{k}"] = fn
        fns[f"{name}|end to end"] = lambda m=m: m.predict(image)
    with torch.inference_mode():
        # stage functions depend on the previous one's output: keep each model's stages in order within a round
        med = interleaved_medians(fns, repeats)
    for name in models:
        row = {k.split("|", 1)[1]: v * 1000 for k, v in med.items() if k.startswith(f"{name}|")}
        row["sum of stages"] = sum(v for k, v in row.items() if k != "end to end")
        row["overhead %"] = 100 * (row["end to end"] / row["sum of stages"] - 1)
        out[name] = row
    return out


# ------------------------------------------------------------------------------- PointRend: subdivision cost
def subdivision_times(model: torch.nn.Module, x: torch.Tensor, counts: Sequence[int] = (10, 50, 100),
                      repeats: int = 3, seed: int = 0) -> dict[int, dict[str, float]]:
    """PointRend's mask head on exactly ``n`` detections per count (fixed COCO-like boxes, random classes) on the
    model's own features of ``x``: medians in ms of the coarse head, the subdivision steps (point selection,
    fine-grained sampling, point head, scatter; = the mask head minus its coarse head, in the same run) and the
    paste of the final masks, counts measured round-robin."""
    from .models.rcnn import mask_head as mask_module

    head = model.roi_heads.mask_head
    with torch.inference_mode():
        xb, sizes = model.preprocess(x)
        feats = model.neck(model.backbone(xb))
    hw = sizes[0]
    gen = torch.Generator().manual_seed(seed)
    cases = {n: (random_boxes(n, hw, seed=seed + n).to(xb.device),
                 torch.randint(0, head.num_classes, (n,), generator=gen).to(xb.device)) for n in counts}
    timed: dict[str, Timed] = {"coarse head": (head, "coarse_logits"), "mask head": (head, "forward"),
                               "paste": (mask_module, "paste_masks")}
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for r in range(repeats):
        for n, (boxes, classes) in cases.items():
            def run(boxes=boxes, classes=classes):
                probs = head(feats, [boxes], classes).mask_logits.sigmoid()
                return mask_module.paste_masks(probs, boxes, hw)
            runs[n].append(stage_times(run, timed, 1, xb.device, warmup=r == 0))
    out: dict[int, dict[str, float]] = {}
    for n, v in runs.items():
        med = {k: statistics.median(d[k] for d in v) for k in ("coarse head", "mask head", "paste")}
        steps = med["mask head"] - med["coarse head"]
        out[n] = {"coarse head": med["coarse head"], "subdivision steps": steps, "paste": med["paste"],
                  "per instance (steps)": steps / n}
    return out


# ------------------------------------------------------------------------------------------------- tables
def format_stage_table(stages: dict[str, dict[str, float]]) -> str:
    """Stages as rows, models as columns (ms); stages a family does not have are left out."""
    names = list(stages)
    lines = ["| stage | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for st in dict.fromkeys((*RCNN_STAGES, "paste", *MASKFORMER_STAGES, *PANOPTICFCN_STAGES, "total")):
        if all(stages[n].get(st, 0.0) == 0.0 for n in names):
            continue
        label = "(of which: mask paste)" if st == "paste" else st
        lines.append(f"| {label} | " + " | ".join(f"{stages[n].get(st, 0.0):.0f}" for n in names) + " |")
    return "\n".join(lines)


def format_end_to_end_table(rows: dict[str, dict[str, float]]) -> str:
    """:func:`rcnn_end_to_end` as a table (ms; the last row is the end-to-end overhead in %)."""
    names = list(rows)
    keys = [k for k in next(iter(rows.values())) if k != "overhead %"]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{rows[n][k]:.0f}" for n in names) + " |")
    lines.append("| end to end ÷ sum of stages − 1 | " + " | ".join(f"{rows[n]['overhead %']:+.1f} %" for n in names)
                 + " |")
    return "\n".join(lines)


def format_subdivision_table(times: dict[str, dict[int, dict[str, float]]]) -> str:
    """:func:`subdivision_times` of one or more models as one table (ms)."""
    lines = ["| model | detections | coarse head | subdivision steps | per instance | paste of the final masks |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, per in times.items():
        for n, t in per.items():
            lines.append(f"| {name} | {n} | {t['coarse head']:.0f} | {t['subdivision steps']:.0f} | "
                         f"{t['per instance (steps)']:.1f} | {t['paste']:.0f} |")
    return "\n".join(lines)
