"""RGA over IoU-uniform heads (both towers selected) and PRM over IoU-uniform
(``ParallelIoUUniformROIHeads``): per-tower losses, logit ensemble, TEST_MODULE."""
import torch

from rga_prm.gradient_annealing import rga_parameters
from tests.conftest import config_path
from tests.model_checks import build_model_from_config
from tests.rga_prm.test_parallel_roi_heads import _cfg, _heads, _infer, _inputs, _train

SHAPES = config_path("shapes", "faster_rcnn_R_18_FPN.yaml")


def _ids(*modules):
    return {id(p) for m in modules for p in m.parameters()}


def test_rga_selects_both_iou_uniform_towers_in_every_stage():
    for name in ("IoUUniformROIHeads", "IoUUniformCascadeROIHeads", "ParallelIoUUniformROIHeads"):
        opts = ["MODEL.ROI_HEADS.NAME", name]
        if "Cascade" in name:
            opts += ["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"]
        _, model = build_model_from_config(SHAPES, *opts)
        rh = model.roi_heads
        selected = {id(p) for p in rga_parameters(model)}
        assert selected == _ids(rh.box_head, rh.box_predictor, rh.reg_iou_head), name
        assert _ids(rh.reg_iou_head) and _ids(rh.box_head)
        assert not selected & _ids(model.backbone, model.proposal_generator)


PRM_IOU = ["MODEL.ROI_HEADS.NAME", "ParallelIoUUniformROIHeads",
           "MODEL.PRM.BATCH_SIZE_PER_IMAGE", "128"]


def test_parallel_iou_uniform_losses_ensemble_and_test_module():
    heads = _heads(_cfg(*PRM_IOU))
    features, proposals, targets = _inputs()
    losses, logged = _train(heads, features, proposals, targets)
    assert set(losses) == {"loss_cls_m0", "loss_cls_m1", "loss_box_reg", "loss_iou"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert {"m0/fast_rcnn/bg_cls_accuracy", "m1/fast_rcnn/fg_cls_accuracy",
            "roi_head/num_fg_samples_m1"} <= set(logged)

    heads.eval()
    feats = [features[f] for f in heads.box_in_features]
    boxes = [p.proposal_boxes for p in proposals]
    pooled = heads.box_pooler(feats, boxes)
    with torch.no_grad():
        per_module = [heads.module_logits(k, pooled) for k in (0, 1)]
        torch.testing.assert_close(heads.classify(feats, boxes),
                                   (per_module[0] + per_module[1]) / 2)
        heads.prm.test_module = 1
        assert torch.equal(heads.classify(feats, boxes), per_module[1])
    assert len(_infer(heads, features, proposals)) == 2
