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
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PART_PREFIX = ".tmp-"
PART_SUFFIX = ".part"


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


class WriteError(OSError):
    """A file that cannot be written: the message names the target and the reason."""


def atomic_write(path, data: bytes | str | Callable) -> Path:
    """Write ``data`` (bytes, text, or a function given the open binary file) to ``path``.
    An OS failure (a folder in the way, no permission, a full disk) is a ``WriteError``
    naming ``path``, never the temporary file's name."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PART_PREFIX, suffix=PART_SUFFIX)
    except OSError as exc:
        raise WriteError(f"cannot write {str(path)!r}: {_reason(exc)}") from exc
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; a written file gets the umask's mode
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(f"cannot write {str(path)!r}: {_reason(exc)}") from exc
        raise
    return path


def check_target(path, what: str) -> None:
    """Before any work: ``path`` can be a file (not a folder, no file where its folder goes)."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{what} {str(path)!r} is a folder; give a file name")
    blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise WriteError(f"{what} {str(path)!r}: {str(blocked)!r} is a file, not a folder")


def _reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename and PART_PREFIX not in str(exc.filename) else ""
    return f"{exc.strerror or exc}{where}"


def write_json(path, obj, indent: int | None = 2) -> Path:
    """JSON state, atomically; a value JSON cannot hold is an error, never silently a string."""
    return atomic_write(path, json.dumps(obj, indent=indent, allow_nan=True) + "\n")


def plain_json(obj):
    """JSON-ready data: numpy scalars as Python numbers, tuples as lists, timestamps as text,
    mapping keys as strings."""
    import numpy as np
    import pandas as pd

    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, pd.Timestamp):
        return str(obj)
    return obj


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


# -- run folders ----------------------------------------------------------------------------------
RUN_MARKER = ".kronos-alpha-run.json"


class RunFolderError(ValueError):
    """An output folder the project will not use or clear; the message says why."""


def _marker(folder: Path) -> dict | None:
    path = folder / RUN_MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        found = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    return found if isinstance(found, dict) else None


def open_run(folder, kind: str, restart: bool = False) -> Path:
    """The output folder of a ``kind`` run (e.g. "walk-forward"), ready to write or resume.

    A run starts in a new or empty folder, which gets a marker file; so everything in a marked
    folder is the run's. ``restart`` clears a folder only when it carries a marker of the same
    kind: a user's folder, ".", "" or a run of another kind is refused and nothing is deleted.
    """
    if folder is None or not str(folder).strip():
        raise RunFolderError(f"the {kind} output folder is empty ({folder!r}); name a folder")
    folder = Path(folder).expanduser()
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise RunFolderError(f"{kind} output {str(folder)!r} is not a plain folder")
    mark = _marker(folder) if folder.exists() else None
    if mark is not None and mark.get("kind") != kind:
        raise RunFolderError(
            f"{str(folder)!r} holds a kronos-alpha {mark.get('kind')!r} run, not a {kind} run; "
            "use another output folder"
        )
    if folder.exists() and mark is None and any(folder.iterdir()):
        raise RunFolderError(
            f"{str(folder)!r} holds files that no kronos-alpha {kind} run wrote (it has no "
            f"{RUN_MARKER}); a run starts in a new or empty folder, so restart never deletes "
            "anything else"
        )
    if restart and mark is not None:
        for entry in folder.iterdir():
            if entry.name == RUN_MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if mark is None:
        from kronos_alpha import __version__

        write_json(folder / RUN_MARKER, {"kind": kind, "version": __version__})
    return folder
