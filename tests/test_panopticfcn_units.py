"""PanopticFCN's rules one at a time on constructed inputs, and a tiny model end to end (no fixtures needed).

Kernel fusion is checked against a written-out reference of the official rule (README rule 19: the first similar
row takes a candidate; a candidate whose first similar row was merged away is dropped), on constructed kernels
that do merge (chains, cross-class twins, an exact 0.9) and on random clusters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fapn_core.introspect import CaptureHooks
from fapn_core.models.deform import dcn_impl
from fapn_core.models.panopticfcn import PanopticFCNOptions, panopticfcn_config
from fapn_core.models.panopticfcn.convert import export_official, official_to_native
from fapn_core.models.panopticfcn.encoder import with_coords
from fapn_core.models.panopticfcn.generators import cosine_similarity_matrix, fuse_stuff_kernels, fuse_thing_kernels
from fapn_core.models.panopticfcn.losses import dice_loss, sigmoid_focal_loss
from fapn_core.models.panopticfcn.postprocess import boxes_from_masks, keep_instances, semantic_output, to_output_size
from fapn_core.models.panopticfcn.selection import select_level, smooth_centres, two_stage_topk
from fapn_core.models.panopticfcn.targets import draw_gaussians, gaussian_radius, image_targets
from fapn_core.models.zoo import build_from_config


# -------------------------------------------------------------------------------------------- kernel fusion
def reference_fusion(meta: torch.Tensor, classes: list[int], scores: list[float], thresh: float = 0.9,
                     class_specific: bool = True):
    """Rule 19 written out: j's first similar row i ≤ j (cosine ≥ thresh, same class) takes it; j is kept iff that
    row is j itself (or it has none); a kept row's kernel is the mean of the candidates it takes."""
    n = meta.shape[0]
    sim = cosine_similarity_matrix(meta)
    first: list[int | None] = []
    for j in range(n):
        rows = [i for i in range(j + 1) if sim[i, j] >= thresh and (not class_specific or classes[i] == classes[j])]
        first.append(rows[0] if rows else None)
    kept = [j for j in range(n) if first[j] in (j, None)]
    fused, members = [], []
    for i in kept:
        mine = [j for j in range(n) if first[j] == i]
        members.append(mine)
        fused.append(meta[mine].mean(0) if mine else torch.zeros_like(meta[0]))
    fused_meta = torch.stack(fused) if fused else meta[:0]
    return kept, members, fused_meta, [classes[i] for i in kept], [scores[i] for i in kept]


def _check_against_reference(meta, classes, scores, thresh=0.9, class_specific=True):
    f = fuse_thing_kernels(meta, torch.tensor(classes), torch.tensor(scores), thresh=thresh,
                           class_specific=class_specific)
    kept, members, fused, cls, sc = reference_fusion(meta, classes, scores, thresh, class_specific)
    assert f.keep.nonzero()[:, 0].tolist() == kept
    assert [row.nonzero()[:, 0].tolist() for row in f.assign] == members
    torch.testing.assert_close(f.meta, fused, atol=1e-6, rtol=1e-6)
    assert f.classes.tolist() == cls and f.scores.tolist() == pytest.approx(sc)
    return f


