"""Writing a file so that a kill at any point leaves the old file or the complete new one,
never a truncated file: checkpoints, ``last_checkpoint``, ``config.yaml`` and the programs'
result JSON all go through :func:`write_atomically`."""
import os
import tempfile

__all__ = ["write_atomically", "write_text_atomically"]


def write_atomically(path, mode, write):
    """``write(f)`` into a temporary file next to ``path`` (opened with ``mode``), flushed to
    disk, then ``os.replace``d onto ``path``; on any error the temporary file is removed."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomically(path, text):
    """:func:`write_atomically` of a text."""
    write_atomically(path, "w", lambda f: f.write(text))
