"""On-disk cache of sampled forecast paths, one file per window.

The key (built by the forecaster) hashes the weights, the generation settings and the
window's content, so a re-run reuses forecasts and any change recomputes them.

Safety: entries are written by the project's one atomic writer (``kronos_alpha.files``), so
concurrent writers and interrupted runs never leave a half-written entry under a real name. Each file carries a SHA-256 of
its payload: a torn or corrupt entry is detected, reported and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write

MAGIC = b"KAFC1\n"
CACHE_FORMAT = 1


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
        try:
            atomic_write(self.path(key), MAGIC + hashlib.sha256(payload).digest() + payload)
        except OSError as exc:  # read-only file system, permissions, disk full
            self.writable = False
            self._warn_read_only(f"writing failed ({exc})")


# -- keys ---------------------------------------------------------------------------------------
def weights_digest(*modules) -> str:
    """SHA-256 of the modules' state dicts (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for m in modules:
        for name, tensor in sorted(m.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def settings_digest(settings, weights: str, max_context: int, dtype, device: str) -> str:
    """What, besides a window's bars, decides its sampled paths."""
    from kronos_alpha import __version__

    fields = {
        "format": CACHE_FORMAT,
        "engine": __version__,  # a new release may change the numerics
        "weights": weights,
        "sample_count": settings.sample_count,
        "T": settings.T,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "seed": settings.seed,
        "clip": settings.clip,
        "max_context": max_context,
        "dtype": str(dtype),
        "device_type": torch.device(device).type,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def window_key(base: str, bars: np.ndarray, stamp: np.ndarray, future_stamp, seed) -> str:
    h = hashlib.sha256(base.encode())
    for part in (bars, stamp, future_stamp):
        h.update(np.ascontiguousarray(part).tobytes())
    h.update(str(seed).encode())
    return h.hexdigest()
