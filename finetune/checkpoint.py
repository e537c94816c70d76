"""Atomic swaps of whole checkpoint folders.

The best model is a Hub-format folder written by ``save_pretrained`` into a temporary
folder next to it, then swapped in by renames: a failed write leaves the previous best
folder untouched and loadable. This module writes no file itself; single files (the
training state in ``state.py``, JSON reports) go through ``kronos_alpha.files.atomic_write``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kronos_alpha.model.hub import CONFIG_NAME, WEIGHTS_NAME, CheckpointError


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written; the previous one is still in place."""


def recover(dest) -> None:
    """Finish a swap cut short between its two renames (``dest`` missing, ``dest.old`` present)."""
    dest = Path(dest)
    old = dest.with_name(dest.name + ".old")
    if old.exists():
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, dest)


def save_pretrained_atomic(module, dest) -> Path:
    """``module.save_pretrained(dest)`` that either fully succeeds or leaves ``dest`` as it was."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest)
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):  # left by a killed write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    old = dest.with_name(dest.name + ".old")
    try:
        module.save_pretrained(tmp)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (tmp / name).is_file():
                raise OSError(f"save_pretrained wrote no {name}")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        recover(dest)
        raise CheckpointWriteError(
            f"could not write checkpoint {str(dest)!r}: {exc}; the previous one is kept"
        ) from exc
    shutil.rmtree(old, ignore_errors=True)
    return dest
