"""Page guards and the lines every page shares: what is missing before a page can run, the status line, and
the dispatch of a page's object / label-map sections by what the pair has."""

from __future__ import annotations

import streamlit as st
from app.cache import inference_count
from app.context import Context
from fapn_core.models import dcn_ext


def status_line(ctx: Context) -> None:
    """Device, each model's latency and whether its inference came from the cache."""
    if not ctx.ready:
        return
    parts = [f"device **{ctx.device}**" + (" · AMP" if ctx.amp else "")]
    if str(ctx.device).startswith("cpu"):
        parts.append("deformable conv: " + ("compiled CPU kernel" if dcn_ext.load() is not None
                                            else "PyTorch path (run `fapn build-ext` for the faster compiled one)"))
    for slot, handle in (("A", ctx.a), ("B", ctx.b)):
        pred = ctx.prediction(slot.lower())
        n = inference_count(handle.key, ctx.image_key, ctx.amp)
        parts.append(f"{slot} `{handle.card.get('name', handle.label)}` {pred.latency_ms:.0f} ms"
                     f" ({'computed once' if n <= 1 else f'computed {n}×'}, cached for all pages)")
    st.caption(" · ".join(parts))


def require_ready(ctx: Context) -> bool:
    """Show what is missing (and why) instead of the page; True when models and image are there."""
    if ctx.ready:
        return True
    if ctx.a is None or ctx.b is None:
        st.info("Choose models A and B in the sidebar." + (" " + "; ".join(ctx.errors.values()) if ctx.errors else ""))
    if ctx.image is None:
        st.info("Pick a sample or upload an image in the sidebar.")
    return False


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