def _unit(angle_deg: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    return torch.tensor([math.cos(a), math.sin(a), 0.0, 0.0])


def test_fusion_chain_merges_into_the_first_row_and_drops_the_orphan():
    # a~b (cos 20° = 0.94), b~c, but a≁c (cos 40° = 0.77); one class, scores a > b > c
    meta = torch.stack([_unit(0), _unit(20), _unit(40)]) * torch.tensor([[2.0], [1.0], [3.0]])
    f = _check_against_reference(meta, [1, 1, 1], [0.9, 0.8, 0.7])
    assert f.keep.tolist() == [True, False, False]  # c's first similar row (b) was merged away: c is dropped
    assert f.assign.tolist() == [[True, True, False]]
    torch.testing.assert_close(f.meta[0], (meta[0] + meta[1]) / 2)
    assert f.scores.tolist() == pytest.approx([0.9])  # a kept row keeps its own score (not averaged)


def test_fusion_keeps_a_candidate_whose_first_similar_row_is_itself():
    # a≁b, a~c, b~c: c goes to a (its first similar row); b is kept on its own
    meta = torch.stack([_unit(0), _unit(40), _unit(20)])
    f = _check_against_reference(meta, [0, 0, 0], [0.9, 0.8, 0.7])
    assert f.keep.tolist() == [True, True, False] and f.assign.tolist() == [[True, False, True], [False, True, False]]


def test_fusion_is_class_specific():
    meta = torch.stack([_unit(0), _unit(0), _unit(5)])  # identical kernels, different classes
    f = _check_against_reference(meta, [3, 4, 3], [0.9, 0.8, 0.7])
    assert f.keep.tolist() == [True, True, False] and f.classes.tolist() == [3, 4]
    f = _check_against_reference(meta, [3, 4, 3], [0.9, 0.8, 0.7], class_specific=False)
    assert f.keep.tolist() == [True, False, False] and f.assign.tolist() == [[True, True, True]]


def test_fusion_threshold_is_non_strict_at_exactly_0_9():
    a = torch.tensor([1.0, 0.0, 0.0, 0.0])
    b = torch.tensor([9.0, 3.0, 3.0, 1.0])  # |b| = 10: cosine 0.9 exactly (in float32)
    meta = torch.stack([a, b])
    assert cosine_similarity_matrix(meta)[0, 1] == torch.tensor(0.9)
    f = _check_against_reference(meta, [2, 2], [0.5, 0.4])
    assert f.keep.tolist() == [True, False]
    f = _check_against_reference(meta, [2, 2], [0.5, 0.4], thresh=float(np.nextafter(np.float32(0.9), 1)))
    assert f.keep.tolist() == [True, True]


@pytest.mark.parametrize("seed", range(12))
def test_fusion_matches_the_reference_on_random_clusters(seed):
    g = torch.Generator().manual_seed(seed)
    bases = torch.randn(4, 16, generator=g)
    n = 14
    pick = torch.randint(0, 4, (n,), generator=g)
    noise = torch.rand(n, 1, generator=g) * 0.9
    meta = bases[pick] + noise * torch.randn(n, 16, generator=g)
    classes = torch.randint(0, 2, (n,), generator=g).tolist()
    scores = sorted(torch.rand(n, generator=g).tolist(), reverse=True)
    f = _check_against_reference(meta, classes, scores)
    assert f.keep.sum() < n  # these clusters do merge


def test_fusion_of_nothing_and_of_a_zero_kernel():
    f = fuse_thing_kernels(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    assert f.meta.shape == (0, 8) and f.keep.numel() == 0
    f = _check_against_reference(torch.zeros(1, 8), [0], [0.5])  # self-similarity 0: kept, zero kernel, no NaN
    assert torch.isfinite(f.meta).all()


def test_stuff_fusion_averages_kernels_and_scores_per_class_ascending():
    meta = torch.arange(12.0).view(4, 3)
    meta_out, classes, scores = fuse_stuff_kernels(meta, torch.tensor([3, 1, 3, 0]), torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert classes.tolist() == [0, 1, 3]
    torch.testing.assert_close(meta_out, torch.stack([meta[3], meta[1], (meta[0] + meta[2]) / 2]))
    torch.testing.assert_close(scores, torch.tensor([0.8, 0.4, 0.4]))


# ------------------------------------------------------------------------------------- per-level selection
def test_centre_smoothing_counts_the_zero_padding():
    logits = torch.randn(2, 5, 6)
    s, _ = smooth_centres(logits, 3)
    c = logits.sigmoid()
    corner = (c[0, 0, 0] + c[0, :2, :2].sum() / 9) / 2  # border windows divide by k², not by their valid cells
    torch.testing.assert_close(s[0, 0, 0], corner)


def test_max_pool_nms_keeps_every_tied_cell_of_a_plateau():
    _, peaks = smooth_centres(torch.zeros(1, 5, 5), 3)
    assert (peaks[0, 1:4, 1:4] > 0).all() and int((peaks > 0).sum()) == 9  # the 3×3 interior plateau
    assert len(set(peaks[0, 1:4, 1:4].flatten().tolist())) == 1


def test_two_stage_topk_class_is_the_stage_two_index_over_k():
    scores = torch.zeros(3, 2, 3)
    scores[2, 1, 2] = 0.9  # best cell is class 2, cell 5
    scores[0, 0, 1] = 0.8
    scores[1, 1, 0] = 0.7
    s, cells, classes = two_stage_topk(scores, 2)
    assert s.tolist() == pytest.approx([0.9, 0.8]) and classes.tolist() == [2, 0] and cells.tolist() == [5, 1]


def test_thing_threshold_is_strict_and_kernels_follow_topk_order():
    torch.manual_seed(0)
    centres = torch.randn(2, 6, 7) * 2
    kernels = torch.randn(8, 6, 7)
    regions = torch.randn(3, 6, 7)
    kw = dict(pool_size=3, stuff_thresh=0.1, top_num=100)
    sel = select_level(centres, regions, kernels, center_thresh=0.0, **kw)
    value = float(sel.thing_scores[1])
    at = select_level(centres, regions, kernels, center_thresh=value, **kw)
    assert at.thing_scores.numel() == 1  # the candidate exactly at the threshold is out
    below = select_level(centres, regions, kernels, center_thresh=float(np.nextafter(np.float32(value), 0)), **kw)
    assert below.thing_scores.numel() == 2
    torch.testing.assert_close(sel.thing_kernels, kernels.flatten(1)[:, sel.thing_cells].T)
    assert (sel.thing_scores[:-1] >= sel.thing_scores[1:]).all()


def test_stuff_kernels_are_pooled_over_the_whole_level_and_ties_go_to_the_first_class():
    regions = torch.full((3, 4, 4), -5.0)
    regions[0] = 2.0  # "things" everywhere …
    regions[1, 0, :2] = 3.0  # … except two cells of class 1
    regions[2, 3, 3] = 2.0  # a tie with channel 0 → channel 0
    kernels = torch.ones(5, 4, 4)
    sel = select_level(torch.full((1, 4, 4), -9.0), regions, kernels, pool_size=3, center_thresh=0.2,
                       stuff_thresh=0.1, top_num=100)
    assert sel.thing_scores.numel() == 0
    assert sel.stuff_classes.tolist() == [0, 1]
    torch.testing.assert_close(sel.stuff_kernels, torch.tensor([[14 / 16] * 5, [2 / 16] * 5]))
    torch.testing.assert_close(sel.stuff_scores, torch.tensor([2.0, 3.0]).sigmoid())


def test_coord_conv_appends_rows_then_columns():
    out = with_coords(torch.zeros(2, 3, 4, 5))
    assert out.shape == (2, 5, 4, 5)
    torch.testing.assert_close(out[0, 3, :, 0], torch.linspace(-1, 1, 4))  # first added channel: the row
    torch.testing.assert_close(out[1, 4, 0, :], torch.linspace(-1, 1, 5))  # second: the column
    assert (out[0, 3] == out[0, 3, :, :1]).all()


# ------------------------------------------------------------------------------------------- postprocessing
def test_boxes_from_masks_add_one_on_the_max_corner():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    boxes = boxes_from_masks(masks)
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]] and boxes.dtype == torch.float32


def test_masks_are_upsampled_cropped_then_resized():
    maps = torch.rand(2, 5, 7)
    out = to_output_size(maps, 4, (17, 26), (30, 40))
    up = torch.nn.functional.interpolate(maps[None], scale_factor=4, mode="bilinear", align_corners=False)
    expect = torch.nn.functional.interpolate(up[..., :17, :26], size=(30, 40), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expect[0])
    assert to_output_size(maps[:0], 4, (17, 26), (30, 40)).shape == (0, 30, 40)


def test_semantic_output_is_zero_where_no_kernel():
    sem = semantic_output(torch.rand(1, 5, 7), torch.tensor([2]), 4, 4, (20, 28), (20, 28))
    assert sem.shape == (4, 20, 28) and sem[[0, 1, 3]].abs().max() == 0 and sem[2].min() > 0


def test_instance_filter_is_non_strict_and_capped():
    scores = torch.tensor([0.3, 0.05, 0.049, 0.6, 0.2])
    assert keep_instances(scores, 100).tolist() == [3, 0, 4, 1]
    assert keep_instances(scores, 2).tolist() == [3, 0]


# ------------------------------------------------------------------------------------------------- training
def test_focal_and_dice_losses():
    logits, t = torch.tensor([[[[0.0, 2.0]]]]), torch.tensor([[[[1.0, 0.0]]]])
    p = logits.sigmoid()
    expect = 0.25 * (1 - p[..., 0]) ** 2 * math.log(2) + 0.75 * p[..., 1] ** 2 * -torch.log(1 - p[..., 1])
    torch.testing.assert_close(sigmoid_focal_loss(logits, t), expect.sum())
    torch.testing.assert_close(sigmoid_focal_loss(logits, t, per_map_mean=True), expect.sum() / 2)
    x = torch.tensor([[0.0, 1.0, 1.0]])
    assert dice_loss(x, x).item() == pytest.approx(0.0) and dice_loss(x, 1 - x).item() == pytest.approx(1.0)


def test_gaussian_targets_follow_the_official_drawing_rule():
    wh = torch.tensor([[10.0, 6.0], [3.0, 3.0]])
    radii = gaussian_radius(wh, 0.7).to(torch.int64)
    heat = draw_gaussians(2, (7, 9), torch.tensor([[1.0, 2.0], [8.0, 6.0]], dtype=torch.float64), radii,
                          torch.tensor([1, 1]), 3.0)
    expect = torch.zeros(7, 9)
    for (x, y), r in zip([(1, 2), (8, 6)], radii.tolist()):  # CornerNet draw_gaussian, written out
        sigma = (2 * r + 1) / 3.0
        for yy in range(max(0, y - r), min(7, y + r + 1)):
            for xx in range(max(0, x - r), min(9, x + r + 1)):
                expect[yy, xx] = max(expect[yy, xx], math.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma * sigma)))
    torch.testing.assert_close(heat[1], expect)
    assert heat[0].abs().max() == 0 and heat[1, 2, 1] == 1


