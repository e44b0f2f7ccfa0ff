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


def test_labels_never_overlap_and_grow_with_the_image():
    import cv2

    from fapn_core.viz import text_scale
    from fapn_core.viz.detections import _place_label

    image = np.full((200, 300, 3), 90, np.uint8)
    placed: list = []
    assert _place_label(image.copy(), "car 0.90", (50, 50, 120, 120), (0, 0, 200), placed, 0.4, 1)
    assert _place_label(image.copy(), "car 0.80", (52, 52, 122, 122), (0, 0, 200), placed, 0.4, 1)
    for i, a in enumerate(placed):  # the second tag went elsewhere: no two tags overlap
        for b in placed[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    # twenty detections on one spot: four places beside the box, so four tags; the rest are left out
    placed = []
    drawn = [_place_label(image.copy(), "car 0.90", (100, 80, 160, 140), (0, 0, 200), placed, 0.4, 1)
             for _ in range(20)]
    assert sum(drawn) == 4 and drawn[:4] == [True] * 4
    boxes = np.tile(np.array([[100, 80, 160, 140]], np.float32), (20, 1))
    out = draw_detections(image, boxes, np.linspace(0.5, 0.99, 20), np.zeros(20), class_names=["car"],
                          palette=[[0, 0, 200]], score_thresh=0.0)
    assert out.shape == image.shape and not np.array_equal(out, image)
    assert text_scale((256, 512)) == 0.4 and text_scale((512, 1280)) == pytest.approx(0.8)
    assert cv2.getTextSize("car 0.90", cv2.FONT_HERSHEY_SIMPLEX, text_scale((1024, 2048)), 1)[0][1] > 20


def test_agreement_view_uses_outlines_for_objects_and_fills_for_mask_pixels():
    from fapn_core.viz import AGREEMENT_KEY, MASK_A, MASK_B, ONLY_A, ONLY_B, agreement_view, key_figure

    image = np.full((80, 120, 3), 128, np.uint8)
    ma = np.zeros((2, 80, 120), bool)
    mb = np.zeros((2, 80, 120), bool)
    ma[0, 10:30, 10:30] = True   # paired with B's 0, which is shifted by 4 px
    mb[0, 10:30, 14:34] = True
    ma[1, 50:70, 80:100] = True  # only A finds it
    mb[1, 50:70, 20:40] = True   # only B finds it
    boxes_a = np.array([[10, 10, 30, 30], [80, 50, 100, 70]], np.float32)
    boxes_b = np.array([[14, 10, 34, 30], [20, 50, 40, 70]], np.float32)
    out = agreement_view(image, boxes_a, ma, boxes_b, mb, [(0, 0, 0.7)], [1], [1], alpha=1.0, thickness=2)
    np.testing.assert_array_equal(out[20, 11], MASK_A)   # pixels only A's mask covers: filled
    np.testing.assert_array_equal(out[20, 32], MASK_B)
    np.testing.assert_array_equal(out[50, 90], ONLY_A)   # one-model objects: outlined, not filled
    assert not np.array_equal(out[60, 90], ONLY_A)
    np.testing.assert_array_equal(out[60, 20], ONLY_B)
    assert len({c for c, _, _ in AGREEMENT_KEY}) == len(AGREEMENT_KEY)  # five meanings, five colours
    assert {k for _, k, _ in AGREEMENT_KEY} == {"outline", "fill"}
    fig = key_figure(AGREEMENT_KEY)
    assert list(fig.data[0].marker.symbol) == ["square-open"] * 3 + ["square"] * 2


def test_scalar_maps_legends_and_region_outlines():
    from fapn_core.viz import class_legend, legend_figure, region_outline, scalar_map_figure, share_text

    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    v[0, 0] = np.nan
    fig = scalar_map_figure(v, zmin=0, zmax=11, colorbar_title="feature px", title="t")
    heat = fig.data[-1]
    assert heat.colorbar.title.text == "feature px" and heat.colorbar.len == 1.0 and heat.zmax == 11
    assert len(fig.data) == 2 and fig.data[0].z[0][0] == 0.0  # NaN cells drawn in their own colour underneath
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.width > fig.layout.height  # 4 wide, 3 tall
    assert share_text(0.0) == "0 %" and share_text(0.0001) == "< 0.1 %" and share_text(0.25) == "25.0 %"
    a = np.zeros((50, 50), np.uint8)
    a[0, 0] = 5  # one pixel of class 5 among 2500: present, though it rounds to 0.0 %
    entries = class_legend([a], [[i * 20] * 3 for i in range(10)])
    assert list(legend_figure(entries).data[0].text) == ["class 0 (100.0 %)", "class 5 (< 0.1 %)"]
    image = np.full((60, 60, 3), 200, np.uint8)
    region = np.zeros((60, 60), bool)
    region[20:40, 20:40] = True
    out = region_outline(image, region)
    np.testing.assert_array_equal(out[20, 30], (255, 200, 0))  # the outline
    assert tuple(out[30, 30]) != (255, 200, 0)  # the region's inside stays the image (greyed a little)
