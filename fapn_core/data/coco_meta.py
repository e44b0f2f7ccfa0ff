"""COCO 2017 category metadata (ids, names, colours of ``panoptic_coco_categories.json``), for the cards of
official COCO checkpoints: 80 thing classes (ROI class i = the i-th thing) and Panoptic FPN's 54 semantic
channels (0 = all things, then the 53 stuff classes in id order)."""

from __future__ import annotations

from typing import Any

# (category id, name, RGB colour)
COCO_THINGS: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (1, "person", (220, 20, 60)), (2, "bicycle", (119, 11, 32)), (3, "car", (0, 0, 142)),
    (4, "motorcycle", (0, 0, 230)), (5, "airplane", (106, 0, 228)), (6, "bus", (0, 60, 100)),
    (7, "train", (0, 80, 100)), (8, "truck", (0, 0, 70)), (9, "boat", (0, 0, 192)),
    (10, "traffic light", (250, 170, 30)), (11, "fire hydrant", (100, 170, 30)), (13, "stop sign", (220, 220, 0)),
    (14, "parking meter", (175, 116, 175)), (15, "bench", (250, 0, 30)), (16, "bird", (165, 42, 42)),
    (17, "cat", (255, 77, 255)), (18, "dog", (0, 226, 252)), (19, "horse", (182, 182, 255)),
    (20, "sheep", (0, 82, 0)), (21, "cow", (120, 166, 157)), (22, "elephant", (110, 76, 0)),
    (23, "bear", (174, 57, 255)), (24, "zebra", (199, 100, 0)), (25, "giraffe", (72, 0, 118)),
    (27, "backpack", (255, 179, 240)), (28, "umbrella", (0, 125, 92)), (31, "handbag", (209, 0, 151)),
    (32, "tie", (188, 208, 182)), (33, "suitcase", (0, 220, 176)), (34, "frisbee", (255, 99, 164)),
    (35, "skis", (92, 0, 73)), (36, "snowboard", (133, 129, 255)), (37, "sports ball", (78, 180, 255)),
    (38, "kite", (0, 228, 0)), (39, "baseball bat", (174, 255, 243)), (40, "baseball glove", (45, 89, 255)),
    (41, "skateboard", (134, 134, 103)), (42, "surfboard", (145, 148, 174)), (43, "tennis racket", (255, 208, 186)),
    (44, "bottle", (197, 226, 255)), (46, "wine glass", (171, 134, 1)), (47, "cup", (109, 63, 54)),
    (48, "fork", (207, 138, 255)), (49, "knife", (151, 0, 95)), (50, "spoon", (9, 80, 61)),
    (51, "bowl", (84, 105, 51)), (52, "banana", (74, 65, 105)), (53, "apple", (166, 196, 102)),
    (54, "sandwich", (208, 195, 210)), (55, "orange", (255, 109, 65)), (56, "broccoli", (0, 143, 149)),
    (57, "carrot", (179, 0, 194)), (58, "hot dog", (209, 99, 106)), (59, "pizza", (5, 121, 0)),
    (60, "donut", (227, 255, 205)), (61, "cake", (147, 186, 208)), (62, "chair", (153, 69, 1)),
    (63, "couch", (3, 95, 161)), (64, "potted plant", (163, 255, 0)), (65, "bed", (119, 0, 170)),
    (67, "dining table", (0, 182, 199)), (70, "toilet", (0, 165, 120)), (72, "tv", (183, 130, 88)),
    (73, "laptop", (95, 32, 0)), (74, "mouse", (130, 114, 135)), (75, "remote", (110, 129, 133)),
    (76, "keyboard", (166, 74, 118)), (77, "cell phone", (219, 142, 185)), (78, "microwave", (79, 210, 114)),
    (79, "oven", (178, 90, 62)), (80, "toaster", (65, 70, 15)), (81, "sink", (127, 167, 115)),
    (82, "refrigerator", (59, 105, 106)), (84, "book", (142, 108, 45)), (85, "clock", (196, 172, 0)),
    (86, "vase", (95, 54, 80)), (87, "scissors", (128, 76, 255)), (88, "teddy bear", (201, 57, 1)),
    (89, "hair drier", (246, 0, 122)), (90, "toothbrush", (191, 162, 208)),
)
COCO_STUFF: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (92, "banner", (255, 255, 128)), (93, "blanket", (147, 211, 203)), (95, "bridge", (150, 100, 100)),
    (100, "cardboard", (168, 171, 172)), (107, "counter", (146, 112, 198)), (109, "curtain", (210, 170, 100)),
    (112, "door-stuff", (92, 136, 89)), (118, "floor-wood", (218, 88, 184)), (119, "flower", (241, 129, 0)),
    (122, "fruit", (217, 17, 255)), (125, "gravel", (124, 74, 181)), (128, "house", (70, 70, 70)),
    (130, "light", (255, 228, 255)), (133, "mirror-stuff", (154, 208, 0)), (138, "net", (193, 0, 92)),
    (141, "pillow", (76, 91, 113)), (144, "platform", (255, 180, 195)), (145, "playingfield", (106, 154, 176)),
    (147, "railroad", (230, 150, 140)), (148, "river", (60, 143, 255)), (149, "road", (128, 64, 128)),
    (151, "roof", (92, 82, 55)), (154, "sand", (254, 212, 124)), (155, "sea", (73, 77, 174)),
    (156, "shelf", (255, 160, 98)), (159, "snow", (255, 255, 255)), (161, "stairs", (104, 84, 109)),
    (166, "tent", (169, 164, 131)), (168, "towel", (225, 199, 255)), (171, "wall-brick", (137, 54, 74)),
    (175, "wall-stone", (135, 158, 223)), (176, "wall-tile", (7, 246, 231)), (177, "wall-wood", (107, 255, 200)),
    (178, "water-other", (58, 41, 149)), (180, "window-blind", (183, 121, 142)), (181, "window-other", (255, 73, 97)),
    (184, "tree-merged", (107, 142, 35)), (185, "fence-merged", (190, 153, 153)), (186, "ceiling-merged", (146, 139, 141)),
    (187, "sky-other-merged", (70, 130, 180)), (188, "cabinet-merged", (134, 199, 156)),
    (189, "table-merged", (209, 226, 140)), (190, "floor-other-merged", (96, 36, 108)),
    (191, "pavement-merged", (96, 96, 96)), (192, "mountain-merged", (64, 170, 64)),
    (193, "grass-merged", (152, 251, 152)), (194, "dirt-merged", (208, 229, 228)), (195, "paper-merged", (206, 186, 171)),
    (196, "food-other-merged", (152, 161, 64)), (197, "building-other-merged", (116, 112, 0)),
    (198, "rock-merged", (0, 114, 143)), (199, "wall-other-merged", (102, 102, 156)), (200, "rug-merged", (250, 141, 255)),
)