def test_targets_assign_instances_by_scale_and_stuff_by_presence():
    sem = torch.full((32, 48), 2)
    sem[:, :10] = 255
    masks = torch.zeros(1, 32, 48, dtype=torch.bool)
    masks[0, 8:24, 16:40] = True
    sem[masks[0]] = 0
    tgt = {"sem_seg": sem, "masks": masks, "boxes": torch.tensor([[16.0, 8, 40, 24]]), "classes": torch.tensor([1])}
    levels = image_targets(tgt, num_thing_classes=2, num_stuff_channels=3, padded_size=(32, 64), stride4_shape=(8, 16),
                           level_shapes=[(4, 8), (2, 4), (1, 2), (1, 1), (1, 1)],
                           instance_scales=((1, 16), (8, 32), (16, 64), (32, 128), (64, 2048)), min_overlap=0.7,
                           gaussian_sigma=3.0)
    sizes = [lv.thing_classes.numel() for lv in levels]
    assert sizes == [0, 1, 1, 0, 0]  # sqrt(24·16) ≈ 19.6 is in [8, 32] and [16, 64] only
    lv = levels[1]
    assert lv.centres[1].max() == 1 and lv.centres[0].abs().max() == 0
    assert lv.thing_masks.shape == (1, 8, 16) and lv.thing_masks[0, :, 12:].abs().max() == 0  # padding stays 0
    assert lv.regions.shape == (3, 2, 4) and lv.stuff_labels.shape[0] == lv.stuff_masks.shape[0] >= 1


