"""The one file writer: every file the project writes goes through ``atomic_write``.

A write goes to a temporary file in the target's own folder (so the final rename never
crosses a file system), is flushed and fsync'ed, then moved over the target with
``os.replace``. A reader sees the old file or the new one, never half of one; a write that
fails, or is interrupted by an exception, leaves no temporary file behind. A process killed
mid-write can leave a ``.tmp-*.part`` file, which ``remove_stale_parts`` clears.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PART_PREFIX = ".tmp-"
PART_SUFFIX = ".part"


def atomic_write(path, data: bytes | str | Callable) -> Path:
    """Write ``data`` (bytes, text, or a function given the open binary file) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PART_PREFIX, suffix=PART_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_json(path, obj, indent: int | None = 2) -> Path:
    """JSON state, atomically; a value JSON cannot hold is an error, never silently a string."""
    return atomic_write(path, json.dumps(obj, indent=indent, allow_nan=True) + "\n")


def write_text(path, text: str) -> Path:
    return atomic_write(path, text)


def write_parquet(path, frame) -> Path:
    """A pandas frame as parquet (pyarrow), atomically."""
    return atomic_write(path, lambda f: frame.to_parquet(f))


def save_figure(path, fig, **kwargs) -> Path:
    """A matplotlib figure, atomically; the format follows the path's suffix."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs))


def remove_stale_parts(folder, older_than: float = 0.0) -> int:
    """Delete temporary files that killed writers left under ``folder`` (those last modified
    more than ``older_than`` seconds ago); returns how many."""
    import time

    n, now = 0, time.time()
    for p in Path(folder).rglob(f"{PART_PREFIX}*{PART_SUFFIX}"):
        if p.is_file() and not p.is_symlink() and now - p.stat().st_mtime >= older_than:
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n
