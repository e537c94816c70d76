"""On-disk cache of sampled forecast paths, one file per window.

The key (built by the forecaster) hashes the weights, the generation settings and the
window's content, so a re-run reuses forecasts and any change recomputes them.

Safety: entries are written by the project's one atomic writer (``kronos_alpha.files``), so
concurrent writers and interrupted runs never leave a half-written entry under a real name. Each file carries its key and a
SHA-256 of both: a torn, corrupt or misplaced entry is detected, reported and recomputed.
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

from ..files import atomic_write, remove_stale_parts

MAGIC = b"KAFC2\n"  # 2: entries carry their key
CACHE_FORMAT = 3  # 3: volume and amount rescaled on their own (2 cached inf/NaN paths)


class CacheError(ValueError):
    """A cache folder that cannot be used as asked."""


class ForecastCache:
    """Entries ``<folder>/<key[:2]>/<key>.npy``: MAGIC, the key, a SHA-256 of key and payload,
    then the array (``np.save``, no pickle). An entry copied under another key, torn or
    corrupt is detected, counted and recomputed; a shard folder that is a symlink (or leads
    out of the cache folder) is never read or written through."""

    def __init__(self, folder):
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise CacheError(f"cache_dir {str(self.folder)!r} exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cache_dir {str(self.folder)!r} cannot be created: {exc}") from exc
        self.root = self.folder.resolve()
        self.writable = os.access(self.folder, os.W_OK)
        if not self.writable:
            self._warn_read_only("it is not writable")
        self.corrupt = 0
        self.refused = 0
        # temporary files of writers killed mid-write (an hour old: no live writer owns them)
        self.stale_removed = (
            remove_stale_parts(self.folder, older_than=3600) if self.writable else 0
        )

    def _warn_read_only(self, why: str) -> None:
        warnings.warn(
            f"forecast cache {str(self.folder)!r}: {why}; existing entries are read, "
            "new forecasts are computed but not stored",
            stacklevel=3,
        )

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def _confined(self, p: Path) -> bool:
        """The entry's shard folder is a real folder directly inside the cache folder."""
        shard = p.parent
        if shard.is_symlink() or (shard.exists() and shard.resolve().parent != self.root):
            if not self.refused:
                warnings.warn(
                    f"forecast cache shard {shard} is a link or leads outside {self.root}; "
                    "it is neither read nor written",
                    stacklevel=4,
                )
            self.refused += 1
            return False
        return True

    def get(self, key: str, shape: tuple) -> np.ndarray | None:
        """The stored array, or None when absent. A corrupt entry counts, warns and reads as absent."""
        p = self.path(key)
        if not self._confined(p):
            return None
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
        k = key.encode()
        head = len(MAGIC) + len(k) + 32
        payload = blob[head:]
        ok = (
            blob[: len(MAGIC)] == MAGIC
            and blob[len(MAGIC) : len(MAGIC) + len(k)] == k
            and hashlib.sha256(k + payload).digest() == blob[len(MAGIC) + len(k) : head]
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
        p = self.path(key)
        if not self._confined(p):
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        payload, k = buf.getvalue(), key.encode()
        try:
            atomic_write(p, MAGIC + k + hashlib.sha256(k + payload).digest() + payload)
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
