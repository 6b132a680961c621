"""padet.analysis (anchor_balance, box_regression, feature_separability, promotion_sources,
training_dynamics) and tools/diagnose_padet.py: a random model, the tiny shapes split."""
import json

import pytest
import torch

from train_net import load_config
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from padet.dataset_mapper import PADetDatasetMapper
from d2ext.analysis import class_share_of_variance, pearson_r as _correlation
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.structures import Boxes
from padet.analysis import (
    _gt_instances, anchor_balance, box_regression, feature_separability, promotion_sources)
from tests.conftest import config_path, load_tool

main = load_tool("diagnose_padet").main
CONFIG = config_path("shapes", "padet_vgg16_0.25x_256_flip_2600it.yaml")


def _checkpoint(tmp_path):
    """A seeded untrained model of the shapes PADet config, saved (the command needs one)."""
    model, _, _, _ = _model_and_data(None)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    return str(tmp_path / "model.pth")


def test_anchor_balance_writes_png_and_consistent_json(tiny_shapes, tmp_path):
    out = tmp_path / "diag" / "anchor_balance"
    result = main(["anchor_balance", "--config-file", CONFIG,
                   "--dataset", tiny_shapes[0], "--num-images", "3",
                   "--output-dir", str(tmp_path / "diag"),
                   "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", _checkpoint(tmp_path)])
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


