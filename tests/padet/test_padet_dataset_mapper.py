"""PADetDatasetMapper (padet/dataset_mapper.py): boxes follow the image content through the SSD
augmentations, crops keep exactly the boxes whose centres are inside, output format."""
import numpy as np
import pytest
import torch
from PIL import Image

from train_net import add_all_configs
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from padet.augmentation import PADetExpand, PADetMinIoURandomCrop
from padet.dataset_mapper import PADetDatasetMapper

# Pure colours (RGB) of the filled boxes; the background is gray and the expand fill dark.
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
BOXES = [
    (10, 10, 50, 40), (60, 15, 110, 70), (120, 5, 150, 45),
    (15, 60, 45, 110), (70, 80, 100, 112), (115, 60, 155, 100),
]
H, W = 120, 160


def _cfg(**padet):
    """Each key set in the node that holds it: INPUT.PADET (augmentation) or MODEL.PADET."""
    cfg = get_cfg()
    add_all_configs(cfg)
    cfg.MODEL.PIXEL_MEAN = [40.0, 40.0, 40.0]
    for key, value in padet.items():
        setattr(cfg.INPUT.PADET if key in cfg.INPUT.PADET else cfg.MODEL.PADET, key, value)
    return cfg


@pytest.fixture(scope="module")
def colored_dict(tmp_path_factory):
    """One image with six non-overlapping boxes, each filled with its own pure colour."""
    img = np.full((H, W, 3), 128, np.uint8)
    for (x0, y0, x1, y1), color in zip(BOXES, COLORS):
        img[y0:y1, x0:x1] = color
    path = tmp_path_factory.mktemp("padet_mapper") / "colored.png"
    Image.fromarray(img).save(path)
    annos = [
        {"bbox": [x0, y0, x1 - x0, y1 - y0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": i % 3}
        for i, (x0, y0, x1, y1) in enumerate(BOXES)
    ]
    return {"file_name": str(path), "height": H, "width": W, "image_id": 0, "annotations": annos}


def test_boxes_follow_image_content(colored_dict):
    """Geometric pipeline (expand, crop, flip, resize): every output box covers its colour and
    no pixel of that colour lies outside it."""
    mapper = PADetDatasetMapper(_cfg(PHOTOMETRIC=False, INPUT_SIZE=256), True)
    colors_bgr = np.array([c[::-1] for c in COLORS])  # the mapper returns INPUT.FORMAT (BGR)
    np.random.seed(0)
    seen_flip = seen_crop = 0
    for _ in range(40):
        out = mapper(colored_dict)
        img = out["image"].permute(1, 2, 0).numpy().astype(int)
        inst = out["instances"]
        assert img.shape == (256, 256, 3) and len(inst) > 0
        center_x = {}
        for box in inst.gt_boxes.tensor.numpy():
            x0, y0, x1, y1 = box
            # The colour at the box centre identifies the box; it must be one of the pure colours.
            center = img[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            k = int(np.argmin(np.abs(colors_bgr - center).sum(1)))
            assert np.abs(colors_bgr[k] - center).max() <= 10
            mask = np.abs(img - colors_bgr[k]).max(axis=2) <= 10
            ys, xs = np.nonzero(mask)
            # No pixel of that colour outside the box (2 px margin for interpolation).
            assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2
            assert ys.min() >= y0 - 2 and ys.max() <= y1 + 2
            # The box is covered by its colour: the colour's extent matches the box.
            if min(x1 - x0, y1 - y0) >= 12:
                inner = mask[int(y0) + 3 : int(y1) - 3, int(x0) + 3 : int(x1) - 3]
                assert inner.mean() > 0.95
            center_x[k] = (x0 + x1) / 2
        seen_flip += int(0 in center_x and 1 in center_x and center_x[0] > center_x[1])
        seen_crop += int(len(inst) < len(BOXES))
    assert seen_flip > 0 and seen_crop > 0  # both flips and crops were exercised


def test_crop_keeps_exactly_the_boxes_with_centre_inside(colored_dict):
    crop = PADetMinIoURandomCrop(min_ious=(0.0,))  # no crop or any crop
    resize = T.Resize((300, 300))
    mapper = PADetDatasetMapper(
        True, augmentations=[crop, resize], image_format="BGR", input_size=300, min_box_size=0.0
    )
    boxes = np.array([[x0, y0, x1, y1] for x0, y0, x1, y1 in BOXES], dtype=np.float64)
    image = np.zeros((H, W, 3), np.uint8)
    num_crops = 0
    for seed in range(30):
        np.random.seed(seed)
        tfm = crop.get_transform(image, boxes)
        np.random.seed(seed)
        out = mapper(colored_dict)
        if not isinstance(tfm, T.CropTransform):
            expected = boxes * [300 / W, 300 / H, 300 / W, 300 / H]
        else:
            num_crops += 1
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            inside = (cx > tfm.x0) & (cx < tfm.x0 + tfm.w) & (cy > tfm.y0) & (cy < tfm.y0 + tfm.h)
            expected = boxes[inside] - [tfm.x0, tfm.y0, tfm.x0, tfm.y0]
            expected = np.clip(expected, 0, [tfm.w, tfm.h, tfm.w, tfm.h])
            expected = expected * [300 / tfm.w, 300 / tfm.h, 300 / tfm.w, 300 / tfm.h]
        np.testing.assert_allclose(out["instances"].gt_boxes.tensor.numpy(), expected, atol=1e-3)
    assert num_crops > 10


def test_no_degenerate_boxes_and_boxes_inside(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(path)
    boxes = [[5, 5, 5, 30], [10, 10, 11, 11], [20, 20, 60, 70], [0, 90, 100, 100], [50, 50, 52, 90]]
    annos = [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1} for b in boxes]
    d = {"file_name": str(path), "height": 100, "width": 100, "annotations": annos}
    mapper = PADetDatasetMapper(_cfg(INPUT_SIZE=224), True)
    np.random.seed(0)
    for _ in range(40):
        b = mapper(d)["instances"].gt_boxes.tensor
        sides = torch.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        assert len(b) > 0
        assert (sides >= 0.01 * 224).all()  # MIN_BOX_SIZE x INPUT_SIZE
        assert (b >= 0).all() and (b <= 224).all()
    # The zero-width box never survives, not even un-augmented.
    plain = PADetDatasetMapper(
        True, augmentations=[T.Resize((200, 200))], image_format="BGR", input_size=200
    )
    assert len(plain(d)["instances"]) == 4


def test_fallback_when_augmentation_loses_every_box(tmp_path):
    """A 2x2 box shrinks below MIN_BOX_SIZE when expanded more than 2x: the sample falls back to
    the plain resize instead of losing its only object."""
    path = tmp_path / "small.png"
    img = np.random.RandomState(0).randint(0, 256, size=(100, 100, 3)).astype(np.uint8)
    Image.fromarray(img).save(path)
    anno = {"bbox": [40, 40, 42, 42], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
    d = {"file_name": str(path), "height": 100, "width": 100, "annotations": [anno]}
    mapper = PADetDatasetMapper(
        True, augmentations=[PADetExpand(4.0, (0, 0, 0), prob=1.0), T.Resize((384, 384))],
        image_format="BGR", input_size=384, min_box_size=0.01,
    )
    plain = PADetDatasetMapper(
        True, augmentations=[T.Resize((384, 384))], image_format="BGR", input_size=384
    )
    plain_out = plain(d)
    fallbacks = 0
    np.random.seed(0)
    for _ in range(20):
        out = mapper(d)
        assert len(out["instances"]) == 1
        if torch.equal(out["image"], plain_out["image"]):
            fallbacks += 1
            plain_boxes = plain_out["instances"].gt_boxes.tensor
            assert torch.allclose(out["instances"].gt_boxes.tensor, plain_boxes)
    assert 0 < fallbacks < 20


def test_deterministic_under_seed(colored_dict):
    mapper = PADetDatasetMapper(_cfg(), True)
    outs = []
    for _ in range(2):
        np.random.seed(123)
        outs.append([mapper(colored_dict) for _ in range(3)])
    for a, b in zip(*outs):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
        assert torch.equal(a["instances"].gt_classes, b["instances"].gt_classes)
    assert not torch.equal(outs[0][0]["image"], outs[0][1]["image"])  # but random across calls


def test_output_format_train_and_test(colored_dict):
    np.random.seed(0)
    out = PADetDatasetMapper(_cfg(), True)(colored_dict)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 384, 384)
    inst = out["instances"]
    assert inst.image_size == (384, 384)
    assert inst.gt_boxes.tensor.dtype == torch.float32 and inst.gt_classes.dtype == torch.int64
    assert set(inst.gt_classes.tolist()) <= {0, 1, 2}
    assert "annotations" not in out and out["height"] == H and out["width"] == W
    assert "annotations" in colored_dict  # the input dict is not modified

    test_out = PADetDatasetMapper(_cfg(INPUT_SIZE=512), False)(colored_dict)
    assert test_out["image"].shape == (3, 512, 512) and "instances" not in test_out
    assert "annotations" not in test_out and (test_out["height"], test_out["width"]) == (H, W)
    # Test mode is a plain resize: the gray background stays gray, each colour in place.
    img = test_out["image"].permute(1, 2, 0).numpy()
    x0, y0, x1, y1 = BOXES[1]
    cy, cx = int((y0 + y1) / 2 * 512 / H), int((x0 + x1) / 2 * 512 / W)
    assert np.array_equal(img[cy, cx], COLORS[1][::-1])
    assert np.array_equal(img[2, 2], [128, 128, 128])


def test_images_without_annotations(colored_dict):
    mapper = PADetDatasetMapper(_cfg(), True)
    no_key = {k: v for k, v in colored_dict.items() if k != "annotations"}
    crowd = [dict(a, iscrowd=1) for a in colored_dict["annotations"]]
    crowd_only = dict(colored_dict, annotations=crowd)
    np.random.seed(0)
    for d in (no_key, dict(colored_dict, annotations=[]), crowd_only):
        for _ in range(5):
            out = mapper(d)
            assert len(out["instances"]) == 0 and out["image"].shape == (3, 384, 384)
            assert out["instances"].gt_boxes.tensor.shape == (0, 4)
            assert out["instances"].gt_classes.shape == (0,)