def coco_card_fields(task: str, num_classes: int, sem_seg_num_classes: int = 0) -> dict[str, Any]:
    """Card fields naming the classes of an official COCO model, or ``{}`` when the counts are not COCO's
    (80 things; Panoptic FPN: 54 semantic channels)."""
    if task == "semantic" or num_classes != len(COCO_THINGS):
        return {}
    out: dict[str, Any] = {
        "classes": [n for _, n, _ in COCO_THINGS], "thing_category_ids": [i for i, _, _ in COCO_THINGS],
        "palette": [list(c) for _, _, c in COCO_THINGS], "training_data": "COCO 2017 (assumed from the 80 classes)",
    }
    if task == "panoptic":
        if sem_seg_num_classes != len(COCO_STUFF) + 1:
            return {}
        out.update(stuff_classes=["things"] + [n for _, n, _ in COCO_STUFF],
                   stuff_category_ids=[None] + [i for i, _, _ in COCO_STUFF],
                   stuff_palette=[[128, 128, 128]] + [list(c) for _, _, c in COCO_STUFF])
    return out


# COCO-Stuff's 91 stuff classes (ids 92..182) as MaskFormer's COCO-Stuff-10K/164K use them: with the 80 things,
# the 171 contiguous classes of its semantic models (class i = the i-th of things then stuff, in id order).
COCO_STUFF_91: tuple[tuple[int, str], ...] = tuple(enumerate((
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood",
    "water-other", "waterdrops", "window-blind", "window-other", "wood"), start=92))


def coco_stuff_171() -> tuple[list[str], list[list[int]]]:
    """Names and RGB colours of the 171 COCO-Stuff classes (things' colours from COCO; stuff: the panoptic
    colour where COCO panoptic has that class, else a fixed generic colour)."""
    from .palettes import generic_palette

    panoptic = {name: colour for _, name, colour in COCO_STUFF}
    spare = generic_palette(len(COCO_STUFF_91) + 1)[1:]
    names = [n for _, n, _ in COCO_THINGS] + [n for _, n in COCO_STUFF_91]
    colours = [list(c) for _, _, c in COCO_THINGS] + [
        list(panoptic.get(n, tuple(int(v) for v in spare[i]))) for i, (_, n) in enumerate(COCO_STUFF_91)]
    return names, colours
