"""Small checkpoints of the families that have no bundled pair (PanopticFCN, PointRend instance), in the synthetic
benchmark's classes, shared by the app tests and the browser end-to-end test."""

from __future__ import annotations

from pathlib import Path

import torch

from fapn_core.checkpoints import load_checkpoint, make_card, save_native
from fapn_core.data.synthetic import CLASS_NAMES, PALETTE, STUFF_CLASSES, THING_CLASSES
from fapn_core.models.zoo import build_model

# random weights leave every centre near σ(bias) = 0.10, below the 0.2 thing threshold: a higher bias of the "car"
# heatmap lets some of its cells through (a few to a few dozen car peaks, so A's and B's can match); None keeps the
# initialisation (no peaks at all)
CAR_CENTRE_BIAS = -1.5


def panopticfcn(out: Path, name: str, neck: str, car_bias: float | None = CAR_CENTRE_BIAS,
                training_data: str = "random (test)") -> Path:
    """An R18 PanopticFCN with random weights (seed 0) in the synthetic classes (things: pole, traffic sign,
    person, car; stuff: the rest) as a native file; ``car_bias`` raises the car heatmap so it keeps peaks;
    ``training_data`` is what its card says (the app words its notices by it)."""
    things, stuff = list(THING_CLASSES), list(STUFF_CLASSES)
    torch.manual_seed(0)
    model = build_model(f"{neck}_r18_panopticfcn", num_classes=len(things), sem_seg_num_classes=len(stuff) + 1)
    if car_bias is not None:
        with torch.no_grad():
            model.position_head.out_inst.bias[things.index(CLASS_NAMES.index("car"))] = car_bias
    card = make_card(model.eval(), classes=[CLASS_NAMES[c] for c in things], palette=PALETTE[things].tolist(),
                     thing_category_ids=things, stuff_classes=["things"] + [CLASS_NAMES[c] for c in stuff],
                     stuff_category_ids=[None] + stuff,
                     stuff_palette=[[128, 128, 128]] + PALETTE[stuff].tolist(), training_data=training_data)
    return save_native(model, out / f"{name}_r18_panopticfcn.safetensors", card, half=True)


def pointrend_model(panoptic: Path, **overrides):
    """An R18 PointRend instance model on the synthetic benchmark's thing classes: the bundled Panoptic FPN's
    backbone, neck, RPN and box head (trained, so it finds the scene's objects), PointRend's mask head random."""
    trained, card = load_checkpoint(panoptic)
    torch.manual_seed(0)
    model = build_model(f"{trained.config.neck}_r18_pointrend_rcnn", num_classes=len(card["classes"]),
                        **card["recipe"]["model_overrides"], **overrides).eval()
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith(("head.", "roi_heads.mask_head."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("roi_heads.mask_head.") for k in missing)
    return model, make_card(model, classes=card["classes"], palette=card["palette"],
                            thing_category_ids=card["thing_category_ids"],
                            training_data=f"{card['training_data']} (box branch of {card['name']}; PointRend mask "
                                          "head random, test)")


def pointrend(out: Path, panoptic: Path, **overrides) -> Path:
    """:func:`pointrend_model` as a native file named after its neck."""
    model, card = pointrend_model(panoptic, **overrides)
    return save_native(model, out / f"{model.config.neck}_r18_pointrend_rcnn.safetensors", card, half=True)
