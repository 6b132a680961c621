"""PRM (paper Sec. 3.2): per-module soft sampling, the test-time ensemble, per-module losses
and evaluation, on ROI heads fed hand-built features."""
import pytest
import torch

from train_net import load_config
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from rga_prm.parallel_roi_heads import PRMOptions
from rga_prm.sampling import label_proposals
from tests.conftest import config_path

SHAPES = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")
NUM_CLASSES = 5
H, W = 128, 160
INPUT_SHAPE = {f"p{i}": ShapeSpec(channels=64, stride=2 ** i) for i in range(2, 6)}


def _labelled(num_pos, num_neg):
    props = Instances((H, W))
    props.proposal_boxes = Boxes(
        torch.rand(num_pos + num_neg, 4) * 10 + torch.tensor([0, 0, 20, 20]))
    props.gt_classes = torch.cat([torch.arange(num_pos) % NUM_CLASSES,
                                  torch.full((num_neg,), NUM_CLASSES)])
    return props


@pytest.mark.parametrize("num_pos,expected", [(300, [(256, 256), (51, 461)]),
                                              (20, [(20, 492), (20, 492)]),
                                              (0, [(0, 512), (0, 512)])])
def test_soft_sampling_counts_per_module(num_pos, expected):
    prm = PRMOptions([0.5, 0.1], 512, [1.0, 1.0], -1)
    labelled = [_labelled(num_pos, 2000 - num_pos)]
    torch.manual_seed(0)
    with EventStorage() as storage:
        samples = prm.sample(labelled, NUM_CLASSES)
        logged = storage.latest()
    for k, ((sample,), (fg, bg)) in enumerate(zip(samples, expected)):
        is_fg = sample.gt_classes < NUM_CLASSES
        assert (int(is_fg.sum()), int((~is_fg).sum())) == (fg, bg)
        assert logged[f"roi_head/num_fg_samples_m{k}"][0] == fg
        assert logged[f"roi_head/num_bg_samples_m{k}"][0] == bg
        # drawn from the same labelled proposals, never duplicated
        rows = {tuple(b) for b in labelled[0].proposal_boxes.tensor.tolist()}
        drawn = [tuple(b) for b in sample.proposal_boxes.tensor.tolist()]
        assert set(drawn) <= rows and len(set(drawn)) == len(drawn)
    a, b = (set(map(tuple, s[0].proposal_boxes.tensor.tolist())) for s in samples)
    assert a != b  # independent draws


def test_label_proposals_matches_every_proposal_once():
    gt = Instances((H, W))
    gt.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 120.0, 100.0]]))
    gt.gt_classes = torch.tensor([3, 1])
    props = Instances((H, W))
    props.proposal_boxes = Boxes(torch.tensor(
        [[10.0, 10.0, 50.0, 52.0], [61.0, 60.0, 120.0, 100.0], [0.0, 100.0, 20.0, 120.0]]))
    empty = Instances((H, W))
    empty.gt_boxes, empty.gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
    props_empty = props[[0, 2]]
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    out = label_proposals([props, props_empty], [gt, empty], matcher, NUM_CLASSES)
    assert out[0].gt_classes.tolist() == [3, 1, NUM_CLASSES]
    assert torch.equal(out[0].gt_boxes.tensor[:2], gt.gt_boxes.tensor)
    assert out[1].gt_classes.tolist() == [NUM_CLASSES, NUM_CLASSES]


def _cfg(*opts):
    return load_config(SHAPES, ["MODEL.DEVICE", "cpu", *opts])


