"""Shared fixtures: tiny shapes and primitives datasets and a helper that runs train_net.py
in-process."""
import importlib.util
import json
import os

import pytest

from d2ext.datasets.primitives import register_primitives_split
from d2ext.datasets.shapes import register_shapes_split
from detectron2.engine import default_argument_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TRAIN, TINY_VAL = "shapes_tiny_train", "shapes_tiny_val"
TINY_PRIMITIVES_TRAIN, TINY_PRIMITIVES_VAL = "primitives_tiny_train", "primitives_tiny_val"


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """``shapes_tiny_train`` (12 images) and ``shapes_tiny_val`` (6 images), registered once."""
    root = str(tmp_path_factory.mktemp("shapes"))
    register_shapes_split(TINY_TRAIN, 12, seed=10, root=root)
    register_shapes_split(TINY_VAL, 6, seed=11, root=root)
    return TINY_TRAIN, TINY_VAL


@pytest.fixture(scope="session")
def tiny_primitives(tmp_path_factory):
    """``primitives_tiny_train`` (8 images) and ``primitives_tiny_val`` (4 images), registered
    once; pass them to ``run_train_net`` as ``datasets``."""
    root = str(tmp_path_factory.mktemp("primitives"))
    register_primitives_split(TINY_PRIMITIVES_TRAIN, 8, seed=10, root=root)
    register_primitives_split(TINY_PRIMITIVES_VAL, 4, seed=11, root=root)
    return TINY_PRIMITIVES_TRAIN, TINY_PRIMITIVES_VAL


def load_tool(name):
    """The program ``tools/<name>.py`` as a module (``tools/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_path(*parts):
    return os.path.join(REPO, "configs", *parts)


def train_net_args(config_file, output_dir, *opts, eval_only=False, resume=False,
                   datasets=(TINY_TRAIN, TINY_VAL)):
    """train_net.py's parsed arguments for a run on tiny splits (``datasets``: train and test;
    default the tiny shapes splits), on CPU, no workers."""
    train, test = datasets
    argv = ["--config-file", config_file]
    argv += ["--eval-only"] if eval_only else []
    argv += ["--resume"] if resume else []
    argv += [
        "OUTPUT_DIR", str(output_dir),
        "DATASETS.TRAIN", f"('{train}',)",
        "DATASETS.TEST", f"('{test}',)",
        "DATALOADER.NUM_WORKERS", "0",
        "MODEL.DEVICE", "cpu",
        *opts,
    ]
    return default_argument_parser().parse_args(argv)


def run_train_net(config_file, output_dir, *opts, eval_only=False, resume=False,
                  datasets=(TINY_TRAIN, TINY_VAL)):
    """Run ``train_net.main`` in-process (see ``train_net_args``); returns its results."""
    import train_net

    args = train_net_args(config_file, output_dir, *opts, eval_only=eval_only, resume=resume,
                          datasets=datasets)
    return train_net.main(args)


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]