# ------------------------------------------------------------------------------------------- a tiny model
def _tiny(neck: str = "fpn", **options):
    torch.manual_seed(0)
    cfg = panopticfcn_config(neck, 18, num_classes=3, sem_seg_num_classes=4, neck_channels=32, head_conv_dims=64,
                             stem_out_channels=16, backbone_norm="BN", stride_in_1x1=False, freeze_at=0,
                             pixel_std=(58.4, 57.1, 57.4))
    return build_from_config(cfg.replace(encoder_conv_dims=16, **options))


@pytest.fixture(scope="module")
def tiny():
    return _tiny().eval()


def _check_result(res, size, num_stuff):
    h, w = size
    n = len(res)
    assert res.image_size == (h, w)
    assert res.boxes.shape == (n, 4) and res.classes.shape == (n,) and res.masks.shape == (n, h, w)
    assert res.sem_seg.shape == (num_stuff, h, w) and 0 <= float(res.sem_seg.min()) <= float(res.sem_seg.max()) <= 1
    assert res.panoptic_seg.shape == (h, w) and res.panoptic_seg.dtype == torch.int32
    ids = sorted(int(i) for i in torch.unique(res.panoptic_seg) if i > 0)
    assert ids == [s["id"] for s in res.segments_info]
    if n:
        assert (res.scores[:-1] >= res.scores[1:]).all() and float(res.scores.min()) >= 0.05
        assert (res.boxes[:, 2] <= w).all() and (res.boxes[:, 3] <= h).all()


