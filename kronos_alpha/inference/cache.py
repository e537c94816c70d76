"""On-disk cache of sampled forecast paths, one file per window.

The key (built by the forecaster) hashes the weights, the generation settings and the
window's content, so a re-run reuses forecasts and any change recomputes them.

Safety: an entry is written to a temporary file in the same folder and moved into place
with ``os.replace`` (atomic on POSIX and Windows), so concurrent writers and interrupted
runs never leave a half-written entry under a real name. Each file carries a SHA-256 of
its payload: a torn or corrupt entry is detected, reported and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

MAGIC = b"KAFC1\n"


class CacheError(ValueError):
    """A cache folder that cannot be used as asked."""


class ForecastCache:
    def __init__(self, folder):
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise CacheError(f"cache_dir {str(self.folder)!r} exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cache_dir {str(self.folder)!r} cannot be created: {exc}") from exc
        self.writable = os.access(self.folder, os.W_OK)
        if not self.writable:
            self._warn_read_only("it is not writable")
        self.corrupt = 0

    def _warn_read_only(self, why: str) -> None:
        warnings.warn(
            f"forecast cache {str(self.folder)!r}: {why}; existing entries are read, "
            "new forecasts are computed but not stored",
            stacklevel=3,
        )

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str, shape: tuple) -> np.ndarray | None:
        """The stored array, or None when absent. A corrupt entry counts, warns and reads as absent."""
        p = self.path(key)
        try:
            blob = p.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            warnings.warn(
                f"forecast cache entry {p} is unreadable ({exc}); recomputing", stacklevel=2
            )
            self.corrupt += 1
            return None
        head = len(MAGIC) + 32
        payload = blob[head:]
        ok = (
            blob[: len(MAGIC)] == MAGIC
            and hashlib.sha256(payload).digest() == blob[len(MAGIC) : head]
        )
        if ok:
            try:
                arr = np.load(io.BytesIO(payload), allow_pickle=False)
                ok = arr.shape == tuple(shape)
            except ValueError:
                ok = False
        if not ok:
            warnings.warn(f"forecast cache entry {p} is corrupt; recomputing it", stacklevel=2)
            self.corrupt += 1
            return None
        return arr

    def put(self, key: str, arr: np.ndarray) -> None:
        if not self.writable:
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        payload = buf.getvalue()
        p = self.path(key)
        try:
            p.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
                os.replace(tmp, p)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:  # read-only file system, permissions, disk full
            self.writable = False
            self._warn_read_only(f"writing failed ({exc})")
