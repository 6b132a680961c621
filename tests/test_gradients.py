"""Every trainable parameter gets a gradient in every mode (a DDP run with
``find_unused_parameters=False`` fails at its second iteration otherwise, docs/training.md): one
training step with GT boxes for each documented switch of the four methods, on the shapes
configs. Every shipped config in its own mode, paper configs included, gets the same check in
``tests/test_configs.py`` (``assert_trains_and_infers``)."""
import pytest

from tests.conftest import config_path
from tests.model_checks import (
    assert_every_parameter_has_a_gradient, build_model_from_config, make_batch, num_classes_of,
    train_step)

IOU_UNIFORM = config_path("shapes", "iou_uniform_R_18_FPN.yaml")
RGA_PRM = config_path("shapes", "rga_prm_R_18_FPN.yaml")
IOU_UNIFORM_RGA_PRM = config_path("shapes", "iou_uniform_rga_prm_R_18_FPN.yaml")
PADET = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")
IB_RCNN = config_path("shapes", "iou_balanced_faster_rcnn_R_18_FPN.yaml")
IB_RETINANET = config_path("shapes", "iou_balanced_retinanet_R_18_FPN.yaml")

APM_LOSSES = {"loss_apm_cls", "loss_apm_box_reg"}
DET_LOSSES = {"loss_det_cls", "loss_det_box_reg"}
# docs/padet.md, Table 2 (paper §4.1): the rows and the losses each trains
PADET_TABLE2 = [
    (("MODEL.PADET.APM_CLS", "False", "MODEL.PADET.APM_REG", "False",
      "MODEL.PADET.FAM_MODE", "none"), DET_LOSSES),
    (("MODEL.PADET.APM_REG", "False", "MODEL.PADET.FAM_MODE", "none"),
     DET_LOSSES | {"loss_apm_cls"}),
    (("MODEL.PADET.APM_CLS", "False", "MODEL.PADET.FAM_MODE", "none"),
     DET_LOSSES | {"loss_apm_box_reg"}),
    (("MODEL.PADET.FAM_MODE", "none"), DET_LOSSES | APM_LOSSES),
    ((), DET_LOSSES | APM_LOSSES),
]
# docs/padet.md, Table 1: FAM offset sources (with the full APM), plus FAM_DETACH, IOU_BALANCED
PADET_MODES = [("MODEL.PADET.FAM_MODE", m) for m in ("implicit", "loc", "shape", "concat")] + [
    ("MODEL.PADET.FAM_DETACH", "False"), ("MODEL.PADET.IOU_BALANCED", "True")]
# docs/padet.md#experiments: the APM on detached features (also in the single-branch Table 2
# rows and with gradients from the FAM offsets), its loss weight (0: zero gradients, still
# connected), promotion by score, no mining in the APM's L_b
DETACH = ("MODEL.PADET.APM_DETACH", "True")
PADET_EXPERIMENTS = [
    DETACH, (*DETACH, "MODEL.PADET.FAM_DETACH", "False"),
    (*DETACH, "MODEL.PADET.APM_REG", "False", "MODEL.PADET.FAM_MODE", "none"),
    (*DETACH, "MODEL.PADET.APM_CLS", "False", "MODEL.PADET.FAM_MODE", "none"),
    ("MODEL.PADET.APM_LOSS_WEIGHT", "0.25"), (*DETACH, "MODEL.PADET.APM_LOSS_WEIGHT", "0.0"),
    ("MODEL.PADET.APM_PROMOTE_THRESH", "0.5"), ("MODEL.PADET.APM_HNM_RATIO", "0"),
]

# the switches away from each shapes config's own setting (docs/<method>.md)
CASES = [
    (IOU_UNIFORM, ("MODEL.IOU_UNIFORM.GENERATED_SAMPLES", "False")),
    (IOU_UNIFORM, ("MODEL.IOU_UNIFORM.EFO", "False")),  # inference only: training is unchanged
    (IOU_UNIFORM, ("MODEL.ROI_HEADS.NAME", "IoUUniformCascadeROIHeads",
                   "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True")),
    (RGA_PRM, ("MODEL.RGA.ENABLED", "False")),
    (RGA_PRM, ("MODEL.PRM.TEST_MODULE", "1")),
    (RGA_PRM, ("MODEL.PRM.LOSS_WEIGHTS", "[1.0, 0.0]")),  # zero gradients, still connected
    (IOU_UNIFORM_RGA_PRM, ("MODEL.PRM.TEST_MODULE", "0")),
    *[(PADET, opts) for opts in PADET_MODES + PADET_EXPERIMENTS],
    *[(c, (f"MODEL.IOU_BALANCED.{k}_ENABLED", "False"))
      for c in (IB_RCNN, IB_RETINANET) for k in ("CLS", "LOC")],
    (IB_RCNN, ("MODEL.IOU_BALANCED.W_LOC_MODE", "fixed")),
    (IB_RETINANET, ("MODEL.IOU_BALANCED.W_LOC_MODE", "normalized")),
]
# small odd sizes keep the 24 steps fast (PADet pads them to 128 x 128)
SIZES = ((96, 128), (96, 127))


def _id(config, opts):
    return "-".join([config.rsplit("/", 1)[-1][:-5], *(o.rsplit(".", 1)[-1] for o in opts)])


def _train(config, opts):
    cfg, model = build_model_from_config(config, *opts)
    losses = train_step(model, make_batch((3, 2), num_classes_of(cfg), sizes=SIZES))
    assert_every_parameter_has_a_gradient(model, _id(config, opts))
    return losses


@pytest.mark.parametrize("config,opts", CASES, ids=[_id(*c) for c in CASES])
def test_every_parameter_gets_a_gradient(config, opts):
    _train(config, opts)


@pytest.mark.parametrize("opts,expected", PADET_TABLE2, ids=["encdec", "apm_c", "apm_r",
                                                             "apm_cr", "apm_cr_fam"])
def test_padet_table2_row_trains_exactly_its_losses(opts, expected):
    assert set(_train(PADET, opts)) == expected
