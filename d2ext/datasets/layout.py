"""Where the datasets live (``$DETECTRON2_DATASETS``) and the error for missing files."""
import os

__all__ = ["DatasetFilesNotFoundError", "datasets_root", "require_paths"]


def datasets_root():
    """``$DETECTRON2_DATASETS`` (default ``datasets``), as detectron2's builtin datasets."""
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


class DatasetFilesNotFoundError(FileNotFoundError):
    """A registered dataset's files are not where its registration expects them."""


def require_paths(dataset, layout, *paths):
    """Raise ``DatasetFilesNotFoundError`` naming the first missing path and the layout.

    Args:
        dataset: what is being loaded, e.g. "CrowdHuman split 'crowdhuman_val'".
        layout: the expected directory tree (a few lines of text).
        paths: files or directories that must exist.
    """
    for path in paths:
        if not os.path.exists(path):
            raise DatasetFilesNotFoundError(
                f"{dataset}: {path} does not exist. Expected layout (root "
                f"$DETECTRON2_DATASETS={datasets_root()!r}, see docs/datasets.md):\n{layout}"
            )
