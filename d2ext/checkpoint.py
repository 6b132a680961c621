"""The project's checkpointer: detectron2's ``DetectionCheckpointer`` that never executes code
while reading weights, names the file when weights are unreadable or belong to another model,
and writes checkpoints so that a crash never leaves a half-written one behind.

- Reading. ``.pkl`` files (detectron2 and Detectron/Caffe2 model zoos) are unpickled by an
  unpickler that admits only the containers, scalars and numpy arrays such files hold; every
  other file goes through ``torch.load(..., weights_only=True)`` (PyTorch's "weights only"
  loader, https://pytorch.org/docs/stable/generated/torch.load.html). Python's pickle
  documentation explains why this matters ("Restricting Globals",
  https://docs.python.org/3/library/pickle.html#restricting-globals): unpickling an arbitrary
  file can run arbitrary code.
- Wrong weights. After loading, fewer than ``min_loaded_fraction`` of the model's parameter
  tensors loaded raises :class:`WeightsFileError` naming the file and the fraction.
- Writing. ``save`` and ``last_checkpoint`` go to a temporary file in the same directory,
  which ``os.replace`` renames over the target; ``resume_or_load(resume=True)`` skips a
  checkpoint that does not load (truncated, corrupt) for the newest one that does.
"""
import logging
import os
import pickle
import re

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .atomic import write_atomically, write_text_atomically

__all__ = ["ProjectCheckpointer", "WeightsFileError", "MIN_LOADED_FRACTION", "load_torch_weights"]

logger = logging.getLogger(__name__)

# A trained model of the config loads (nearly) all its parameters; an ImageNet backbone or the
# weights of another architecture load far fewer.
MIN_LOADED_FRACTION = 0.9

# What detectron2 and Detectron model-zoo .pkl files reference: numpy arrays and scalars (numpy 1
# and numpy 2 module names), OrderedDict, and the bytes of protocol-2 pickles written by Python 3.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    *((builtins, name) for builtins in ("builtins", "__builtin__")  # Python 3 and 2 spellings
      for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex",
                   "bool", "str", "bytes", "bytearray")),
}
_RUN_NUMBER = re.compile(r"model_(\d+)\.pth$")


