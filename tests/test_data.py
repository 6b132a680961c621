"""Bad data is named (d2ext/data.py): unreadable images name the file and the dataset in both
mappers and in train_net's loaders, inverted boxes are dropped with a warning, and a data error
during training leaves the checkpoint of the last finished iteration."""
import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import train_net
from d2ext.data import CheckedDatasetMapper, ImageReadError
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode
from padet.dataset_mapper import PADetDatasetMapper
from tests.conftest import config_path, train_net_args

BAD_DATASET = "d2ext_test_truncated"
H, W = 60, 80


def _png(path, truncate=False):
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (H, W, 3), np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2] if truncate else data)
    return str(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(good, truncated) PNG paths; ``BAD_DATASET`` registered with the truncated one."""
    root = tmp_path_factory.mktemp("bad_data")
    good, bad = _png(root / "good.png"), _png(root / "truncated.png", truncate=True)
    if BAD_DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(BAD_DATASET, lambda: [_record(bad)])
    return good, bad


def _record(file_name, annotations=None):
    annos = annotations or [{"bbox": [10, 10, 30, 40], "bbox_mode": BoxMode.XYXY_ABS,
                             "category_id": 0}]
    return {"file_name": file_name, "height": H, "width": W, "image_id": 0,
            "annotations": annos}


def _cfg(*opts):
    cfg = train_net.add_all_configs(get_cfg())
    cfg.merge_from_list(["DATASETS.TRAIN", "('train_a', 'train_b')",
                         "DATASETS.TEST", "('val_a',)", *opts])
    return cfg


MAPPERS = [CheckedDatasetMapper, PADetDatasetMapper]


@pytest.mark.parametrize("mapper_cls", MAPPERS)
@pytest.mark.parametrize("is_train", [True, False])
def test_unreadable_image_names_file_and_datasets(images, mapper_cls, is_train):
    mapper = mapper_cls(_cfg(), is_train)
    names = "train_a, train_b" if is_train else "val_a"
    with pytest.raises(ImageReadError, match=rf"truncated\.png \(dataset: {names}\).*truncated"):
        mapper(_record(images[1]))
    missing = images[0].replace("good", "missing")
    with pytest.raises(ImageReadError, match=r"missing\.png.*FileNotFoundError"):
        mapper(_record(missing))


@pytest.mark.parametrize("mapper_cls", MAPPERS)
@pytest.mark.parametrize("bbox, mode", [
    ([50, 10, 20, 40], BoxMode.XYXY_ABS),  # x2 < x1
    ([20, 40, 30, 10], BoxMode.XYXY_ABS),  # y2 < y1
    ([50, 10, -30, 30], BoxMode.XYWH_ABS),  # negative width
])
def test_inverted_box_is_dropped_with_a_warning(images, caplog, mapper_cls, bbox, mode):
    """Without the check, both mappers would turn the inverted box into a valid one."""
    mapper = mapper_cls(_cfg(), True)
    normal = {"bbox": [10, 10, 30, 40], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1}
    inverted = {"bbox": bbox, "bbox_mode": mode, "category_id": 2}
    record = _record(images[0], [normal, inverted])
    with caplog.at_level(logging.WARNING, logger="d2ext.data"):
        out = mapper(record)
    assert len(out["instances"]) == 1 and out["instances"].gt_classes.tolist() == [1]
    assert mapper.num_inverted_boxes == 1
    assert len(record["annotations"]) == 2  # the dataset's dict is not modified
    assert "dropped 1 inverted box(es)" in caplog.text and "good.png" in caplog.text


def test_valid_boxes_are_unchanged(images):
    """Zero-area boxes are not "inverted": the mapper drops them as empty, as detectron2 does."""
    mapper = CheckedDatasetMapper(_cfg(), True)
    annos = [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
             for b in ([10, 10, 30, 40], [5, 5, 5, 20])]
    out = mapper(_record(images[0], annos))
    assert mapper.num_inverted_boxes == 0 and len(out["instances"]) == 1


def test_train_net_loaders_name_unreadable_images(images, tmp_path):
    cfg = train_net.setup(train_net_args(config_path("shapes", "faster_rcnn_R_18_FPN.yaml"),
                                         tmp_path, "DATASETS.TRAIN", f"('{BAD_DATASET}',)"))
    with pytest.raises(ImageReadError, match=rf"truncated\.png \(dataset: {BAD_DATASET}\)"):
        next(iter(train_net.Trainer.build_train_loader(cfg)))
    with pytest.raises(ImageReadError, match=rf"truncated\.png \(dataset: {BAD_DATASET}\)"):
        next(iter(train_net.Trainer.build_test_loader(cfg, BAD_DATASET)))


class _FailingAtTrainer(train_net.Trainer):
    """Batches of one image: ``good`` images for iterations 0..FAIL_ITER-1, then ``bad``."""

    FAIL_ITER = 3
    files = None

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = CheckedDatasetMapper(cfg, True)
        good, bad = cls.files
        return ([mapper(_record(f))] for f in [good] * cls.FAIL_ITER + [bad])


def test_data_error_saves_checkpoint_of_last_finished_iteration(images, tmp_path):
    _FailingAtTrainer.files = images
    args = train_net_args(config_path("shapes", "faster_rcnn_R_18_FPN.yaml"), tmp_path,
                          "SOLVER.MAX_ITER", "10", "SOLVER.IMS_PER_BATCH", "1",
                          "SOLVER.CHECKPOINT_PERIOD", "100")
    trainer = _FailingAtTrainer(train_net.setup(args))
    trainer.resume_or_load(resume=False)
    with pytest.raises(ImageReadError, match=r"truncated\.png"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_data_error.pth"
    saved = torch.load(tmp_path / "model_data_error.pth", map_location="cpu")
    assert saved["iteration"] == _FailingAtTrainer.FAIL_ITER - 1
    model = train_net.Trainer.build_model(trainer.cfg)
    DetectionCheckpointer(model).load(str(tmp_path / "model_data_error.pth"))
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
