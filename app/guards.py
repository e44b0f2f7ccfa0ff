"""Page guards and the lines every page shares: what is missing before a page can run, the status line with the
out-of-domain notice, and the dispatch of a page's object / label-map sections by what the pair has."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st
from app import releases, ui
from app.cache import inference_count
from app.context import Context
from fapn_core.models import dcn_ext


def wall_time(ms: float) -> str:
    """A duration as people read it: ``850 ms``, ``11.5 s``."""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def status_line(ctx: Context) -> None:
    """Device, each model's wall time on this image (labelled as such: not a benchmark) and whether its inference
    came from the cache; then the out-of-domain notice where it applies (:func:`domain_note`)."""
    if not ctx.ready:
        return
    parts = [f"device **{ctx.device}**" + (" · AMP" if ctx.amp else "")]
    if str(ctx.device).startswith("cpu"):
        parts.append("deformable conv: " + ("compiled CPU kernel" if dcn_ext.load() is not None
                                            else "PyTorch path (run `fapn build-ext` for the faster compiled one)"))
    times, counts = [], []
    for slot, handle in (("A", ctx.a), ("B", ctx.b)):
        pred = ctx.prediction(slot.lower())
        n = inference_count(handle.key, ctx.image_key, ctx.amp)
        times.append(f"{slot} `{handle.display_name}` {wall_time(pred.latency_ms)}")
        counts.append("once" if n <= 1 else f"{n}×")
    parts.append("this run's wall time for one pass on this image: " + ", ".join(times)
                 + f" (computed {' / '.join(counts)}, cached for all pages; not a benchmark — compare speed on "
                   "**Models & speed**)")
    st.caption(" · ".join(parts))
    domain_note(ctx)


# ------------------------------------------------------------------------------------ out-of-domain notice
def _listed(names: list[str]) -> str:
    return f"{len(names)} classes: {', '.join(names)}"


def _task_sentence(task: str, card: dict, head: str = "") -> str:
    """What a model of ``task`` (of the family ``head``) trained on the synthetic scenes does on other images, and
    that family's (else that task's) releases to load."""
    from app.models import HEADS

    things = [str(c) for c in card.get("classes") or []]
    names = releases.releases_for(task, head=head or None)
    where = "one of the releases on the About page"
    if len(names) == 2:
        where = (f"e.g. the {releases.dataset_of(names[0], task)} release `{names[0]}` (FaPN) or `{names[1]}` (its "
                 "FPN baseline)")
    family = HEADS.get(head, "")
    if task == "semantic":
        who = f"A {family} (a semantic model)" if head == "maskformer" else "A semantic model"
        scenes = "scenes" if head == "maskformer" else "street scenes"  # ADE20K / COCO-Stuff, not Cityscapes
        return (f"{who} gives every pixel one of its classes ({_listed(things)}) whatever the image shows, "
                f"so on other images its labels say little about them. For real {scenes} load "
                f"an official checkpoint, {where}")
    stuff = [str(c) for c in card.get("stuff_classes") or [] if str(c) != "things"]
    if task == "panoptic":
        return (f"A {family or 'Panoptic FPN'} finds objects of its thing classes only ({_listed(things)}) and gives "
                f"every other pixel one of its stuff classes ({_listed(stuff)}): other objects are missed or called "
                f"one of these, other regions one of those. For real photos load an official checkpoint, {where}")
    what = "boxes and masks" if task == "instance" else "boxes"
    who = f"A {family}" if family else ("A Mask R-CNN" if task == "instance" else "A Faster R-CNN")
    return (f"{who} finds {what} of its thing classes only ({_listed(things)}): any other object is missed or "
            f"called one of these. For real photos load an official checkpoint, {where}")


def in_domain(ctx: Context) -> bool:
    """Whether the image is, as far as the app can tell, like the synthetic scenes: a synthetic gallery sample, or
    an image that comes with ground truth in the models' classes (label maps or a COCO JSON of their ids)."""
    if ctx.image_origin == "synthetic sample":
        return True
    if ctx.coco_gt is not None and ctx.instance_pair:
        try:
            ids = {c["id"] for c in ctx.categories}
        except ValueError:
            return False
        return {a["category_id"] for a in ctx.coco_gt[0]} <= ids
    return ctx.gt is not None and not ctx.gt_mismatch() and not ctx.detection_gt_mismatch()