def _model_and_data(tiny_shapes):
    cfg = load_config(CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    dicts = DatasetCatalog.get(tiny_shapes[0])[:3] if tiny_shapes else None
    return model, PADetDatasetMapper(cfg, False), dicts, cfg.MODEL.PADET.INPUT_SIZE


def test_box_regression_counts_the_matched_positives(tiny_shapes, tmp_path):
    model, mapper, dicts, size = _model_and_data(tiny_shapes)
    result = box_regression(model, mapper, dicts, size)
    balance = anchor_balance(model, mapper, dicts, size)["balance"]
    assert [r["level"] for r in result["apm"]] == ["d1", "d2", "d3", "d4", "d5", "d6"]
    # the APM regresses the positives of the initial anchors, the detection module those of
    # the promoted anchors: the same matching as the Figure 1 counts
    initial_positives = 3 * balance["initial"]["pos_per_image"]
    assert sum(r["num_positives"] for r in result["apm"]) == initial_positives
    assert sum(r["num_positives"] for r in result["det"]) == 3 * balance["APM_R"]["pos_per_image"]
    for row in result["apm"] + result["det"]:
        assert all(c is None or -1 <= c <= 1 for c in row["correlation"])

    out = tmp_path / "box_regression"
    written = main(["box_regression", "--config-file", CONFIG, "--dataset", tiny_shapes[0],
                    "--num-images", "2", "--output-dir", str(tmp_path), "MODEL.DEVICE", "cpu",
                    "MODEL.WEIGHTS", _checkpoint(tmp_path)])
    assert (tmp_path / "box_regression.png").stat().st_size > 0
    assert json.load(open(str(out) + ".json")) == written


def test_box_regression_measures_the_predicted_deltas(tiny_shapes):
    model, mapper, dicts, size = _model_and_data(tiny_shapes)
    for conv in model.apm.anchor_deltas:  # the APM now predicts zero deltas everywhere
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    for row in box_regression(model, mapper, dicts, size)["apm"]:
        if row["num_positives"]:
            assert row["smooth_l1"] == row["smooth_l1_zero_prediction"]
            assert row["correlation"] == [None] * 4  # a constant prediction has no correlation
    assert _correlation(torch.arange(5.0), 2 * torch.arange(5.0) + 1) == pytest.approx(1.0)
    assert _correlation(torch.arange(5.0), -torch.arange(5.0)) == pytest.approx(-1.0)


def test_promotion_sources_split_the_detection_positives(tiny_shapes, tmp_path, monkeypatch):
    model, mapper, dicts, size = _model_and_data(tiny_shapes)
    result = promotion_sources(model, mapper, dicts, size)
    balance = anchor_balance(model, mapper, dicts, size)["balance"]
    rows = result["by_size"]
    assert list(rows) == ["small", "medium", "large", "all"]
    assert rows["all"]["num_gts"] == sum(rows[s]["num_gts"] for s in ("small", "medium", "large"))
    # the same positives as Figure 1's APM_R / initial counts, split by GT size
    every = rows["all"]
    assert every["det_positives_per_gt"] * every["num_gts"] == pytest.approx(
        3 * balance["APM_R"]["pos_per_image"])
    assert every["apm_positives_per_gt"] * every["num_gts"] == pytest.approx(
        3 * balance["initial"]["pos_per_image"])
    assert sum(every["det_positive_sources"].values()) == pytest.approx(1.0)
    assert every["det_positives_promoted"] == 1.0  # APM_PROMOTE_THRESH 0: every anchor
    # nothing promoted: the detection module matches the APM's own anchors, so each of its
    # positives is an APM positive
    monkeypatch.setattr(model.apm, "promote_thresh", 1.0)
    unpromoted = promotion_sources(model, mapper, dicts, size)["by_size"]["all"]
    assert unpromoted["det_positives_promoted"] == 0.0
    assert unpromoted["det_positive_sources"] == {
        "apm_positive": 1.0, "apm_negative": 0.0, "apm_ignored": 0.0}

    written = main(["promotion_sources", "--config-file", CONFIG, "--dataset", tiny_shapes[0],
                    "--num-images", "3", "--output-dir", str(tmp_path), "MODEL.DEVICE", "cpu",
                    "MODEL.WEIGHTS", _checkpoint(tmp_path)])
    assert written == result
    assert (tmp_path / "promotion_sources.png").stat().st_size > 0


def test_class_share_of_variance():
    # by hand: mean 3, total 9 + 1 + 1 + 9 = 20, class means 1 and 5: between 2 * 4 + 2 * 4 = 16
    assert class_share_of_variance([[0.0], [2.0], [4.0], [6.0]], [0, 0, 1, 1]) == pytest.approx(0.8)
    # two dimensions add up: the second (class-free) doubles the total, not the between part
    assert class_share_of_variance([[0.0, 3.0], [2.0, -3.0], [4.0, 3.0], [6.0, -3.0]],
                                   [0, 0, 1, 1]) == pytest.approx(16 / (20 + 36))
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    noise = torch.randn(400, 8, generator=g)
    assert class_share_of_variance(noise, labels) < 0.05  # features that ignore the class
    one_hot = torch.nn.functional.one_hot(labels).double()
    assert class_share_of_variance(one_hot, labels) == pytest.approx(1.0)
    # undefined: one class, constant features
    assert class_share_of_variance(noise[:5], torch.zeros(5, dtype=torch.long)) is None
    assert class_share_of_variance(torch.ones(4, 2), [0, 1, 0, 1]) is None


def test_feature_separability_on_the_initial_positive_locations(tiny_shapes, tmp_path):
    model, mapper, dicts, size = _model_and_data(tiny_shapes)
    result = feature_separability(model, mapper, dicts, size)
    assert result["levels"] == ["d1", "d2", "d3", "d4", "d5", "d6"]
    rows = result["by_level"]
    # one sample per location with an initial-anchor positive (or left out: mixed classes),
    # counted here with the model's own matching of the initial anchors
    counted = dict.fromkeys(result["levels"], 0)
    with torch.no_grad():
        for image in dicts:
            images = model.preprocess_image([mapper(image)])
            features = model.backbone(images.tensor)
            maps = [features[f] for f in model.apm.in_features]
            anchors = Boxes(model.apm.anchors(maps, images.tensor.shape[-2:]))
            _, labels = model.matcher(_gt_instances(image, size).gt_boxes, anchors)
            start = 0
            for lvl, x, a in zip(result["levels"], maps, model.apm.anchor_generator.num_anchors):
                count = x.shape[-2] * x.shape[-1] * a
                counted[lvl] += int((labels[start:start + count].view(-1, a) == 1).any(1).sum())
                start += count
    assert {lvl: r["num_locations"] + r["mixed_class_locations_left_out"]
            for lvl, r in rows.items()} == counted
    assert sum(counted.values()) > 0
    for r in rows.values():
        for key in ("decoded", "head"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0

    written = main(["feature_separability", "--config-file", CONFIG, "--dataset",
                    tiny_shapes[0], "--num-images", "3", "--output-dir", str(tmp_path),
                    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", _checkpoint(tmp_path)])
    assert written == result
    assert (tmp_path / "feature_separability.png").stat().st_size > 0


def test_training_dynamics_over_saved_checkpoints(tiny_shapes, tmp_path):
    """Two identical checkpoints flip no label; a differently initialised model does."""
    model, _, _, _ = _model_and_data(None)
    paths = [str(tmp_path / f"{name}.pth") for name in ("a", "b", "c")]
    for path in paths[:2]:
        torch.save({"model": model.state_dict()}, path)
    torch.manual_seed(1)
    torch.save({"model": build_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu"])).state_dict(),
                "iteration": 99}, paths[2])
    result = main(["training_dynamics", "--checkpoints", *paths, "--config-file", CONFIG,
                   "--dataset", tiny_shapes[0], "--num-images", "2",
                   "--output-dir", str(tmp_path), "MODEL.DEVICE", "cpu"])
    assert json.load(open(tmp_path / "training_dynamics.json")) == result
    assert (tmp_path / "training_dynamics.png").stat().st_size > 0
    assert set(result) == {"num_images", "levels", "sizes", "checkpoints", "label_flips"}
    assert result["levels"] == ["d1", "d2", "d3", "d4", "d5", "d6"]
    rows = result["checkpoints"]
    assert [r["checkpoint"] for r in rows] == paths
    assert [r["iteration"] for r in rows] == [None, None, 99]
    for row in rows:
        assert set(row) == {"checkpoint", "iteration", "num_positives", "right_class_probability",
                            "by_level", "by_size", "by_level_and_size",
                            "num_positives_by_level_and_size"}
        counts = row["num_positives_by_level_and_size"]
        assert sum(n for level in counts.values() for n in level.values()) == \
            row["num_positives"] > 0
        assert 0 < row["right_class_probability"] < 1
    assert rows[0] == {**rows[1], "checkpoint": paths[0]}
    first, second = result["label_flips"]
    assert (first["from"], first["to"], second["to"]) == tuple(paths)
    assert first["fraction_of_anchors"] == first["fraction_of_positives"] == 0.0
    assert second["fraction_of_anchors"] > 0


def test_training_dynamics_names_a_missing_checkpoint(tmp_path):
    """Config overrides after --checkpoints are taken for checkpoints: the error says so."""
    (tmp_path / "model.pth").touch()
    with pytest.raises(FileNotFoundError, match=r"\['MODEL.DEVICE', 'cpu'\].*config overrides"):
        main(["training_dynamics", "--config-file", CONFIG, "--checkpoints",
              str(tmp_path / "model.pth"), "MODEL.DEVICE", "cpu"])
