"""Where and in what precision the model runs, and how many windows fit in one batch."""

from __future__ import annotations

import os

import torch

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def auto_device() -> str:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str) -> str:
    """The device, if this torch can use it; else a one-line error saying why not."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(f"device {device!r} is not available: {why}; use device='cpu'")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} is not available on this machine; use 'cpu'")
    return device


def torch_dtype(name: str | None, device: str) -> torch.dtype:
    """The model's dtype for a ForecastSettings.dtype name (None: float32)."""
    dt = TORCH_DTYPES[name or "float32"]
    if dt == torch.float16 and not device.startswith("cuda"):
        raise ValueError(
            f"dtype fp16 needs a cuda device (device is {device!r}); use bf16 or float32"
        )
    return dt


class MemoryEstimateError(ValueError):
    """A job whose estimated memory exceeds what the machine has; the message gives both."""


def available_memory(device: str) -> int:
    """Free bytes on the device (GPU memory, or the RAM the OS reports as available)."""
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def free_memory(device: str) -> int:
    """Bytes a batch may use: half the free GPU memory, or a quarter of the free RAM (at most
    2 GiB: CPUs gain little from huge batches)."""
    if str(device).startswith("cuda"):
        return available_memory(device) // 2
    return min(available_memory(device) // 4, 2 << 30)


def check_fits(per_window: int, windows: int, batch: int, rows: int, horizon: int, device) -> None:
    """Refuse, before any work, a job that cannot fit: one batch on the device plus every
    window's sampled paths (float32) and random numbers kept in RAM."""
    kept = windows * rows * horizon * (6 + 2) * 4
    need = per_window * batch + kept
    have = available_memory("cpu") if not str(device).startswith("cuda") else None
    if str(device).startswith("cuda"):
        gpu = available_memory(device)
        if per_window * batch > gpu:
            raise MemoryEstimateError(
                f"a batch of {batch} window(s) needs an estimated {per_window * batch / 2**30:.1f} GiB "
                f"on {device}, which has {gpu / 2**30:.1f} GiB free; lower sample_count or batch_size"
            )
        need, have = kept, available_memory("cpu")
    if need > have:
        raise MemoryEstimateError(
            f"this forecast needs an estimated {need / 2**30:.1f} GiB ({windows} window(s) x "
            f"{rows} sample(s) x {horizon} bar(s)), more than the {have / 2**30:.1f} GiB available; "
            "lower sample_count, horizon or the number of windows"
        )


def window_bytes(
    model, tokenizer, dtype: torch.dtype, length: int, rows: int, horizon: int, graphs=False
) -> int:
    """Memory of one window of ``length`` bars with ``rows`` sampled paths of ``horizon`` bars.

    Key/value caches: the context's once per window (its paths share it), the generated
    tokens' per path - with ``graphs`` (CUDA-graph steps, ``inference.graphs``) every path
    holds the whole span in its static buffers; activations ~ 16 * d_model per token and
    row; the tokenizer's decode.
    """
    elem = torch.finfo(dtype).bits // 8
    per_token_kv = (model.n_layers + 1) * 2 * model.d_model * elem
    kv = per_token_kv * (rows * (length + horizon) if graphs else length + rows * horizon)
    act = rows * (length + horizon) * model.d_model * 16 * elem
    return kv + act + length * tokenizer.d_model * 64 * 4


def batch_windows(
    model, tokenizer, dtype, device, length: int, rows: int, horizon: int, graphs=False
) -> int:
    """Windows per batch that fit in the memory ``free_memory`` allows (1..1024)."""
    per_window = window_bytes(model, tokenizer, dtype, length, rows, horizon, graphs)
    return int(max(1, min(1024, free_memory(device) // per_window)))
