"""Two detectors on one image (``fapn_core.metrics.detection_pair``) and the detectors inside a Panoptic FPN."""

from __future__ import annotations

import numpy as np
import pytest

from fapn_core.data.coco import CocoFormatError, encode_mask, gt_annotations
from fapn_core.metrics import detection_pair as dp


def _result(mask: np.ndarray, cat: int, score: float) -> dict:
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
    return {"image_id": 1, "category_id": cat, "score": score, "bbox": box, "segmentation": encode_mask(mask)}


def _square(hw, y, x, s) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[y:y + s, x:x + s] = True
    return m


def test_agreement_pairs_same_class_overlaps_and_lists_the_rest():
    hw = (64, 64)
    a = [_result(_square(hw, 0, 0, 20), 1, 0.9), _result(_square(hw, 40, 40, 10), 1, 0.8),
         _result(_square(hw, 0, 40, 10), 2, 0.7)]
    b = [_result(_square(hw, 1, 1, 20), 1, 0.6),      # pairs with a[0] (IoU 361/439 = 0.82)
         _result(_square(hw, 40, 40, 10), 2, 0.9),    # same place as a[1] but another class
         _result(_square(hw, 0, 40, 10), 2, 0.3)]     # pairs with a[2] unless filtered by score
    agr = dp.agree_detections(a, b)
    assert agr.iou_type == "segm"
    assert [(i, j) for i, j, _ in agr.matched] == [(0, 0), (2, 2)]
    assert agr.matched[0][2] == pytest.approx(361 / 439)
    assert agr.only_a == [1] and agr.only_b == [1]
    agr = dp.agree_detections(a, b, score_thresh=0.5)
    assert [(i, j) for i, j, _ in agr.matched] == [(0, 0)] and agr.only_a == [1, 2] and agr.only_b == [1]
    boxes = [{k: v for k, v in r.items() if k != "segmentation"} for r in a]
    assert dp.agree_detections(boxes, b).iou_type == "bbox"


def test_compare_detections_records_found_and_lost_objects():
    hw = (96, 96)
    label = np.zeros(hw, np.uint8)
    inst = np.zeros(hw, np.int32)
    for k, (y, x, s) in enumerate([(0, 0, 30), (50, 50, 12), (60, 0, 6)], start=1):
        label[y:y + s, x:x + s] = 3
        inst[y:y + s, x:x + s] = k
    gt = gt_annotations(label, inst, [3], image_id=1)
    cats = [{"id": 3, "name": "car", "isthing": 1}]
    a = [_result(_square(hw, 0, 0, 30), 3, 0.9)]                                     # finds object 1
    b = [_result(_square(hw, 0, 0, 29), 3, 0.9), _result(_square(hw, 50, 50, 12), 3, 0.8),
         _result(_square(hw, 20, 60, 10), 3, 0.7)]                                   # 1, 2, and a false positive
    res = dp.compare_detections(gt, a, b, cats, hw)
    out = {r.object_id: r.outcome for r in res.records}
    assert out == {1: "both_hit", 2: "recovered", 3: "both_missed"}
    rec = {r.object_id: r for r in res.records}
    assert rec[1].iou_a == 1.0 and rec[1].boundary_iou_a == 1.0
    assert rec[2].size == "small" and rec[1].size == "small" and rec[3].area == 36
    # nothing of A's overlaps objects 2 and 3: IoU 0, no detection, no score (not a far-away detection's)
    assert rec[2].det_a is None and rec[2].iou_a == 0.0 and np.isnan(rec[2].score_a)
    assert rec[3].det_b is None and rec[3].iou_b == 0.0 and rec[2].det_b == 1
    assert len(res.false_positives_a) == 0 and len(res.false_positives_b) == 1
    assert res.ap["a"]["segm"]["AP"] < res.ap["b"]["segm"]["AP"]
    with pytest.raises(ValueError, match="category ids \\[7\\]"):
        dp.compare_detections([dict(gt[0], category_id=7)], a, b, cats, hw)


def test_pair_categories_refuses_clashing_ids():
    a = {"classes": ["car", "person"], "thing_category_ids": [3, 5]}
    b = {"classes": ["truck", "person"], "thing_category_ids": [3, 5]}
    with pytest.raises(ValueError, match="name category 3 differently"):
        dp.pair_categories(a, b)
    with pytest.raises(ValueError, match="share no category ids"):
        dp.pair_categories(a, {"classes": ["dog"], "thing_category_ids": [9]})
    assert [c["id"] for c in dp.pair_categories(a, {"classes": ["car"], "thing_category_ids": [3]})] == [3, 5]
    assert dp.detector_category_ids({"classes": ["x", "y"]}) == [0, 1]