def _inputs(seed=0, num_gt=(3, 2)):
    g = torch.Generator().manual_seed(seed)
    features = {k: torch.rand(2, 64, H // s.stride, W // s.stride, generator=g)
                for k, s in INPUT_SHAPE.items()}
    proposals, targets = [], []
    for n in num_gt:
        xy = torch.rand(200, 2, generator=g) * torch.tensor([W - 40.0, H - 40.0])
        p = Instances((H, W))
        p.proposal_boxes = Boxes(torch.cat([xy, xy + 8 + torch.rand(200, 2, generator=g) * 30], 1))
        p.objectness_logits = torch.rand(200, generator=g)
        t = Instances((H, W))
        t.gt_boxes = Boxes(p.proposal_boxes.tensor[:n] + 1.0)
        t.gt_classes = torch.randint(NUM_CLASSES, (n,), generator=g)
        proposals.append(p)
        targets.append(t)
    return features, proposals, targets


def _heads(cfg, seed=0):
    torch.manual_seed(seed)
    return build_roi_heads(cfg, INPUT_SHAPE)


def _infer(heads, features, proposals):
    heads.eval()
    with torch.no_grad():
        return heads(None, features, proposals)[0]


def _train(heads, features, proposals, targets, seed=0):
    heads.train()
    torch.manual_seed(seed)
    with EventStorage() as storage:
        _, losses = heads(None, features, proposals, targets)
        return losses, storage.latest()


def _same_instances(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x.pred_boxes.tensor, y.pred_boxes.tensor)
        assert torch.equal(x.scores, y.scores) and torch.equal(x.pred_classes, y.pred_classes)


def test_one_module_equals_standard_roi_heads():
    standard = _heads(_cfg("MODEL.ROI_HEADS.POSITIVE_FRACTION", "0.25"))
    parallel = _heads(_cfg("MODEL.ROI_HEADS.NAME", "ParallelROIHeads",
                           "MODEL.PRM.POSITIVE_FRACTIONS", "[0.25]", "MODEL.PRM.LOSS_WEIGHTS",
                           "[1.0]", "MODEL.PRM.BATCH_SIZE_PER_IMAGE", "128"))
    state = {k.replace("box_head.", "box_head.0.").replace("box_predictor.", "box_predictor.0."): v
             for k, v in standard.state_dict().items()}
    parallel.load_state_dict(state)
    features, proposals, targets = _inputs()
    _same_instances(_infer(standard, features, proposals), _infer(parallel, features, proposals))
    ref, _ = _train(standard, features, proposals, targets)
    got, _ = _train(parallel, features, proposals, targets)
    assert set(got) == {"loss_cls_m0", "loss_box_reg_m0"}
    for name in ("loss_cls", "loss_box_reg"):
        assert torch.equal(got[name + "_m0"], ref[name])


PRM2 = ["MODEL.ROI_HEADS.NAME", "ParallelROIHeads", "MODEL.PRM.BATCH_SIZE_PER_IMAGE", "128"]


def test_ensemble_averages_logits_and_takes_primary_boxes():
    heads = _heads(_cfg(*PRM2, "MODEL.PRM.POSITIVE_FRACTIONS", "[0.1, 0.5]"))
    assert heads.prm.primary_module == 1  # the highest positive fraction, wherever it is
    box_features = torch.rand(7, 64, 7, 7)
    predictor, (logits, deltas) = heads.prm.test_predictions(
        box_features, heads.box_head, heads.box_predictor)
    outputs = [p(h(box_features)) for h, p in zip(heads.box_head, heads.box_predictor)]
    torch.testing.assert_close(logits, (outputs[0][0] + outputs[1][0]) / 2)
    assert torch.equal(deltas, outputs[1][1]) and predictor is heads.box_predictor[1]
    assert not torch.allclose(outputs[0][0], outputs[1][0])  # independently initialised


def test_identical_modules_ensemble_equals_one_module_and_test_module_selects():
    features, proposals, _ = _inputs()
    heads = _heads(_cfg(*PRM2))
    heads.box_head[1].load_state_dict(heads.box_head[0].state_dict())
    heads.box_predictor[1].load_state_dict(heads.box_predictor[0].state_dict())
    ensemble = _infer(heads, features, proposals)
    heads.prm.test_module = 0
    _same_instances(ensemble, _infer(heads, features, proposals))

    # TEST_MODULE k is module k alone: same as a one-module head holding module k's weights
    differing = _heads(_cfg(*PRM2, "MODEL.PRM.TEST_MODULE", "1"), seed=3)
    alone = _heads(_cfg(*PRM2, "MODEL.PRM.POSITIVE_FRACTIONS", "[0.1]",
                        "MODEL.PRM.LOSS_WEIGHTS", "[1.0]"))
    alone.box_head[0].load_state_dict(differing.box_head[1].state_dict())
    alone.box_predictor[0].load_state_dict(differing.box_predictor[1].state_dict())
    _same_instances(_infer(differing, features, proposals), _infer(alone, features, proposals))


def test_losses_one_entry_per_module_weighted_and_accuracies_logged():
    features, proposals, targets = _inputs()
    heads = _heads(_cfg(*PRM2))
    losses, logged = _train(heads, features, proposals, targets)
    assert set(losses) == {"loss_cls_m0", "loss_box_reg_m0", "loss_cls_m1", "loss_box_reg_m1"}
    assert all(torch.isfinite(v) for v in losses.values())
    for k in (0, 1):
        assert f"m{k}/fast_rcnn/bg_cls_accuracy" in logged
        assert f"m{k}/fast_rcnn/cls_accuracy" in logged
    assert logged["roi_head/num_fg_samples_m1"][0] <= 12  # int(128 * 0.1)
    heads.prm.loss_weights = [1.0, 0.5]
    halved, _ = _train(heads, features, proposals, targets)
    for name in ("loss_cls", "loss_box_reg"):
        assert torch.equal(halved[name + "_m0"], losses[name + "_m0"])
        torch.testing.assert_close(halved[name + "_m1"], 0.5 * losses[name + "_m1"])


def test_cascade_losses_per_stage_and_module_and_inference():
    features, proposals, targets = _inputs(num_gt=(3, 0))  # one image without GT
    heads = _heads(_cfg("MODEL.ROI_HEADS.NAME", "ParallelCascadeROIHeads",
                        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True",
                        "MODEL.PRM.BATCH_SIZE_PER_IMAGE", "128"))
    losses, logged = _train(heads, features, proposals, targets)
    assert set(losses) == {f"{n}_stage{s}_m{k}" for n in ("loss_cls", "loss_box_reg")
                           for s in range(3) for k in range(2)}
    sum(losses.values()).backward()
    for s in range(3):
        for k in range(2):
            assert heads.box_predictor[s][k].cls_score.weight.grad.abs().sum() > 0
            assert f"stage{s}/roi_head/num_fg_samples_m{k}" in logged
    instances = _infer(heads, features, proposals)
    assert len(instances) == 2 and all(len(i) > 0 for i in instances)


def test_primary_module_is_the_highest_fraction_first_on_ties():
    assert PRMOptions([0.5, 0.1], 512, [1.0, 1.0], -1).primary_module == 0
    assert PRMOptions([0.1, 0.5, 0.5], 512, [1.0] * 3, -1).primary_module == 1


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="POSITIVE_FRACTIONS"):
        PRMOptions([0.5, 0.0], 512, [1.0, 1.0], -1)
    with pytest.raises(ValueError, match="LOSS_WEIGHTS"):
        PRMOptions([0.5, 0.1, 0.25], 512, [1.0, 1.0], -1)
    with pytest.raises(ValueError, match="TEST_MODULE"):
        PRMOptions([0.5, 0.1], 512, [1.0, 1.0], 2)
    with pytest.raises(ValueError, match="LOSS_WEIGHTS"):
        _heads(_cfg(*PRM2, "MODEL.PRM.POSITIVE_FRACTIONS", "[0.5]"))
