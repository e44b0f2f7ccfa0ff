"""Unit tests for the detectron2 rules a re-implementation gets wrong (anchors, decoding, NMS, pooling levels,
mask paste, empty results, batches), and for training the R-CNN family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fapn_core.models.rcnn.anchors import AnchorGenerator
from fapn_core.models.rcnn.box_head import BoxPredictor
from fapn_core.models.rcnn.boxes import SCALE_CLAMP, BoxCoder, clip_boxes
from fapn_core.models.rcnn.mask_head import paste_masks
from fapn_core.models.rcnn.panoptic import combine_panoptic
from fapn_core.models.rcnn.poolers import ROIPooler, assign_levels
from fapn_core.models.rcnn.sampling import Matcher, subsample_labels
from fapn_core.models.zoo import build_model


def test_anchor_order_offset_zero_and_shapes():
    gen = AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=(0.5, 1.0, 2.0), strides=(4, 8))
    a = gen([(2, 3), (1, 2)])
    assert [t.shape for t in a] == [(18, 4), (6, 4)]
    for y in range(2):
        for x in range(3):
            for r_i, r in enumerate((0.5, 1.0, 2.0)):
                box = a[0][(y * 3 + x) * 3 + r_i]
                w = math.sqrt(32 ** 2 / r)
                h = r * w
                expect = torch.tensor([x * 4 - w / 2, y * 4 - h / 2, x * 4 + w / 2, y * 4 + h / 2])
                torch.testing.assert_close(box, expect)
    # one anchor per (cell, ratio): centres on cell corners (offset 0), not cell centres
    centres = (a[1][:, :2] + a[1][:, 2:]) / 2
    assert centres[:, 0].tolist() == [0.0] * 3 + [8.0] * 3


def test_box_coder_round_trip_and_clamp():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    src = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 1.5, 3.0]])
    tgt = torch.tensor([[12.0, 18.0, 60.0, 45.0], [0.5, 0.25, 2.0, 2.0]])
    torch.testing.assert_close(coder.apply_deltas(coder.get_deltas(src, tgt), src), tgt, atol=1e-5, rtol=0)
    # dw, dh clamped at log(1000/16) after dividing by the weights: an exp(100) request gives 62.5× the size
    big = coder.apply_deltas(torch.tensor([[0.0, 0.0, 500.0, -5.0]]), src[:1])[0]
    w = float(big[2] - big[0])
    assert w == pytest.approx(40.0 * math.exp(SCALE_CLAMP), rel=1e-5) and w == pytest.approx(2500.0, rel=1e-5)
    assert float(big[3] - big[1]) == pytest.approx(20.0 * math.exp(-1.0), rel=1e-5)  # no lower clamp
    # no +1: a 10-px box is x2 − x1 = 10
    assert coder.get_deltas(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 20.0, 10.0]]))[0, 2] \
        == pytest.approx(5.0 * math.log(2.0))


def test_class_nms_is_strict_and_per_class():
    pred = BoxPredictor(4, 2, nms_thresh=0.5, score_thresh=0.05)
    # IoU exactly 0.5 (100 ∩ 50 / 100) is kept: suppression needs IoU > threshold
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    probs = torch.tensor([[0.9, 0.0, 0.1], [0.8, 0.0, 0.2], [0.0, 0.7, 0.3]])
    out = pred._inference_single(boxes.repeat(1, 2), torch.cat([probs[:, :2], probs[:, 2:]], 1), (20, 20))
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert out["classes"].tolist() == [0, 0, 1]  # the identical box of class 1 is not suppressed by class 0
    # strictly above the score threshold; identical boxes with equal scores keep exactly one
    probs = torch.tensor([[0.05, 0.0, 0.95], [0.6, 0.0, 0.4], [0.6, 0.0, 0.4]])
    out = pred._inference_single(torch.tensor([[0.0, 0, 5, 5]] * 3).repeat(1, 2), probs, (20, 20))
    assert len(out["scores"]) == 1 and out["scores"].item() == pytest.approx(0.6)


def _roi_align_v2_reference(feat: np.ndarray, box: np.ndarray, scale: float, out: int) -> np.ndarray:
    """Written-out ROIAlignV2 (aligned=True, adaptive sampling grid) for one box on (C, H, W)."""
    c, h, w = feat.shape
    x1, y1, x2, y2 = box * scale - 0.5
    bin_h, bin_w = (y2 - y1) / out, (x2 - x1) / out
    gh, gw = math.ceil((y2 - y1) / out), math.ceil((x2 - x1) / out)
    res = np.zeros((c, out, out))

    def bilinear(y: float, x: float) -> np.ndarray:
        if y < -1 or y > h or x < -1 or x > w:
            return np.zeros(c)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= h - 1:
            y0 = y1_ = h - 1
            y = float(y0)
        else:
            y1_ = y0 + 1
        if x0 >= w - 1:
            x0 = x1_ = w - 1
            x = float(x0)
        else:
            x1_ = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * feat[:, y0, x0] + (1 - ly) * lx * feat[:, y0, x1_]
                + ly * (1 - lx) * feat[:, y1_, x0] + ly * lx * feat[:, y1_, x1_])

    for ph in range(out):
        for pw in range(out):
            acc = np.zeros(c)
            for iy in range(gh):
                for ix in range(gw):
                    acc += bilinear(y1 + ph * bin_h + (iy + 0.5) * bin_h / gh, x1 + pw * bin_w + (ix + 0.5) * bin_w / gw)
            res[:, ph, pw] = acc / (gh * gw)
    return res


def test_pooler_levels_and_pooling_at_p4_p5_against_a_written_out_reference():
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [10.0, 20.0, 250.0, 260.0], [5.0, 3.0, 470.0, 500.0],
                          [0.0, 0.0, 900.0, 800.0], [30.0, 40.0, 40.0, 50.0]])
    # floor(4 + log2(sqrt(area)/224)) clamped to [2, 5]: 100 → 2 (p2... 3.16→3), 240 → 4, 480 → 5, 848 → 5, 10 → 2
    lv = assign_levels(boxes, 2, 5)
    expected = [int(min(max(math.floor(4 + math.log2(math.sqrt(float((b[2] - b[0]) * (b[3] - b[1]))) / 224 + 1e-8)), 2), 5)) - 2
                for b in boxes]
    assert lv.tolist() == expected and set(lv.tolist()) >= {2, 3}  # p4 and p5 are reached
    g = torch.Generator().manual_seed(0)
    strides = (4, 8, 16, 32)
    feats = [torch.randn(1, 3, 1024 // s, 1024 // s, generator=g) for s in strides]
    pooled = ROIPooler(7, strides)(feats, [boxes])
    for i, b in enumerate(boxes):
        level = int(lv[i])
        ref = _roi_align_v2_reference(feats[level][0].double().numpy(), b.double().numpy(), 1 / strides[level], 7)
        np.testing.assert_allclose(pooled[i].double().numpy(), ref, atol=1e-5)


def _paste_reference(probs, boxes, h, w):
    """detectron2 ``_do_paste_mask`` over the full image, thresholded at 0.5."""
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = boxes.split(1, dim=1)
    gy = ((ys[None] - y0) / (y1 - y0) * 2 - 1)[:, :, None].expand(-1, h, w)
    gx = ((xs[None] - x0) / (x1 - x0) * 2 - 1)[:, None, :].expand(-1, h, w)
    out = F.grid_sample(probs, torch.stack([gx, gy], 3), align_corners=False)
    return out[:, 0], out[:, 0] >= 0.5


def test_mask_paste_equals_grid_sample_including_image_borders():
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(6, 1, 28, 28, generator=g)
    boxes = torch.tensor([[-10.0, -5.0, 30.0, 25.0], [40.0, 30.0, 75.0, 52.0], [0.3, 0.7, 2.1, 1.9],
                          [60.0, 40.0, 64.0, 48.0], [5.5, 6.25, 40.75, 47.5], [-100.0, -100.0, 200.0, 200.0]])
    vals, ref = _paste_reference(probs, boxes, 48, 64)
    ours = paste_masks(probs, boxes, (48, 64))
    ambiguous = (vals - 0.5).abs() < 1e-5
    assert ours.shape == (6, 48, 64) and ours.dtype == torch.bool
    assert torch.equal(ours[~ambiguous], ref[~ambiguous])
    assert not ours[0, 30:, :].any() and not ours[3, :, :59].any()  # nothing outside the boxes
    # chunking bounds memory and changes nothing
    assert torch.equal(paste_masks(probs, boxes, (48, 64), max_elements=48 * 64), ours)
    assert paste_masks(probs[:0], boxes[:0], (48, 64)).shape == (0, 48, 64)


def test_matcher_and_sampler():
    iou = torch.tensor([[0.1, 0.5, 0.75, 0.2], [0.0, 0.31, 0.2, 0.25]])
    matcher = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    idx, lab = matcher(iou)
    # col 2 ≥ 0.7 → fg; col 1 in [0.3, 0.7) → ignore, but it is gt 1's best (0.31) → fg by low-quality matching
    assert lab.tolist() == [0, 1, 1, 0] and idx.tolist() == [0, 0, 0, 1]
    empty_idx, empty_lab = matcher(torch.zeros(0, 4))
    assert empty_lab.tolist() == [0, 0, 0, 0]
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    pos, neg = subsample_labels(labels, 16, 0.25, 0)
    assert len(pos) == 4 and len(neg) == 12 and (labels[pos] == 1).all() and (labels[neg] == 0).all()


def test_combine_rules():
    sem = torch.zeros(100, 100, dtype=torch.long)
    sem[:, 50:] = 1
    sem[:5, :5] = 2  # 25 px of stuff 2: below the area limit
    masks = torch.zeros(4, 100, 100, dtype=torch.bool)
    masks[0, :40, :40] = True
    masks[1, :40, :30] = True  # overlaps the better instance by 100 % → skipped
    masks[2, 60:, 60:] = True
    masks[3, 90:, :10] = True
    scores = torch.tensor([0.9, 0.8, 0.5, 0.49])  # 0.5 is kept, the first below 0.5 stops the visit
    pan, info = combine_panoptic(scores, torch.tensor([3, 1, 2, 0]), masks, sem, stuff_area_limit=100)
    assert [(s["id"], s["isthing"], s["category_id"]) for s in info] == [(1, True, 3), (2, True, 2), (3, False, 1)]
    assert info[2]["area"] == 50 * 100 - 40 * 40  # stuff 1 minus the instance painted over it
    assert int((pan == 0).sum()) == 100 * 100 - 1600 - 1600 - info[2]["area"]


@pytest.fixture(scope="module")
def tiny_maskrcnn():
    torch.manual_seed(0)
    return build_model("fapn_r18_panoptic", num_classes=3, neck_channels=32, box_fc_dim=64, mask_conv_dims=32,
                       head_conv_dims=64, sem_seg_num_classes=3, stem_out_channels=32).eval()


def test_empty_detections_and_tiny_images_are_valid_results(tiny_maskrcnn):
    model = tiny_maskrcnn
    old = model.roi_heads.box_predictor.score_thresh
    model.roi_heads.box_predictor.score_thresh = 1.0  # nothing can pass
    try:
        for size in ((20, 13), (97, 65)):  # smaller than the p6 stride, and not multiples of 32
            res = model.predict(np.full((*size, 3), 127, np.uint8))
            assert len(res) == 0 and res.boxes.shape == (0, 4) and res.masks.shape == (0, *size)
            assert res.sem_seg.shape == (3, *size) and res.panoptic_seg.shape == size
            assert all(not s["isthing"] for s in res.segments_info)
    finally:
        model.roi_heads.box_predictor.score_thresh = old
    res = model.predict(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8), output_size=(80, 112))
    assert res.image_size == (80, 112) and res.masks.shape[1:] == (80, 112)
    if len(res):
        assert float(res.boxes[:, 2].max()) <= 112 and float(res.boxes[:, 3].max()) <= 80
    with pytest.raises(ValueError, match="H×W×3"):
        model.predict(np.zeros((10, 10), np.uint8))


def test_batch_of_two_sizes_equals_single_images(tiny_maskrcnn):
    model = tiny_maskrcnn
    model.roi_heads.box_predictor.score_thresh = 0.0
    try:
        rng = np.random.default_rng(1)
        a = torch.from_numpy(rng.integers(0, 255, (3, 64, 96))).float()
        b = torch.from_numpy(rng.integers(0, 255, (3, 50, 90))).float()  # pads to 64×96 like a
        with torch.no_grad():
            both = model([a, b])
            single = [model([a])[0], model([b])[0]]
        for x, y, size in zip(both, single, ((64, 96), (50, 90))):
            assert x.image_size == size and len(x) == len(y) > 0
            torch.testing.assert_close(x.boxes, y.boxes, atol=1e-3, rtol=0)
            assert float(x.boxes[:, 2].max()) <= size[1] and float(x.boxes[:, 3].max()) <= size[0]
            torch.testing.assert_close(x.sem_seg, y.sem_seg, atol=1e-4, rtol=0)
    finally:
        model.roi_heads.box_predictor.score_thresh = 0.05


def _toy_targets(n: int, size: tuple[int, int]):
    g = torch.Generator().manual_seed(n)
    images, targets = [], []
    for i in range(n):
        img = torch.full((3, *size), 40.0)
        boxes, masks = [], []
        sem = torch.ones(size, dtype=torch.long)  # stuff 1 everywhere …
        for k in range(2):
            y0, x0 = int(torch.randint(0, size[0] - 24, (1,), generator=g)), int(torch.randint(0, size[1] - 24, (1,), generator=g))
            img[:, y0:y0 + 20, x0:x0 + 20] = torch.tensor([220.0, 60.0 + 100 * k, 30.0])[:, None, None]
            m = torch.zeros(size, dtype=torch.bool)
            m[y0:y0 + 20, x0:x0 + 20] = True
            masks.append(m)
            boxes.append([x0, y0, x0 + 20, y0 + 20])
            sem[m] = 0  # … except things (label 0)
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "classes": torch.tensor([0, 1]),
                        "masks": torch.stack(masks), "sem_seg": sem})
    return images, targets


def test_training_losses_are_detectron2s_and_decrease():
    torch.manual_seed(0)
    model = build_model("fapn_r18_panoptic", num_classes=2, neck_channels=32, box_fc_dim=64, mask_conv_dims=32,
                        head_conv_dims=64, sem_seg_num_classes=2, stem_out_channels=32).train()
    images, targets = _toy_targets(2, (64, 96))
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg"}
    assert all(torch.isfinite(v) for v in losses.values())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(12):
        total = sum(model(images, targets).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        first = float(total.detach()) if first is None else first
    assert float(total.detach()) < 0.8 * first
    assert model.neck.align2.dcn.conv_offset_mask.weight.grad is not None
    # images without objects are valid training input (all anchors and proposals background)
    empty = [{"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
              "masks": torch.zeros(0, 64, 96, dtype=torch.bool), "sem_seg": torch.ones(64, 96, dtype=torch.long)}]
    out = model(images[:1], empty)
    assert float(out["loss_box_reg"].detach()) == 0.0 and float(out["loss_rpn_loc"].detach()) == 0.0 and torch.isfinite(out["loss_cls"])
    with pytest.raises(ValueError, match="one target dict per image"):
        model(images, targets[:1])
    with pytest.raises(ValueError, match="sem_seg"):
        model(images[:1], [{k: v for k, v in targets[0].items() if k != "sem_seg"}])


def test_frozen_stages_follow_freeze_at():
    model = build_model("fpn_r50_fasterrcnn")
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "res2"}
    assert all(p.requires_grad for p in build_model("fpn_r18_fasterrcnn").parameters())


def test_clip_boxes_to_height_and_width():
    out = clip_boxes(torch.tensor([[-5.0, -2.0, 300.0, 150.0]]), (100, 200))
    assert out.tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_offsets_and_channels_machinery_on_a_detector_neck(tiny_maskrcnn):
    from fapn_core.introspect import predict_with_captures

    image = np.random.default_rng(4).integers(0, 255, (70, 100, 3), np.uint8)
    pred = predict_with_captures(tiny_maskrcnn, image, ("offsets", "attention", "fam_features", "fsm_inputs"))
    assert pred.task == "panoptic" and pred.detections is not None
    assert pred.logits.shape == (3, 70, 100) and pred.labels.shape == (70, 100)
    assert sorted(pred.captures.fam) == ["p2", "p3", "p4"] and sorted(pred.captures.fsm) == ["p2", "p3", "p4"]
    fam = pred.captures.fam["p2"]
    assert fam.offsets.shape == (8, 9, 2, 18, 25) and fam.field(weighted=True).shape == (2, 18, 25)
    assert pred.captures.fsm["p3"].inputs.shape[0] == 64  # res3 of this R18: 2 × its 32-channel stem
    plain = build_model("fpn_r18_fasterrcnn", num_classes=2, neck_channels=32, box_fc_dim=32).eval()
    pred = predict_with_captures(plain, image)
    assert pred.task == "detection" and pred.logits is None and pred.detections.masks is None
    assert not pred.captures.fam and "no FAM" in pred.captures.explain_missing()


def test_panoptic_result_as_dataset_labels_and_card_label_space():
    from fapn_core.checkpoints import semantic_classes
    from fapn_core.models.rcnn.panoptic import panoptic_to_labels

    sem = torch.tensor([[0, 1, 2], [0, 0, 2]])  # channel 0 = things, 1..2 = stuff
    pan = torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.int32)
    info = [{"id": 1, "isthing": True, "category_id": 1, "score": 0.9, "instance_id": 0}]
    labels = panoptic_to_labels(pan, info, sem, thing_ids=[5, 7], stuff_ids=[None, 0, 3])
    # thing pixel of ROI class 1 → dataset 7; stuff channels → 0 and 3; uncovered "thing" pixels → void
    assert labels.tolist() == [[7, 0, 3], [255, 255, 3]]
    card = {"task": "panoptic", "classes": ["pole", "sign"], "thing_category_ids": [5, 7],
            "stuff_classes": ["things", "road", "sky"], "stuff_category_ids": [None, 0, 3],
            "palette": [[1, 1, 1], [2, 2, 2]], "stuff_palette": [[9, 9, 9], [3, 3, 3], [4, 4, 4]]}
    names, pal = semantic_classes(card)
    assert len(names) == 8 and names[5] == "pole" and names[7] == "sign" and names[3] == "sky" and names[1] == "class_1"
    assert pal[7] == [2, 2, 2] and pal[0] == [3, 3, 3]
    assert semantic_classes({"task": "instance", "classes": ["a"]}) is None
    assert semantic_classes({**card, "stuff_category_ids": None}) is None


def test_mask_paste_in_windows_of_different_shapes_equals_grid_sample():
    """Tall, wide and tiny boxes pasted in one chunk (each mask only inside its own window) equal the full-image
    reference, on a larger image than the boxes cover."""
    g = torch.Generator().manual_seed(5)
    probs = torch.rand(5, 1, 28, 28, generator=g)
    boxes = torch.tensor([[10.0, 5.0, 14.5, 150.0], [20.0, 60.0, 190.0, 66.0], [100.0, 100.0, 101.0, 101.0],
                          [150.5, -3.0, 210.0, 40.25], [-2.0, 120.0, 30.0, 170.0]])
    vals, ref = _paste_reference(probs, boxes, 160, 200)
    ambiguous = (vals - 0.5).abs() < 1e-5
    for max_elements in (1 << 25, 400, 1):
        ours = paste_masks(probs, boxes, (160, 200), max_elements=max_elements)
        assert torch.equal(ours[~ambiguous], ref[~ambiguous]), max_elements
