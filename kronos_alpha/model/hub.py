"""Hugging Face Hub I/O with strict loading.

huggingface_hub's PyTorchModelHubMixin loads safetensors non-strictly by default, so a key
mismatch would silently keep random weights. Every load here is strict and every failure
names the folder, the file or the keys at fault.
"""

from __future__ import annotations

import os

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors.torch import load_file

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be loaded as asked."""


def load_state_dict_strict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str
) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if wrong:
            parts.append(f"shape mismatches {wrong[:8]}")
        raise CheckpointError(f"{source}: the config does not fit the weights: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


class HubMixin(PyTorchModelHubMixin):
    """PyTorchModelHubMixin with strict, well-reported loading."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        path = str(pretrained_model_name_or_path)
        if os.path.isdir(path):
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                if not os.path.isfile(os.path.join(path, name)):
                    raise CheckpointError(f"checkpoint folder {path!r} has no {name}")
        elif os.path.exists(path) or path.startswith((".", "/")):
            raise CheckpointError(f"{path!r} is not a checkpoint folder")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except TypeError as exc:  # config.json without a required constructor argument
            raise CheckpointError(
                f"{path}: config.json does not fit {cls.__name__}: {exc}"
            ) from exc

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision=None,
        cache_dir=None,
        force_download: bool = False,
        local_files_only: bool = False,
        token=None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ):
        model = cls(**model_kwargs)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS_NAME)
        else:
            weights = hf_hub_download(
                repo_id=model_id,
                filename=WEIGHTS_NAME,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                token=token,
                local_files_only=local_files_only,
            )
        try:
            state = load_file(weights, device=str(map_location))
        except Exception as exc:  # truncated or foreign file
            raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from exc
        load_state_dict_strict(model, state, weights)
        model.eval()
        return model
