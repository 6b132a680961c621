"""tools/visualize_padet_augmentation.py on the tiny shapes split."""
import json

import numpy as np
from detectron2.data import DatasetCatalog

from tests.conftest import config_path, load_tool


def test_augmentation_diagnostic_writes_png_and_json(tiny_shapes, tmp_path):
    train, _ = tiny_shapes
    stats = load_tool("visualize_padet_augmentation").main([
        "--config-file", config_path("padet", "padet_vgg16_384.yaml"), "--dataset", train,
        "--num-images", "6", "--num-shown", "3", "--output-dir", str(tmp_path),
        "MODEL.PADET.INPUT_SIZE", "160",
    ])
    assert (tmp_path / "augmentation.png").stat().st_size > 1000
    assert json.loads((tmp_path / "augmentation.json").read_text()) == stats
    dicts = DatasetCatalog.get(train)[:6]
    assert stats["num_images"] == 6
    assert stats["boxes_per_image_before"] == np.mean([len(d["annotations"]) for d in dicts])
    assert 0 < stats["boxes_per_image_after"] <= stats["boxes_per_image_before"]
    assert stats["short_side_over_input_after"]["q10"] >= 0.01  # MIN_BOX_SIZE
