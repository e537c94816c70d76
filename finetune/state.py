"""The resumable training state: one safetensors file, no pickle.

Every tensor (module weights, optimizer moments and step counts, torch/CUDA RNG states) is a
safetensors entry under a dotted key (``module.embedding.weight``,
``optimizer.state.0.exp_avg``, ``rng.0.torch``); everything else (counters, best val loss,
scheduler and scaler scalars, optimizer hyper-parameters, NumPy and Python RNG states as
lists) is JSON in the file's metadata, where a tensor appears as ``{"__tensor__": key}``, a
tuple as ``{"__tuple__": [...]}`` and a dict with non-string keys (the optimizer's
parameter ids) as ``{"__items__": [[key, value], ...]}``. Loading reads tensors and JSON
only: nothing in the file can run code.

The file is written by ``kronos_alpha.files.atomic_write`` (temporary file, fsync,
``os.replace``): a kill at any moment leaves the previous state or the new one, whole.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from kronos_alpha.files import atomic_write
from kronos_alpha.model.hub import CheckpointError

from .checkpoint import CheckpointWriteError

FORMAT = "kronos_alpha.training_state/1"
STATE_NAME = "training_state.safetensors"
LEGACY_NAME = "training_state.pt"  # pickled by earlier versions; not loaded
_MARKS = ("__tensor__", "__tuple__", "__items__")


# -- random generators -----------------------------------------------------------------------
def capture_rng() -> dict:
    """This process's generators as tensors and lists (what the state file can hold)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# -- tensors + JSON --------------------------------------------------------------------------
def pack(obj, tensors: dict, path: tuple = ()):
    """``obj`` as JSON-able data; its tensors go into ``tensors`` under dotted keys."""
    where = ".".join(path) or "<root>"
    if isinstance(obj, torch.Tensor):
        key = ".".join(path)
        if key in tensors:
            raise ValueError(f"two tensors at key {key!r}")
        tensors[key] = obj.detach().cpu()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            clash = [k for k in obj if k in _MARKS]
            if clash:
                raise ValueError(f"{where}: key {clash[0]!r} is reserved")
            return {k: pack(v, tensors, (*path, k)) for k, v in obj.items()}
        return {
            "__items__": [
                [pack(k, {}, path), pack(v, tensors, (*path, str(k)))] for k, v in obj.items()
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, (*path, str(i))) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, (*path, str(i))) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{where}: {type(obj).__name__} cannot go into the training state")


def unpack(obj, tensors: dict):
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1 and "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if len(obj) == 1 and "__tuple__" in obj:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        if len(obj) == 1 and "__items__" in obj:
            return {unpack(k, tensors): unpack(v, tensors) for k, v in obj["__items__"]}
        return {k: unpack(v, tensors) for k, v in obj.items()}
    return obj


def _own_storage(tensors: dict) -> dict:
    """safetensors refuses tensors that share memory or view part of a buffer: copy those."""
    seen, out = set(), {}
    for k, t in tensors.items():
        whole = t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        ptr = t.untyped_storage().data_ptr()
        out[k] = t if whole and (ptr not in seen or t.numel() == 0) else t.contiguous().clone()
        seen.add(ptr)
    return out


def encode_state(state: dict) -> bytes:
    """The state as the bytes of one safetensors file."""
    from safetensors.torch import save

    tensors: dict = {}
    tree = pack(state, tensors)
    meta = {"format": FORMAT, "state": json.dumps(tree, allow_nan=True)}
    return save(_own_storage(tensors), metadata=meta)


def save_state_atomic(state: dict, path) -> None:
    path = Path(path)
    try:
        data = encode_state(state)
        atomic_write(path, data)
    except Exception as exc:
        raise CheckpointWriteError(f"could not write training state {str(path)!r}: {exc}") from exc


def load_state(path) -> dict | None:
    """The saved state (tensors on the CPU), or None when there is no file."""
    path = Path(path)
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        return unpack(json.loads(meta["state"]), tensors)
    except Exception as exc:
        raise CheckpointError(
            f"training state {str(path)!r} is unreadable ({exc}); delete it to restart"
        ) from exc
