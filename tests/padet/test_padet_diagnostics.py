"""padet.diagnostics anchor_balance on a random tiny model and the tiny shapes split."""
import json

from padet.diagnostics import main
from tests.conftest import config_path


def test_anchor_balance_writes_png_and_consistent_json(tiny_shapes, tmp_path):
    out = tmp_path / "diag" / "anchor_balance"
    result = main(["anchor_balance", "--config-file", config_path("shapes", "padet_vgg16_384.yaml"),
                   "--dataset", tiny_shapes[0], "--num-images", "3", "--output", str(out),
                   "MODEL.DEVICE", "cpu"])
    assert (tmp_path / "diag" / "anchor_balance.png").stat().st_size > 0
    assert json.load(open(str(out) + ".json")) == result
    b = result["balance"]
    assert result["num_images"] == 3
    # same anchors and matching: the theta rule only removes negatives, never positives
    assert b["initial"]["pos_per_image"] == b["APM_C"]["pos_per_image"] > 0
    assert b["APM_C"]["neg_per_image"] <= b["initial"]["neg_per_image"]
    assert b["APM_CR"]["neg_per_image"] <= b["APM_R"]["neg_per_image"]
    hist = result["positive_iou_histogram_per_image"]
    # every initial positive is binned (>= 0.5) except forced best anchors below 0.5
    assert sum(hist["initial"]) <= b["initial"]["pos_per_image"] + 1e-9