class WeightsFileError(RuntimeError):
    """A weights file that cannot, or must not, be loaded into the model."""


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickles what detectron2 and Detectron model-zoo ``.pkl`` files hold, nothing else."""

    def __init__(self, file, filename):
        super().__init__(file, encoding="latin1")  # Python 2 pickles, as detectron2 reads them
        self.filename = filename

    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise WeightsFileError(f"refusing to load {self.filename}: it references "
                                   f"{module}.{name}, which a weights file never needs")
        return super().find_class(module, name)


def _what_is_wrong(filename, expected, error):
    """Why ``filename`` is not ``expected`` (e.g. "a PyTorch checkpoint"), for an error."""
    with open(filename, "rb") as f:
        head = f.read(512)
    try:
        text = all(c.isprintable() or c.isspace() for c in head.decode("utf-8"))
    except UnicodeDecodeError:
        text = False
    what = ("it is empty" if not head else f"it is a text file, not {expected}" if text
            else f"it is not {expected}, or it is truncated or corrupt")
    detail = f": {str(error).splitlines()[0]}" if str(error) else ""
    return f"cannot load {filename}: {what} ({type(error).__name__}{detail})"


def _unpickle_weights(filename):
    try:
        with open(filename, "rb") as f:
            return _WeightsUnpickler(f, filename).load()
    except WeightsFileError:
        raise
    except Exception as e:  # any decoding failure means the file is not a pickle of weights
        raise WeightsFileError(_what_is_wrong(filename, "a pickle of weights", e)) from e


def load_torch_weights(filename):
    """``torch.load(filename, weights_only=True)`` on CPU; a file that holds code, or is no
    PyTorch checkpoint, raises :class:`WeightsFileError` naming it and why."""
    try:
        return torch.load(filename, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        if refused:
            raise WeightsFileError(f"refusing to load {filename}: it references "
                                   f"{refused.group(1)}, which a weights file never needs") from e
        raise WeightsFileError(f"refusing to load {filename}: torch.load(weights_only=True) "
                               f"rejected it ({e})") from e
    except Exception as e:  # torch raises KeyError, EOFError, RuntimeError... for bad files
        raise WeightsFileError(_what_is_wrong(filename, "a PyTorch checkpoint", e)) from e


class ProjectCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` (same arguments and formats) with safe, checked loading and
    atomic saving (module docstring).

    ``min_loaded_fraction``: the least fraction of the model's parameter tensors that a
    :meth:`load` must fill, else :class:`WeightsFileError`; the default expects a trained
    model of the same config. Pass 0 where partial weights are legitimate: training from
    ``MODEL.WEIGHTS`` initialises the backbone only (ImageNet weights).
    """

    def __init__(self, model, save_dir="", *, min_loaded_fraction=MIN_LOADED_FRACTION,
                 **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.min_loaded_fraction = min_loaded_fraction
        self._loading = None  # the file being loaded, for _load_model's error

    @classmethod
    def replace_in(cls, trainer, **kwargs):
        """Give ``trainer`` (a detectron2 ``DefaultTrainer``, which builds a
        ``DetectionCheckpointer``) a checkpointer of this class with the same model, directory
        and checkpointables, also in its hooks that hold the old one (``PeriodicCheckpointer``).
        """
        old = trainer.checkpointer
        new = cls(old.model, old.save_dir, save_to_disk=old.save_to_disk, **kwargs)
        new.checkpointables.update(old.checkpointables)
        for hook in trainer._hooks:
            if getattr(hook, "checkpointer", None) is old:
                hook.checkpointer = new
        trainer.checkpointer = new
        return new

    def _load_file(self, filename):
        """detectron2's formats (``DetectionCheckpointer._load_file``), read without running
        code: ``.pkl`` model-zoo files, pycls ``.pyth`` files, and ``torch.save`` files."""
        self._loading = filename
        if filename.endswith(".pkl"):
            data = _unpickle_weights(filename)
            if not isinstance(data, dict):
                raise WeightsFileError(f"cannot load {filename}: it holds a "
                                       f"{type(data).__name__}, not a dict of weights")
            if "model" in data and "__author__" in data:  # detectron2 model zoo
                self.logger.info(f"Reading a file from '{data['__author__']}'")
                return data
            data = data.get("blobs", data)  # Detectron/Caffe2; ImageNet models have no "blobs"
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        loaded = load_torch_weights(filename)
        if not isinstance(loaded, dict):
            raise WeightsFileError(f"cannot load {filename}: it holds a "
                                   f"{type(loaded).__name__}, not a dict of weights")
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in loaded:
                raise WeightsFileError(f"cannot load {filename}: pycls checkpoints (.pyth) "
                                       "hold 'model_state'")
            model_state = {k: v for k, v in loaded["model_state"].items()
                           if not k.endswith("num_batches_tracked")}
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        return loaded if "model" in loaded else {"model": loaded}

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        params = {name for name, _ in self.model.named_parameters()}
        if params and self.min_loaded_fraction > 0:
            missing = {*incompatible.missing_keys, *(k for k, *_ in incompatible.incorrect_shapes)}
            loaded = len(params - missing)
            if loaded < self.min_loaded_fraction * len(params):
                raise WeightsFileError(
                    f"{self._loading} filled {loaded} of the model's {len(params)} parameter "
                    f"tensors ({loaded / len(params):.0%}; at least "
                    f"{self.min_loaded_fraction:.0%} expected): are these the weights of "
                    "another architecture or config? To load them anyway lower "
                    "min_loaded_fraction (train_net.py --min-loaded-fraction)")
        return incompatible

    def save(self, name, **kwargs):
        """``Checkpointer.save``, written atomically: ``<name>.pth`` is complete or untouched."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        write_atomically(save_file, "wb", lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        write_text_atomically(os.path.join(self.save_dir, "last_checkpoint"),
                              last_filename_basename)

    def resume_or_load(self, path, *, resume=True):
        """``Checkpointer.resume_or_load``; a resume whose ``last_checkpoint`` does not load
        (missing, truncated, corrupt) warns and resumes from the newest checkpoint of
        ``save_dir`` that does (``model_final.pth``, then ``model_<iter>.pth`` by iteration),
        and ``last_checkpoint`` is rewritten to name it."""
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        last = self.get_checkpoint_file()
        if self._loads(last):
            return self.load(last)
        for candidate in self._checkpoints_newest_first():
            if candidate != last and self._loads(candidate):
                logger.warning(f"Resuming from {candidate} instead of {last}, which does not "
                               "load (see the warning above)")
                if self.save_to_disk:
                    self.tag_last_checkpoint(os.path.basename(candidate))
                return self.load(candidate)
        raise WeightsFileError(f"cannot resume from {self.save_dir}: last_checkpoint names "
                               f"{last}, which does not load, and no other checkpoint loads")

    def _loads(self, filename):
        if not os.path.isfile(filename):
            logger.warning(f"Checkpoint {filename} is missing")
            return False
        try:
            load_torch_weights(filename)
        except WeightsFileError as e:
            logger.warning(f"Checkpoint {filename} does not load: {e}")
            return False
        return True

    def _checkpoints_newest_first(self):
        order = {}
        for file in self.get_all_checkpoint_files():
            name = os.path.basename(file)
            run = _RUN_NUMBER.match(name)
            if name == "model_final.pth":
                order[file] = float("inf")
            elif run:
                order[file] = int(run.group(1))
        return sorted(order, key=order.get, reverse=True)