@pytest.mark.parametrize("size,out", [((1, 1), None), ((37, 53), (50, 71)), ((97, 31), None)])
def test_odd_image_sizes_give_valid_results(tiny, size, out):
    with torch.no_grad():
        tiny.position_head.out_inst.bias.fill_(3.0)  # every level has peaks above 0.2
    img = (torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 255)
    res = tiny.predict(img, output_size=out)
    _check_result(res, out or size, 4)
    assert len(res) > 0


def test_no_peak_above_threshold_gives_valid_empty_instances(tiny):
    with torch.no_grad():
        tiny.position_head.out_inst.bias.fill_(-30.0)
    res = tiny.predict(np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8))
    _check_result(res, (45, 61), 4)
    assert len(res) == 0 and all(not s["isthing"] for s in res.segments_info)


def test_no_stuff_candidate_gives_an_empty_panoptic_map(tiny):
    with torch.no_grad():
        tiny.position_head.out_inst.bias.fill_(-30.0)
        tiny.position_head.out_sem.bias.fill_(-30.0)
    res = tiny.predict(torch.rand(3, 40, 40) * 255)
    _check_result(res, (40, 40), 4)
    assert res.sem_seg.abs().max() == 0 and res.panoptic_seg.abs().max() == 0 and res.segments_info == []
    with torch.no_grad():
        tiny.position_head.out_sem.bias.fill_(-2.19)


def test_batches_and_maps(tiny):
    with torch.no_grad():
        tiny.position_head.out_inst.bias.fill_(3.0)
    images = [torch.rand(3, 40, 52) * 255, torch.rand(3, 33, 70) * 255]
    with torch.no_grad(), tiny.capture_maps() as maps:
        results = tiny(images, output_sizes=[(40, 52), (20, 35)])
    assert [r.image_size for r in results] == [(40, 52), (20, 35)] and len(maps) == 2
    lv = maps[1].levels["p3"]
    assert lv.stride == 8 and lv.centres.shape == (3, 5, 9) and lv.regions.shape == (4, 5, 9)
    assert lv.peaks.shape[1] == 4 and (lv.peaks[:, 3] > 0.2).all()
    assert maps[1].candidates.shape[0] == sum(len(v.peaks) for v in maps[1].levels.values())
    assert tiny._maps_sink is None  # nothing is kept outside the block


