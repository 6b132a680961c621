"""Config of R-CNN Gradient Annealing (``MODEL.RGA``) and Parallel R-CNN Modules (``MODEL.PRM``)."""
from detectron2.config import CfgNode as CN

from iou_uniform.config import add_iou_uniform_config

__all__ = ["add_rga_prm_config"]


def add_rga_prm_config(cfg):
    """Add the method-owned nodes ``MODEL.RGA`` and ``MODEL.PRM``; keys carry paper symbols.

    Also adds ``MODEL.IOU_UNIFORM``, which ``ParallelIoUUniformROIHeads`` (PRM on IoU-uniform
    R-CNN) reads.
    """
    add_iou_uniform_config(cfg)
    cfg.MODEL.RGA = CN()
    # RGA on/off: Trainer.build_hooks adds GradientAnnealingHook (Eq. 1) when True
    cfg.MODEL.RGA.ENABLED = False
    # lambda_0 of Eq. 1, the initial magnification of the R-CNN parameter gradients (>= 1)
    cfg.MODEL.RGA.LAMBDA0 = 7.0
    # Eq. 1 annealing lambda_t = lambda_0 - (lambda_0 - 1) t / T, T = SOLVER.MAX_ITER;
    # False keeps lambda_t = lambda_0 (Table 4 "no anneal" row)
    cfg.MODEL.RGA.ANNEAL = True

    cfg.MODEL.PRM = CN()
    # Sec. 3.2: one R-CNN module per positive fraction pos/(pos+neg); 1:1 -> 0.5, 1:9 -> 0.1
    cfg.MODEL.PRM.POSITIVE_FRACTIONS = [0.5, 0.1]
    # RoIs each module samples per image ("soft" sampling, Sec. 3.1 example: 512)
    cfg.MODEL.PRM.BATCH_SIZE_PER_IMAGE = 512
    # w_k: weight of module k's loss_cls + loss_box_reg in the summed loss (one per module)
    cfg.MODEL.PRM.LOSS_WEIGHTS = [1.0, 1.0]
    # -1: Sec. 3.2 average ensemble (mean pre-softmax logits, boxes of the highest-fraction
    # module); k >= 0: module k alone, its logits and its boxes (Tables 1 and 5)
    cfg.MODEL.PRM.TEST_MODULE = -1
