"""detectron2 / FaPN-full key names of the backbone and the FPN/FaPN neck → native names, and what native backbone
keys say about the ResNet: what every official import shares (the family packages add their heads' rules)."""

from __future__ import annotations

import re
from typing import Callable, Collection

PYRAMID_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^backbone\.bottom_up\."), "backbone."),
    (re.compile(r"^backbone\.fan_align(\d)\.lateral_conv\."), r"neck.align\1.lateral."),
    (re.compile(r"^backbone\.fan_align(\d)\.offset\."), r"neck.align\1.offset."),
    (re.compile(r"^backbone\.fan_align(\d)\.dcpack_L2\."), r"neck.align\1.dcn."),
    (re.compile(r"^backbone\.fan_align(\d)\.(weight|bias)$"), r"neck.lateral\1.\2"),
    (re.compile(r"^backbone\.fpn_lateral(\d)\."), r"neck.lateral\1."),
    (re.compile(r"^backbone\.fpn_output(\d)\."), r"neck.output\1."),
]


def resnet_depth(keys: Collection[str], error: Callable[[str], Exception]) -> tuple[int, bool]:
    """(depth, bottleneck) of the native-named ResNet whose keys these are (18/34 basic, 50/101 bottleneck)."""
    n_res4 = len({k.split(".")[2] for k in keys if k.startswith("backbone.res4.")})
    bottleneck = "backbone.res2.0.conv3.weight" in keys
    depth = {(True, 6): 50, (True, 23): 101, (False, 2): 18, (False, 6): 34}.get((bottleneck, n_res4))
    if depth is None:
        raise error(f"cannot infer the ResNet depth ({n_res4} res4 blocks, bottleneck={bottleneck})")
    return depth, bottleneck


def lateral_to_official(key: str, neck: str) -> str | None:
    """The official name of a native ``neck.lateral<N>.*`` key (FPN: ``fpn_lateral``; FaPN: ``fan_align``), else
    ``None``."""
    m = re.match(r"^neck\.lateral(\d)\.(.*)$", key)
    if not m:
        return None
    return f"backbone.{'fpn_lateral' if neck.startswith('fpn') else 'fan_align'}{m[1]}.{m[2]}"
