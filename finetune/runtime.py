"""Where and how a fine-tuning run executes: device, precision, process group, output."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kronos_alpha.inference import distributed


@dataclass
class Runtime:
    """Where and how to run: device, precision, process group, output."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    rank: int = 0
    world: int = 1
    progress: bool = True
    tensorboard: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def create(
        cls,
        device: str = "auto",
        amp: str = "auto",
        progress: bool = True,
        tensorboard: bool = False,
    ):
        """Under torchrun, starts the process group (``distributed.init_from_env``: nccl for
        a CUDA run, gloo otherwise) and puts each rank on cuda:LOCAL_RANK."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        distributed.init_from_env("nccl" if dev.type == "cuda" else "gloo")
        rank, world = distributed.rank(), distributed.world_size()
        if dev.type == "cuda":
            if world > 1:
                dev = torch.device("cuda", distributed.local_rank())
            elif dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(dev)
        amp_dtype = None
        if dev.type == "cuda" and amp != "off":
            if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
                amp_dtype = torch.float16
            else:
                amp_dtype = torch.bfloat16
        return cls(dev, amp_dtype, rank, world, progress, tensorboard)
