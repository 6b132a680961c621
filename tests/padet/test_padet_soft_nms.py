"""Soft-NMS (padet/soft_nms.py) against a plain-Python transcription of Bodla et al.'s Alg. 1."""
import math

import numpy as np
import pytest
import torch

from padet.soft_nms import batched_soft_nms


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_soft_nms(boxes, scores, idxs, method, nt, sigma, thresh, topk):
    """Greedy soft-NMS, one class at a time, one box at a time (Bodla et al. 2017, Alg. 1)."""
    boxes, scores, idxs = boxes.tolist(), scores.tolist(), idxs.tolist()
    kept = []  # (score, index)
    for c in sorted(set(idxs)):
        members = [i for i in range(len(scores)) if idxs[i] == c and scores[i] >= thresh]
        remaining = {i: scores[i] for i in members}
        while remaining:
            best = max(remaining, key=lambda i: (remaining[i], -i))  # ties: lowest index
            kept.append((remaining.pop(best), best))
            for i in list(remaining):
                ov = _iou(boxes[best], boxes[i])
                if method == "linear":
                    weight = 1.0 - ov if ov > nt else 1.0
                else:
                    weight = math.exp(-(ov * ov) / sigma)
                remaining[i] *= weight
                if remaining[i] < thresh:
                    del remaining[i]
    kept.sort(key=lambda t: (-t[0], t[1]))
    return kept[:topk] if topk > 0 else kept


def _random_problem(seed, n, num_classes, tie_scores=False):
    rng = np.random.RandomState(seed)
    # Clustered boxes so that many pairs overlap strongly.
    centers = rng.uniform(20, 80, size=(4, 2))[rng.randint(0, 4, size=n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(8, 40, size=(n, 2))
    boxes = np.concatenate([centers - wh / 2, centers + wh / 2], axis=1)
    scores = rng.uniform(0, 1, size=n)
    if tie_scores:
        scores = np.round(scores, 1)  # many exactly equal scores
        dup = rng.choice(n, size=n // 4, replace=False)
        boxes[dup[1::2]] = boxes[dup[0::2][: len(dup[1::2])]]  # and identical boxes
    idxs = rng.randint(0, num_classes, size=n)
    return (
        torch.tensor(boxes, dtype=torch.float64),
        torch.tensor(scores, dtype=torch.float64),
        torch.tensor(idxs),
    )


def _sorted_pairs(keep, scores):
    pairs = sorted(zip((-scores).tolist(), keep.tolist()))
    return [(-s, i) for s, i in pairs]


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_on_random_inputs(method, seed):
    tie = seed % 3 == 0
    boxes, scores, idxs = _random_problem(
        seed, n=60 + 7 * seed, num_classes=1 + seed % 4, tie_scores=tie
    )
    thresh = 0.001 if seed % 2 else 0.05
    topk = [-1, 10, 25][seed % 3]
    keep, kept_scores = batched_soft_nms(
        boxes, scores, idxs, method=method, iou_threshold=0.3, sigma=0.5,
        score_threshold=thresh, topk=topk,
    )
    ref = reference_soft_nms(boxes, scores, idxs, method, 0.3, 0.5, thresh, topk)
    ours = _sorted_pairs(keep, kept_scores)
    assert [i for _, i in ours] == [i for _, i in ref]
    # rtol 1e-6: detectron2's Boxes computes the IoU in float32.
    np.testing.assert_allclose([s for s, _ in ours], [s for s, _ in ref], rtol=1e-6, atol=0)
    # Output is ordered by decreasing score.
    assert torch.all(kept_scores[:-1] >= kept_scores[1:])


def test_float32_matches_reference():
    boxes, scores, idxs = _random_problem(123, n=200, num_classes=5)
    keep, kept_scores = batched_soft_nms(boxes.float(), scores.float(), idxs)
    ref = reference_soft_nms(boxes, scores, idxs, "linear", 0.3, 0.5, 0.001, -1)
    assert sorted(keep.tolist()) == sorted(i for _, i in ref)
    ours = dict(zip(keep.tolist(), kept_scores.tolist()))
    np.testing.assert_allclose([ours[i] for _, i in ref], [s for s, _ in ref], rtol=1e-5)


def test_worked_example_linear_nt03():
    """Linear kernel, N_t = 0.3 (PADet paper §3.3, "Inference"): A (0.9), B (0.8) with
    IoU(A, B) = 0.5 -> B becomes 0.4; C with IoU 0.2 to A unchanged."""
    a = [0.0, 0.0, 30.0, 10.0]
    b = [10.0, 0.0, 40.0, 10.0]  # IoU(A, B) = 20 / 40 = 0.5
    c = [-20.0, 0.0, 10.0, 10.0]  # IoU(A, C) = 10 / 50 = 0.2; IoU(B, C) = 0
    boxes = torch.tensor([a, b, c])
    keep, kept = batched_soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3).long())
    assert keep.tolist() == [0, 2, 1]
    assert kept.tolist() == pytest.approx([0.9, 0.7, 0.4])


def test_gaussian_kernel_value():
    boxes = torch.tensor([[0.0, 0.0, 30.0, 10.0], [10.0, 0.0, 40.0, 10.0]])
    keep, kept = batched_soft_nms(
        boxes, torch.tensor([0.9, 0.8]), torch.zeros(2).long(), method="gaussian", sigma=0.5
    )
    assert keep.tolist() == [0, 1]
    assert kept[1].item() == pytest.approx(0.8 * math.exp(-0.25 / 0.5))


def test_classes_do_not_interact():
    box = [0.0, 0.0, 10.0, 10.0]
    boxes = torch.tensor([box, box, box])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, kept = batched_soft_nms(boxes, scores, torch.tensor([0, 1, 0]))
    # Identical boxes: IoU 1 -> linear weight 0 inside class 0; class 1 untouched.
    assert keep.tolist() == [0, 1]
    assert kept.tolist() == pytest.approx([0.9, 0.8])


def test_empty_and_single_box():
    keep, kept = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0).long())
    assert keep.shape == (0,) and kept.shape == (0,) and keep.dtype == torch.long
    one_box = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    keep, kept = batched_soft_nms(one_box, torch.tensor([0.5]), torch.tensor([3]))
    assert keep.tolist() == [0] and kept.tolist() == [0.5]