def _instances_json(hw=(40, 60), file_name="a.png"):
    m = _square(hw, 5, 5, 10)
    return {"images": [{"id": 3, "height": hw[0], "width": hw[1], "file_name": f"dir/{file_name}"}],
            "categories": [{"id": 1, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "bbox": [5, 5, 10, 10],
                             "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]], "iscrowd": 0},
                            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [30, 20, 4, 4],
                             "segmentation": encode_mask(_square(hw, 20, 30, 4)), "area": 16.0}]}, m


def test_image_ground_truth_reads_polygons_and_checks_the_image():
    data, m = _instances_json()
    anns, cats = dp.image_ground_truth(data, (40, 60), "a.png")
    assert [a["image_id"] for a in anns] == [1, 1] and cats[0]["name"] == "person"
    boxes, classes, masks, crowd = dp.annotation_arrays(anns, (40, 60))
    assert masks.shape == (2, 40, 60) and masks[1].sum() == 16 and not crowd.any()
    assert abs(int(masks[0].sum()) - 100) <= 21  # the polygon's rasterisation (pycocotools) covers the square
    with pytest.raises(CocoFormatError, match="is 60×40 px, the uploaded image 80×40"):
        dp.image_ground_truth(_instances_json()[0], (40, 80), "a.png")
    two = _instances_json()[0]
    two["images"].append(dict(two["images"][0], id=4, file_name="b.png"))
    with pytest.raises(CocoFormatError, match="lists 2 images and none is named 'c.png'"):
        dp.image_ground_truth(two, (40, 60), "c.png")
    assert len(dp.image_ground_truth(_instances_json()[0] | {"images": two["images"]}, (40, 60), "a.png")[0]) == 2
    with pytest.raises(CocoFormatError, match="not valid JSON"):
        dp.parse_json_bytes(b"{", "gt.json")
    with pytest.raises(CocoFormatError, match="empty file"):
        dp.parse_json_bytes(b"", "gt.json")


def test_resize_annotations_scales_masks_and_boxes():
    data, _ = _instances_json()
    anns, _ = dp.image_ground_truth(data, (40, 60))
    half = dp.resize_annotations(anns, (40, 60), (20, 30))
    assert half[1]["area"] == 4.0 and half[1]["bbox"] == [15.0, 10.0, 2.0, 2.0]
    assert dp.annotation_arrays(half, (20, 30))[2].shape == (2, 20, 30)


def test_band_errors_count_missed_and_extra_pixels_near_the_contour():
    gt = _square((50, 50), 10, 10, 20)
    pred = _square((50, 50), 10, 12, 20)  # shifted right by 2 px
    e = dp.band_errors(gt, pred, 3)
    assert e["missed"].sum() == 2 * 20 and e["extra"].sum() == 2 * 20
    assert not (e["missed"] & ~e["band"]).any()
    assert dp.band_errors(gt, gt, 3)["error_rate"] == 0.0
    assert dp.band_errors(gt, None, 3)["missed"].sum() == (e["band"] & gt).sum()
    with pytest.raises(ValueError, match="differ"):
        dp.band_errors(gt, pred[:-1], 3)


def test_detectors_inside_a_panoptic_fpn_give_its_instances():
    import torch

    from fapn_core.checkpoints import CheckpointError, detector_from_panoptic, make_card
    from fapn_core.models.zoo import build_model

    torch.manual_seed(0)
    pan = build_model("fapn_r18_panoptic", num_classes=3, sem_seg_num_classes=4, neck_channels=32, box_fc_dim=32,
                      mask_conv_dims=16, head_conv_dims=32, stem_out_channels=16, score_thresh_test=0.0).eval()
    card = make_card(pan, classes=["a", "b", "c"], thing_category_ids=[4, 5, 6])
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    ref = pan.predict(image)
    for head, task in (("maskrcnn", "instance"), ("fasterrcnn", "detection")):
        det, det_card = detector_from_panoptic(pan, card, head)
        out = det.predict(image)
        assert det_card["task"] == task and det_card["thing_category_ids"] == [4, 5, 6]
        assert torch.equal(out.boxes, ref.boxes) and torch.equal(out.scores, ref.scores)
        assert (out.masks is None) == (head == "fasterrcnn") and out.sem_seg is None
        if out.masks is not None:
            assert torch.equal(out.masks, ref.masks)
        assert not any(k.startswith("head.") for k in det.state_dict())
    with pytest.raises(CheckpointError, match="needs a Panoptic FPN"):
        detector_from_panoptic(det, det_card)


