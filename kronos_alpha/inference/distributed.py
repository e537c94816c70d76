"""The one process-group start-up for torchrun, shared by forecasting and fine-tuning.

Launch any script that calls ``Forecaster.forecast`` (or the finetune trainer) with
``torchrun --nproc-per-node N``; ``init_from_env()`` starts the process group (nccl on CUDA,
gloo otherwise; a caller may choose). Forecasting: each rank computes every ``world``-th
missing window, results are gathered to every rank, and ranks share the disk cache.
Fine-tuning: DDP, with the validation loss summed over ranks.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    """This process's GPU slot on its node (torchrun's LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", rank()))


def init_from_env(backend: str | None = None) -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1). Returns whether
    it is active. Idempotent. ``backend`` defaults to nccl where CUDA is available, else
    gloo; with nccl the current CUDA device becomes cuda:LOCAL_RANK, one GPU per rank."""
    if not dist.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":  # collectives use the current device: one GPU per rank
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend)
    return active()


def shutdown() -> None:
    """Destroy the process group if one was started (end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: str) -> str:
    """cuda -> cuda:LOCAL_RANK under torchrun, so ranks do not share one GPU."""
    if device == "cuda" and active():
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (a no-op in one process)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def gather(items: list) -> list:
    """Concatenate every rank's list (same order on every rank)."""
    if not active():
        return items
    out: list = [None] * world_size()
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]