def domain_notice(ctx: Context) -> str:
    """The out-of-domain notice for this pair and image (empty when it does not apply): worded per task, pointing
    to that task's official releases, and never saying what the image shows."""
    if not ctx.ready or in_domain(ctx):
        return ""
    synthetic = [(slot, h) for slot, h in (("A", ctx.a), ("B", ctx.b)) if ui.trained_on_synthetic(h)]
    if not synthetic:
        return ""
    who = " and ".join(f"{slot} (`{h.display_name}`)" for slot, h in synthetic)
    were = "were" if len(synthetic) == 2 else "was"
    if ctx.image_origin == "gallery photo":
        image = "This gallery image is not one of those scenes."
    else:
        image = ("The app cannot tell whether this image is one of those scenes: it came without ground truth in "
                 "the models' classes.")
    families: dict[tuple[str, str], dict] = {}  # one sentence per (task, model family)
    for _, h in synthetic:
        families.setdefault((h.task, str(getattr(getattr(h.model, "config", None), "head", ""))), h.card)
    per_task = " ".join(_task_sentence(t, card, head) + "." for (t, head), card in families.items())
    return (f"**{who} {were} trained on synthetic street scenes only.** {image} {per_task} Load one with *Upload "
            "checkpoint* in the sidebar; the **About** page lists every release that loads and the command that "
            "converts it.")


def domain_note(ctx: Context) -> None:
    """Show :func:`domain_notice` (on every page that interprets a result for this image)."""
    text = domain_notice(ctx)
    if text:
        st.warning(text, icon=":material/warning:")


def require_ready(ctx: Context) -> bool:
    """Show what is missing (and why) instead of the page; True when models and image are there. Refused models
    and images are errors here too, in the user's words and with the user's file names."""
    if ctx.ready:
        return True
    if ctx.a is None or ctx.b is None:
        for slot, why in ctx.errors.items():
            st.error(f"Model {slot.upper()} could not be loaded: {why}")
        st.info("Choose models A and B in the sidebar.")
    if ctx.image is None:
        if ctx.image_error:
            st.error(f"**{ctx.image_name}** cannot be used: {ctx.image_error}. Upload another file, or pick a "
                     "sample from the gallery.")
        else:
            st.info("Pick a sample or upload an image in the sidebar.")
    return False


def models_with(ctx: Context, has: Callable[[Any], bool], why: Callable[[str, Any, str, Any], str]) -> dict:
    """A family view's models: ``{"A": (handle, name, prediction), …}`` for the models whose prediction ``has``
    what the view shows; every other model gets an info line ``why(slot, handle, name, prediction)``, and the page
    stops when neither has it."""
    name_a, name_b = ui.names(ctx)
    pair = {"A": (ctx.a, name_a, ctx.prediction("a")), "B": (ctx.b, name_b, ctx.prediction("b"))}
    shown = {k: v for k, v in pair.items() if has(v[2])}
    for k, (handle, name, pred) in pair.items():
        if k not in shown:
            st.info(why(k, handle, name, pred))
    if not shown:
        st.stop()
    return shown


def require_comparison(ctx: Context, what: str):
    """``ctx.comparison()``, or an explanation and ``st.stop()`` when there is no ground truth."""
    if not ctx.semantic_pair:
        st.info(f"{what}: {ctx.why_not_semantic()}.")
        st.stop()
    res = ctx.comparison()
    if res is None:
        st.info(f"{what}: {ctx.gt_mismatch()}." if ctx.gt_mismatch() else
                f"{what} need ground truth: pick a synthetic sample or upload a label PNG in the sidebar.")
        st.stop()
    return res


def object_and_label_map_sections(ctx: Context, objects, label_maps) -> None:
    """Run a page's object section (two detectors) and its label-map section (two semantic outputs), each when
    the pair has it; say why when it has neither. Sections are called as ``fn(ctx, name_a, name_b, ...)``."""
    name_a, name_b = ctx.a.display_name, ctx.b.display_name
    if ctx.instance_pair:
        objects(ctx, name_a, name_b)
    if ctx.semantic_pair:
        label_maps(ctx, name_a, name_b, titled=ctx.instance_pair)
    if not ctx.instance_pair and not ctx.semantic_pair:
        st.info(f"{ctx.why_not_semantic()}; {ctx.why_not_instances()}.")


def detection_comparison_or_reason(ctx: Context):
    """(``ctx.detection_comparison()``, None) or (None, why there is none)."""
    if not ctx.instance_pair:
        return None, ctx.why_not_instances()
    try:
        res = ctx.detection_comparison()
    except ValueError as e:
        return None, str(e)
    if res is None:
        return None, ("Object metrics need ground-truth objects: pick a synthetic sample, or upload a class-id PNG "
                      "with an instance-id PNG, or a COCO instances JSON, in the sidebar")
    return res, None
