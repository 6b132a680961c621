"""Log-average miss rate MR^-2 on hand-computed curves (Caltech protocol)."""
import math

import numpy as np
import pytest

from d2ext.evaluation import MR_REFERENCE_FPPI, log_average_miss_rate


def test_reference_points_are_nine_log_spaced_fppi_from_1e_minus_2_to_1():
    assert len(MR_REFERENCE_FPPI) == 9
    assert np.allclose(np.log10(MR_REFERENCE_FPPI), np.arange(-2.0, 0.01, 0.25))


def test_constructed_curve_matches_hand_computation():
    # 8 images, 5 ground truths; by score: TP TP FP TP FP FP TP  ->  (FPPI, miss rate):
    # (0, .8) (0, .6) (.125, .6) (.125, .4) (.25, .4) (.375, .4) (.375, .2)
    # sampled at the last point with FPPI <= ref:  refs 0.01..0.1 (5) -> .6 ;
    # 0.178 -> .4 ; 0.316 -> .4 ; 0.562 -> .2 ; 1.0 -> .2
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    is_tp = [True, True, False, True, False, False, True]
    order = [4, 0, 6, 2, 1, 5, 3]  # given out of order: the function sorts by score
    mr = log_average_miss_rate(np.take(scores, order), np.take(is_tp, order), 5, 8)
    expected = math.exp((5 * math.log(0.6) + 2 * math.log(0.4) + 2 * math.log(0.2)) / 9)
    assert mr == pytest.approx(expected, rel=1e-12)
    assert mr == pytest.approx(0.42953, abs=1e-5)


def test_points_above_a_reference_are_not_used_for_it():
    # one image: FP first (FPPI 1 at once), then the TP: at every reference below 1 the
    # miss rate is the start of the curve (1.0); at FPPI 1 the TP is reached -> miss 0 -> 1e-10
    mr = log_average_miss_rate([0.9, 0.8], [False, True], num_gt=1, num_images=1)
    assert mr == pytest.approx(math.exp((8 * math.log(1.0) + math.log(1e-10)) / 9))


def test_perfect_detection_is_zero_and_no_detection_is_one():
    perfect = log_average_miss_rate([0.9, 0.8, 0.7], [True] * 3, num_gt=3, num_images=2)
    assert perfect == pytest.approx(1e-10) and perfect < 1e-9
    assert log_average_miss_rate([], [], num_gt=3, num_images=2) == 1.0
    only_false = log_average_miss_rate([0.9, 0.8], [False, False], num_gt=3, num_images=2)
    assert only_false == 1.0


def test_no_ground_truth_gives_nan_and_bad_input_fails_clearly():
    assert math.isnan(log_average_miss_rate([0.5], [False], num_gt=0, num_images=1))
    with pytest.raises(ValueError, match="differ in length"):
        log_average_miss_rate([0.5, 0.4], [True], num_gt=1, num_images=1)
    with pytest.raises(ValueError, match="at least one image"):
        log_average_miss_rate([0.5], [True], num_gt=1, num_images=0)
