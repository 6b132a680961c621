"""Matching (paper §3, "Anchor Design and Matching"), 3:1 hard-negative mining and the APM
(paper §3.1; its loss: §3.3)."""
import torch
import torch.nn.functional as F
from fvcore.nn import smooth_l1_loss

from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from padet.anchors import SSDAnchorGenerator
from padet.apm import AnchorPromotionModule
from padet.hard_negative_mining import hard_negative_mask
from padet.matching import PADetMatcher


def test_matching_forces_best_anchor_and_ignores_middle_band():
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]]))
    anchors = Boxes(torch.tensor([
        [0.0, 0.0, 10.0, 3.5],      # IoU 0.35 with GT 0: GT 0's best anchor -> forced positive
        [0.0, 0.0, 10.0, 3.4],      # IoU 0.34: in [0.3, 0.5) -> ignored
        [100.0, 100.0, 110.0, 109.0],  # IoU 0.9 with GT 1 -> positive
        [100.0, 100.0, 110.0, 105.0],  # IoU 0.5 with GT 1 -> positive (>= 0.5)
        [50.0, 50.0, 60.0, 60.0],   # IoU 0 -> negative
        [0.0, 0.0, 10.0, 2.0],      # IoU 0.2 -> negative
    ]))
    matches, labels = PADetMatcher((0.3, 0.5))(gt, anchors)
    assert labels.tolist() == [1, -1, 1, 1, 0, 0]
    assert matches[0] == 0 and matches[2] == 1 and matches[3] == 1


def test_forced_anchor_goes_to_its_gt_even_if_another_gt_overlaps_more():
    # anchor 0 is GT 1's only decent anchor but overlaps GT 0 more: SSD assigns it to GT 1
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 4.0]]))
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 10.0]]))
    matches, labels = PADetMatcher()(gt, anchors)
    assert labels.tolist() == [1, 1] and matches.tolist() == [1, 0]


def test_matching_without_gt_is_all_negative():
    matches, labels = PADetMatcher()(Boxes(torch.zeros(0, 4)), Boxes(torch.rand(5, 4) * 10))
    assert labels.tolist() == [0] * 5


def test_hard_negative_mining_ratio_and_ranking():
    losses = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6],
                           [0.4, 0.3, 0.2, 0.1, 0.9, 0.8, 0.7, 0.6]])
    pos = torch.zeros(2, 8, dtype=torch.bool)
    pos[0, 0] = True  # P = 1 -> 3 negatives
    cand = ~pos
    cand[0, 1] = False  # the hardest, but ignored
    keep = hard_negative_mask(losses, pos, cand, 3)
    assert keep[0].nonzero().flatten().tolist() == [3, 5, 7]  # 0.7, 0.8, 0.6
    # no positives: 3 hardest negatives (project decision), all candidates with ratio 0
    assert keep[1].nonzero().flatten().tolist() == [4, 5, 6]
    assert torch.equal(hard_negative_mask(losses, pos, cand, 0), cand)
    few = torch.zeros(2, 8, dtype=torch.bool)
    few[0, 1:3] = True
    assert hard_negative_mask(losses, pos, few, 3).sum() == 2  # min(3P, available) = 2


def _apm():
    gen = SSDAnchorGenerator(input_size=64, size_fractions=[0.2, 0.5, 0.9],
                             aspect_ratios=[[2, 3], [2]])
    return AnchorPromotionModule(
        in_features=["d1", "d2"], in_channels=8, anchor_generator=gen,
        box2box_transform=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)), matcher=PADetMatcher(),
        hnm_ratio=3, smooth_l1_beta=1.0)


def test_apm_loss_is_normalised_by_its_positive_count():
    torch.manual_seed(0)
    apm = _apm()
    features = {"d1": torch.randn(2, 8, 8, 8), "d2": torch.randn(2, 8, 4, 4)}
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 64)])
    gts = []
    for boxes in ([[4.0, 4.0, 20.0, 24.0], [30.0, 30.0, 60.0, 50.0]], [[10.0, 10.0, 40.0, 40.0]]):
        inst = Instances((64, 64))
        inst.gt_boxes = Boxes(torch.tensor(boxes))
        inst.gt_classes = torch.zeros(len(boxes), dtype=torch.long)
        gts.append(inst)
    with EventStorage():
        proposals, losses = apm(images, features, gts)
    assert set(losses) == {"loss_apm_cls", "loss_apm_box_reg"}
    # recompute by hand from the same predictions
    anchors = apm.anchors([features["d1"], features["d2"]], (64, 64))
    assert len(proposals) == 2 and len(proposals[0]) == len(anchors) == 8 * 8 * 6 + 4 * 4 * 4
    logits = torch.stack([p.objectness_logits for p in proposals])
    labels, gt_boxes = apm.label_anchors(anchors, gts)
    pos = labels == 1
    bce = F.binary_cross_entropy_with_logits(logits, pos.float(), reduction="none")
    expected_cls = 0.0
    for i in range(2):
        p = int(pos[i].sum())
        neg = bce[i][labels[i] == 0].sort(descending=True).values[: 3 * p]
        expected_cls += bce[i][pos[i]].sum() + neg.sum()
    num_pos = int(pos.sum())
    assert num_pos >= 3
    assert torch.allclose(losses["loss_apm_cls"], expected_cls / num_pos, rtol=1e-5)
    # promoted anchors are detached decodes of the deltas: re-encoding gives the deltas back
    _, delta_maps = apm.predict([features["d1"], features["d2"]])
    from padet.anchors import flatten_anchor_maps
    deltas = flatten_anchor_maps(delta_maps, 4)
    promoted = proposals[0].proposal_boxes.tensor
    assert not promoted.requires_grad
    assert torch.allclose(apm.box2box_transform.get_deltas(anchors, promoted), deltas[0],
                          atol=1e-3)
    target = apm.box2box_transform.get_deltas(anchors.expand_as(gt_boxes)[pos], gt_boxes[pos])
    expected_box = smooth_l1_loss(deltas[pos], target, 1.0, reduction="sum") / num_pos
    assert torch.allclose(losses["loss_apm_box_reg"], expected_box, rtol=1e-5)


def test_gt_overlapping_no_anchor_makes_no_anchor_positive():
    """detectron2's low-quality matches would tie every anchor at GT 1's best IoU 0 and make all
    of them positive; only GT 0's forced best anchor is (docs/padet.md, matching.py)."""
    gt = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [500.0, 500.0, 510.0, 510.0]]))
    anchors = Boxes(torch.tensor([[0.0, 0.0, 10.0, 4.0]] + [[30.0 + i, 30.0, 40.0 + i, 40.0]
                                                            for i in range(999)]))
    matches, labels = PADetMatcher()(gt, anchors)
    assert (labels == 1).nonzero().flatten().tolist() == [0]
    assert matches[0] == 0 and (labels[1:] == 0).all()