# ------------------------------------------------------------------------ issue #25: one identity, bands, counts
def _maps():
    hw = (96, 96)
    label = np.zeros(hw, np.uint8)
    inst = np.zeros(hw, np.int32)
    for k, (y, x, s) in zip((12, 3, 40), [(0, 0, 30), (50, 50, 12), (60, 0, 6)]):
        label[y:y + s, x:x + s] = 3
        inst[y:y + s, x:x + s] = k
    label[80:90, 80:90] = 3  # thing pixels without an instance id: a crowd region
    return label, inst


def test_annotations_from_maps_carry_the_instance_ids_and_compare_keeps_them():
    label, inst = _maps()
    anns = dp.annotations_from_maps(label, inst, [3])
    plain = gt_annotations(label, inst, [3], image_id=1)
    assert [a["id"] for a in anns if not a["iscrowd"]] == [3, 12, 40]  # the instance PNG's ids
    assert [a["id"] for a in anns if a["iscrowd"]] == [41]  # crowd regions after the largest instance id
    assert [{k: v for k, v in a.items() if k != "id"} for a in anns] == \
        [{k: v for k, v in a.items() if k != "id"} for a in plain]  # everything else as gt_annotations
    cats = [{"id": 3, "name": "car", "isthing": 1}]
    a = [_result(_square((96, 96), 0, 0, 30), 3, 0.9)]
    res = dp.compare_detections(anns, a, a, cats, (96, 96))
    assert sorted(r.object_id for r in res.records) == [3, 12, 40]
    # the label-map object table (metrics.objects) gives the same objects the same ids
    from fapn_core.metrics.objects import extract_objects

    objs = extract_objects(label, 4, instances=inst, thing_classes=[3])
    assert sorted(objs.object_ids.tolist()) == [3, 12, 40]
    # ids that are not distinct positive integers are numbered 1..N
    dup = [dict(x, id=7) for x in anns]
    assert [r.object_id for r in dp.compare_detections(dup, a, a, cats, (96, 96)).records] == [1, 2, 3]


def test_object_boundary_iou_at_the_image_width_equals_boundary_ious():
    from fapn_core.data.coco import encode_mask
    from fapn_core.metrics.boundary import boundary_dilation
    from fapn_core.metrics.detection import boundary_ious

    hw = (120, 160)
    yy, xx = np.mgrid[:hw[0], :hw[1]]
    g = (yy - 60) ** 2 + (xx - 70) ** 2 < 35 ** 2
    p = (yy - 63) ** 2 + (xx - 74) ** 2 < 33 ** 2
    d = boundary_dilation(hw)
    ours = dp.object_boundary_iou(g, p, d)
    ref = boundary_ious([encode_mask(g)], [encode_mask(p)])[0]
    assert ours["iou"] == pytest.approx(ref, abs=1e-6)
    assert ours["both"].sum() / (ours["both"] | ours["gt_only"] | ours["pred_only"]).sum() == pytest.approx(ref)
    assert dp.object_boundary_iou(g, None, 3)["iou"] == 0.0 and dp.object_boundary_iou(g, g, 2)["iou"] == 1.0
    assert dp.object_band_width([10, 10, 139, 50]) == 3  # 2 % of the box diagonal (148 px)
    assert dp.object_band_width([0, 0, 4, 4]) == 1 and dp.object_band_width([0, 0, 900, 900], max_d=11) == 11


def test_select_detections_and_counts_at_a_threshold_equal_matching_only_those_detections():
    hw = (96, 96)
    label, inst = _maps()
    anns = dp.annotations_from_maps(label, inst, [3])
    cats = [{"id": 3, "name": "car", "isthing": 1}, {"id": 4, "name": "bus", "isthing": 1}]
    dets = [_result(_square(hw, 0, 0, 30), 3, 0.9), _result(_square(hw, 50, 50, 12), 3, 0.4),
            _result(_square(hw, 60, 0, 6), 3, 0.3), _result(_square(hw, 20, 60, 10), 3, 0.8),
            _result(_square(hw, 30, 30, 40), 4, 0.7)]
    assert dp.select_detections(dets, score_thresh=0.35) == [0, 3, 4, 1]
    assert dp.select_detections(dets, top_n=2) == [0, 3]
    assert dp.select_detections(dets, category_ids=[4]) == [4]
    assert dp.select_detections(dets, sizes=["small"]) == [0, 3, 1, 2]  # 30² = 900 < 32²; 40² is medium
    res = dp.compare_detections(anns, dets, dets[:1], cats, hw)
    for t in (0.0, 0.35, 0.5, 0.95):
        kept = [r for r in dets if r["score"] >= t]
        ref = dp.compare_detections(anns, kept, dets[:1], cats, hw)
        want = {"found_a": sum(r.hit_a for r in ref.records), "fp_a": len(ref.false_positives_a)}
        got = res.counts_at(t)
        assert {k: got[k] for k in want} == want, t