def test_position_head_runs_through_the_project_dcn_paths(tiny):
    x = torch.randn(1, 32, 9, 11)
    with torch.no_grad():
        with dcn_impl("reference"):
            ref = tiny.position_head(x)
        with dcn_impl("fast"):
            fast = tiny.position_head(x)
    for a, b in zip(ref, fast):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert tiny.position_head.conv1.bias is None  # official: no bias in the deformable convs


def test_fapn_neck_is_captured_like_every_fapn_neck():
    model = _tiny("fapn").eval()
    with CaptureHooks(model, ("offsets", "attention", "features")) as hooks:
        model.predict(torch.rand(3, 64, 96) * 255)
    caps = hooks.captures((64, 96))[0]
    assert caps.has_fam and caps.has_fsm and set(caps.fam) == {"p2", "p3", "p4"}
    assert caps.fam["p2"].offsets.shape == (8, 9, 2, 16, 24)


@pytest.mark.parametrize("neck", ["fam", "deconv_fsm", "fpn_extra_conv"])
def test_ablation_necks_carry_the_heads(neck):
    model = _tiny(neck).eval()
    with torch.no_grad():
        model.position_head.out_inst.bias.fill_(3.0)
    _check_result(model.predict(torch.rand(3, 48, 64) * 255), (48, 64), 4)
    assert set(model.extract_features(torch.rand(1, 3, 48, 64) * 255)) == {f"p{i}" for i in range(2, 8)}


def test_native_keys_round_trip_through_official_names():
    model = _tiny("fapn")
    sd = model.state_dict()
    official = export_official(sd, "fapn")
    assert {official_to_native(k) for k in official} == {k for k in sd if not k.endswith("num_batches_tracked")}
    assert "position_head.position_head.position_head_head_2.dcnv2.norm.weight" in official
    assert "backbone.top_block.p7.bias" in official and "backbone.fan_align5.weight" in official


def test_options_come_from_config_fields_when_present():
    class Cfg:
        center_thresh = 0.3
        pos_num = 5

    opts = PanopticFCNOptions.from_config(Cfg(), stuff_thresh=0.05)
    assert (opts.center_thresh, opts.pos_num, opts.stuff_thresh, opts.mask_thresh) == (0.3, 5, 0.05, 0.4)
    with pytest.raises(TypeError, match="unknown"):
        PanopticFCNOptions.from_config(None, centre_thresh=0.1)
    with pytest.raises(ValueError, match="cosine"):
        PanopticFCNOptions(similar_type="L2")


def test_a_tiny_model_learns_a_scene():
    model = _tiny(instance_scales=((1, 32), (16, 64), (32, 128), (64, 256), (128, 2048)), head_num_convs=1).train()
    h = w = 64
    img = torch.full((3, h, w), 100.0)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 6:26, 6:26] = True
    masks[1, 34:58, 12:36] = True
    img[:, masks[0]] = torch.tensor([250.0, 20, 20])[:, None]
    img[:, masks[1]] = torch.tensor([20.0, 250, 20])[:, None]
    sem = torch.ones(h, w, dtype=torch.long)
    sem[:, 44:] = 2
    img[:, :, 44:] = torch.tensor([20.0, 20, 200])[:, None, None]
    img[:, masks[1]] = torch.tensor([20.0, 250, 20])[:, None]
    sem[masks.any(0)] = 0
    target = {"boxes": torch.tensor([[6.0, 6, 26, 26], [12, 34, 36, 58]]), "classes": torch.tensor([0, 2]),
              "masks": masks, "sem_seg": sem}
    empty = {"boxes": torch.zeros(0, 4), "classes": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, h, w, dtype=torch.bool), "sem_seg": torch.ones(h, w, dtype=torch.long)}
    first = model([img, img.flip(-1)], [target, empty])
    assert set(first) == {"loss_pos_th", "loss_pos_st", "loss_seg_th", "loss_seg_st"}
    assert all(torch.isfinite(v) for v in first.values())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    totals = []
    for _ in range(10):
        losses = model([img], [target])
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert np.mean(totals[-3:]) < 0.75 * totals[0], totals
