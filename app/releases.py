"""The official releases that load in the app (the About page's table) and which of them suit a task."""

from __future__ import annotations

FAPN, D2 = "FaPN-full", "detectron2 model zoo"
MF, PFCN = "MaskFormer model zoo", "PanopticFCN model zoo"
#: task, source, release (official config name), native model, parameters (README; = the official manifests)
RELEASES: list[tuple[str, str, str, str, int]] = [
    ("semantic", FAPN, "pointrend_semantic_R_50_FAN_1x_cityscapes", "fapn_r50_pointrend", 33_075_182),
    ("semantic", "detectron2 (R101 config at depth 50)", "pointrend_semantic_R_50_FPN_1x_cityscapes",
     "fpn_r50_pointrend", 28_632_678),
    ("semantic", FAPN, "pointrend_semantic_R_101_FAN_1x_cityscapes", "fapn_r101_pointrend", 52_015_086),
    ("semantic", D2, "pointrend_semantic_R_101_FPN_1x_cityscapes", "fpn_r101_pointrend", 47_572_582),
    ("detection", FAPN, "faster_rcnn_R_50_FAN_1x", "fapn_r50_fasterrcnn", 46_142_440),
    ("detection", D2, "faster_rcnn_R_50_FPN_1x", "fpn_r50_fasterrcnn", 41_699_936),
    ("detection", FAPN, "faster_rcnn_R_101_FAN_3x", "fapn_r101_fasterrcnn", 65_082_344),
    ("detection", D2, "faster_rcnn_R_101_FPN_3x", "fpn_r101_fasterrcnn", 60_639_840),
    ("instance", FAPN, "mask_rcnn_R_50_FAN_1x", "fapn_r50_maskrcnn", 48_785_720),
    ("instance", D2, "mask_rcnn_R_50_FPN_1x", "fpn_r50_maskrcnn", 44_343_216),
    ("instance", FAPN, "mask_rcnn_R_101_FAN_3x", "fapn_r101_maskrcnn", 67_725_624),
    ("instance", D2, "mask_rcnn_R_101_FPN_3x", "fpn_r101_maskrcnn", 63_283_120),
    ("panoptic", FAPN, "panoptic_fan_R_50_1x", "fapn_r50_panoptic", 50_416_494),
    ("panoptic", D2, "panoptic_fpn_R_50_1x", "fpn_r50_panoptic", 45_973_990),
    ("panoptic", FAPN, "panoptic_fan_R_101_3x", "fapn_r101_panoptic", 69_356_398),
    ("panoptic", D2, "panoptic_fpn_R_101_3x", "fpn_r101_panoptic", 64_913_894),
    ("instance", FAPN, "pointrend_rcnn_R_50_FAN_1x_coco", "fapn_r50_pointrend_rcnn", 64_604_296),
    ("instance", "detectron2 PointRend project", "pointrend_rcnn_R_50_FPN_1x_coco", "fpn_r50_pointrend_rcnn",
     60_161_792),
    ("semantic", FAPN, "maskformer_swin_large+FaPN_IN21k_384_bs16_160k_res640", "fapn_swinl_maskformer", 215_232_723),
    ("semantic", MF, "maskformer_swin_large_IN21k_384_bs16_160k_res640", "fpn_swinl_maskformer", 211_575_627),
    ("semantic", FAPN, "maskformer_R101+FaPN_bs32_60k", "fapn_r101_maskformer", 63_857_140),
    ("semantic", MF, "maskformer_R101_bs32_60k", "fpn_r101_maskformer", 60_200_044),
    ("semantic", f"{FAPN} (config)", "maskformer_R50+FaPN_bs16_160k", "fapn_r50_maskformer", 44_911_839),
    ("semantic", MF, "maskformer_R50_bs16_160k", "fpn_r50_maskformer", 41_254_743),
    ("panoptic", FAPN, "PanopticFCN-R50+FaPN-1x-FAST", "fapn_r50_panopticfcn", 41_442_015),
    ("panoptic", PFCN, "PanopticFCN-R50-1x-FAST", "fpn_r50_panopticfcn", 36_999_511),
    ("panoptic", FAPN, "PanopticFCN-R50-600+FaPN-3x-FAST", "fapn_r50_panopticfcn", 41_442_015),
    ("panoptic", PFCN, "PanopticFCN-R50-600-3x-FAST", "fpn_r50_panopticfcn", 36_999_511),
]
#: what each task's releases were trained on (by default; MaskFormer's releases name theirs in ``dataset_of``)
DATASET = {"semantic": "Cityscapes", "detection": "COCO", "instance": "COCO", "panoptic": "COCO"}


def dataset_of(release: str, task: str) -> str:
    """The dataset a release was trained on."""
    if release.startswith("maskformer_"):
        return "COCO-Stuff-10K" if "R101" in release else "ADE20K"
    return DATASET[task]


def releases_for(task: str, depth: int = 50, head: str | None = None) -> list[str]:
    """The first official FaPN release of ``task`` and its FPN baseline (FaPN first): of the model family ``head``
    (``maskformer``, ``panopticfcn``, ``pointrend_rcnn`` …) where it has releases, else at ResNet ``depth``."""
    if head is not None:
        own = [r[2] for r in RELEASES if r[0] == task and r[3].endswith(f"_{head}")]
        if own:
            return own[:2]
    return [r[2] for r in RELEASES if r[0] == task and f"_R_{depth}_" in r[2]][:2]  # the task's first pair
