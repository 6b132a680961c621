"""What the programs in ``tools/`` share: one argument convention, building a model and loading
its weights, and writing a figure with its numbers.

Every program takes ``--config-file``, ``--num-images``, ``--output-dir`` (default
``<OUTPUT_DIR>/diagnostics``, or another folder of ``OUTPUT_DIR`` the program names) and trailing
``KEY VALUE`` config overrides, as ``train_net.py``.
The programs load configs with ``train_net.load_config`` (every method's node); this module
knows no method.
"""
import argparse
import json
import os

import torch

from detectron2.modeling import build_model

from .atomic import write_text_atomically

from .checkpoint import ProjectCheckpointer

__all__ = ["add_tool_arguments", "tool_parser", "output_dir_of", "build_model_with_weights",
           "load_trained_model", "pyplot", "write_figure_and_json"]


def add_tool_arguments(parser, *, num_images=100, config_required=True,
                       output_subdir="diagnostics"):
    """Add the options every program shares to ``parser`` (or a sub-command's parser); a
    program whose figures go elsewhere than ``<OUTPUT_DIR>/diagnostics`` names its folder as
    ``output_subdir``, and passes it to :func:`output_dir_of` too."""
    parser.add_argument("--config-file", required=config_required, default="",
                        metavar="FILE", help="path to the config file")
    parser.add_argument("--num-images", type=int, default=num_images,
                        help="images of the dataset to use")
    parser.add_argument("--output-dir", default=None,
                        help="where NAME.png and NAME.json go "
                             f"(default: <OUTPUT_DIR>/{output_subdir})")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config overrides, as in train_net.py")
    return parser


def tool_parser(doc, commands):
    """``(parser, {command: sub-parser})``: a program whose first argument names one of
    ``commands`` (``args.name``). ``commands`` maps each name to the keyword arguments of its
    shared options (:func:`add_tool_arguments`), or to None for a command that reads no config
    (only ``--output-dir``). Add a command's own options to its sub-parser."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="name", required=True, metavar="{" + ",".join(commands) + "}")
    parsers = {}
    for name, kwargs in commands.items():
        parsers[name] = sub.add_parser(name)
        if kwargs is None:
            parsers[name].add_argument("--output-dir", default=None)
        else:
            add_tool_arguments(parsers[name], **kwargs)
    return parser, parsers


def output_dir_of(args, cfg, output_subdir="diagnostics"):
    """``--output-dir``, or ``<OUTPUT_DIR>/<output_subdir>`` of the config."""
    return args.output_dir or os.path.join(cfg.OUTPUT_DIR, output_subdir)


def build_model_with_weights(cfg, *, weights=None, seed=None, init_from=None):
    """``build_model(cfg)``; seeded with ``torch.manual_seed(seed)`` when ``seed`` is given;
    with ``init_from`` (a model) every parameter and buffer of the same name and shape is copied
    from it (a method and its baseline start equal); with ``weights`` (a checkpoint file) the
    model loads it. A missing weights file raises FileNotFoundError naming it."""
    if weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {weights}")
    if seed is not None:
        torch.manual_seed(seed)
    model = build_model(cfg)
    if init_from is not None:
        own = model.state_dict()
        shared = {k: v for k, v in init_from.state_dict().items()
                  if k in own and own[k].shape == v.shape}
        model.load_state_dict(shared, strict=False)
    if weights:
        ProjectCheckpointer(model).load(weights)
    return model


def load_trained_model(cfg):
    """The model of ``cfg`` with its trained ``MODEL.WEIGHTS``, in eval mode; a missing or
    unset ``MODEL.WEIGHTS`` raises FileNotFoundError naming the key."""
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise FileNotFoundError(f"this program needs a trained checkpoint: MODEL.WEIGHTS "
                                f"<file.pth>, got {cfg.MODEL.WEIGHTS!r}")
    model = build_model_with_weights(cfg, weights=cfg.MODEL.WEIGHTS)
    model.eval()
    return model


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure_and_json(fig, numbers, output_dir, name, *, dpi=120, unprinted=()):
    """Write ``fig`` to ``<output_dir>/<name>.png`` and ``numbers`` to ``<name>.json``, close
    the figure, print the numbers (but the keys in ``unprinted``, e.g. long series) and the
    paths; returns the ``(png, json)`` paths."""
    os.makedirs(output_dir, exist_ok=True)
    png, js = (os.path.join(output_dir, f"{name}.{ext}") for ext in ("png", "json"))
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    write_text_atomically(js, json.dumps(numbers, indent=1))
    print(json.dumps({k: v for k, v in numbers.items() if k not in unprinted}, indent=1))
    print(f"wrote {png} and {js}")
    return png, js