def test_score_threshold():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [50.0, 50.0, 60.0, 60.0]])
    idxs = torch.zeros(3, dtype=torch.long)
    # Box 2 starts below the threshold; box 1 (IoU 0.9 with box 0) decays to 0.8 * 0.1 = 0.08.
    scores = torch.tensor([0.9, 0.8, 0.05])
    keep, kept = batched_soft_nms(boxes, scores, idxs, score_threshold=0.1)
    assert keep.tolist() == [0]
    keep, kept = batched_soft_nms(boxes, scores, idxs, score_threshold=0.05)
    assert keep.tolist() == [0, 1, 2]
    assert kept.tolist() == pytest.approx([0.9, 0.08, 0.05])
    keep, _ = batched_soft_nms(boxes, scores, idxs, score_threshold=0.95)
    assert keep.numel() == 0


def test_topk_over_all_classes():
    boxes, scores, idxs = _random_problem(7, n=300, num_classes=6)
    full_keep, full_scores = batched_soft_nms(boxes, scores, idxs)
    keep, kept = batched_soft_nms(boxes, scores, idxs, topk=20)
    assert len(keep) == 20
    assert keep.tolist() == full_keep[:20].tolist()
    assert torch.equal(kept, full_scores[:20])


def test_degenerate_boxes_do_not_produce_nan():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 4.0, 4.0]])
    for method in ("linear", "gaussian"):
        scores = torch.tensor([0.9, 0.8, 0.7])
        keep, kept = batched_soft_nms(boxes, scores, torch.zeros(3).long(), method=method)
        assert torch.isfinite(kept).all() and len(keep) == 3


def test_bad_input_raises():
    boxes, scores, idxs = torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="method"):
        batched_soft_nms(boxes, scores, idxs, method="hard")
    with pytest.raises(ValueError, match="boxes"):
        batched_soft_nms(torch.zeros(3, 5), scores, idxs)
    with pytest.raises(ValueError, match="scores and idxs"):
        batched_soft_nms(boxes, torch.zeros(2), idxs)
    with pytest.raises(ValueError, match="sigma"):
        batched_soft_nms(boxes, scores, idxs, method="gaussian", sigma=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    boxes, scores, idxs = _random_problem(3, n=500, num_classes=8)
    keep_cpu, s_cpu = batched_soft_nms(boxes.float(), scores.float(), idxs)
    keep_gpu, s_gpu = batched_soft_nms(boxes.float().cuda(), scores.float().cuda(), idxs.cuda())
    assert keep_gpu.cpu().tolist() == keep_cpu.tolist()
    torch.testing.assert_close(s_gpu.cpu(), s_cpu)
