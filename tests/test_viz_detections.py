"""Detections and panoptic segments drawn over an image: colours where the masks are, boxes where the boxes are."""

from __future__ import annotations

import numpy as np
import pytest

from fapn_core.viz import draw_detections, draw_panoptic


def test_masks_boxes_and_threshold():
    image = np.full((40, 60, 3), 100, np.uint8)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 10:20, 10:20] = True
    masks[1, 25:35, 40:55] = True
    boxes = np.array([[10, 10, 20, 20], [40, 25, 55, 35]], np.float32)
    pal = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    out = draw_detections(image, boxes, [0.9, 0.3], [0, 1], masks, palette=pal, score_thresh=0.5, labels=False,
                          thickness=1)
    assert out[15, 15, 0] > 150 and out[15, 15, 2] < 80  # red-tinted inside detection 0
    np.testing.assert_array_equal(out[30, 47], image[30, 47])  # detection 1 below the threshold: not drawn
    np.testing.assert_array_equal(out[10, 14], pal[0])  # box outline
    np.testing.assert_array_equal(out[0, 0], image[0, 0])
    empty = draw_detections(image, np.zeros((0, 4)), [], [], np.zeros((0, 40, 60), bool))
    np.testing.assert_array_equal(empty, image)  # zero detections are a valid input
    with pytest.raises(ValueError, match="masks"):
        draw_detections(image, boxes, [0.9, 0.3], [0, 1], masks[:, :10])


def test_panoptic_colours_and_borders():
    image = np.zeros((20, 20, 3), np.uint8)
    ids = np.zeros((20, 20), np.int32)
    ids[:, :10], ids[:, 10:], ids[5:10, 2:6] = 2, 3, 1
    info = [{"id": 1, "isthing": True, "category_id": 0}, {"id": 2, "isthing": False, "category_id": 1},
            {"id": 3, "isthing": False, "category_id": 2}]
    out = draw_panoptic(image, ids, info, thing_palette=[[250, 0, 0]], stuff_palette=[[0, 0, 0], [0, 200, 0],
                                                                                      [0, 0, 200]], alpha=1.0)
    np.testing.assert_array_equal(out[15, 3], [0, 200, 0])
    np.testing.assert_array_equal(out[15, 15], [0, 0, 200])
    np.testing.assert_array_equal(out[7, 3], [250, 0, 0])
    np.testing.assert_array_equal(out[15, 10], [255, 255, 255])  # border between two stuff segments
