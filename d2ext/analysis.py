"""Small measurements the methods' analysis modules share."""
import numpy as np
import torch

from detectron2.structures import BoxMode, pairwise_iou

__all__ = ["gt_boxes_and_classes", "pearson_r", "class_share_of_variance", "best_same_class_iou",
           "best_same_class_match"]


def gt_boxes_and_classes(record):
    """``(boxes, classes)`` of a dataset dict's non-crowd annotations: a float32 (G, 4) XYXY
    tensor in the record's image frame and a (G,) long tensor."""
    annos = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor([a["category_id"] for a in annos], dtype=torch.long))


def pearson_r(a, b):
    """Pearson correlation of two 1-D arrays or tensors; None when it is undefined (fewer than
    two values, or a constant one)."""
    a, b = (np.asarray(x.cpu() if torch.is_tensor(x) else x, dtype=np.float64) for x in (a, b))
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def class_share_of_variance(features, labels):
    """The share of the variance of ``features`` (n, d) that lies between the classes of
    ``labels`` (n,): sum_c n_c |mean_c - mean|^2 / sum_i |f_i - mean|^2 (the correlation ratio
    eta^2 over all d dimensions). 1 when every feature equals its class mean, near 0 when the
    features do not depend on the class; None (undefined) for fewer than two classes or
    constant features.
    """
    labels = torch.as_tensor(labels)
    if len(labels.unique()) < 2:
        return None
    f = torch.as_tensor(features, dtype=torch.float64).reshape(len(labels), -1)
    mean = f.mean(0)
    total = ((f - mean) ** 2).sum()
    if total == 0:
        return None
    classes, index, counts = labels.unique(return_inverse=True, return_counts=True)
    class_means = torch.zeros(len(classes), f.shape[1], dtype=f.dtype).index_add_(0, index, f)
    class_means /= counts[:, None]
    between = (counts[:, None] * (class_means - mean) ** 2).sum()
    return float(between / total)


def best_same_class_iou(pred_boxes, pred_classes, gt_boxes, gt_classes):
    """(D,) IoU of every detection with its best GT box of the same class (0 if none).

    Args:
        pred_boxes, gt_boxes (Boxes): D detections and G GT boxes of one image.
        pred_classes, gt_classes (Tensor): their classes.
    """
    return best_same_class_match(pred_boxes, pred_classes, gt_boxes, gt_classes)[0]


def best_same_class_match(pred_boxes, pred_classes, gt_boxes, gt_classes):
    """``(iou, index)``: (D,) IoU of every detection with its best GT box of the same class and
    (D,) that GT's index; IoU 0 and index -1 where no GT of its class overlaps it (arguments as
    :func:`best_same_class_iou`)."""
    if len(gt_boxes) == 0:
        iou = torch.zeros(len(pred_boxes), device=pred_boxes.device)
        return iou, torch.full_like(iou, -1, dtype=torch.long)
    iou = pairwise_iou(pred_boxes, gt_boxes)
    iou[pred_classes[:, None] != gt_classes[None, :].to(pred_classes.device)] = 0
    best, index = iou.max(dim=1)
    return best, torch.where(best > 0, index, torch.full_like(index, -1))
