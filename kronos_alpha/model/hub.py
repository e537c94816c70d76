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
    not_float = [
        k
        for k in sorted(set(own) & set(state))
        if own[k].is_floating_point() and not state[k].is_floating_point()
    ]
    if not_float:
        raise CheckpointError(
            f"{source}: tensor {not_float[0]!r} is {state[not_float[0]].dtype}, not floating point "
            f"({len(not_float)} such tensor(s)); the weights are not a Kronos checkpoint"
        )
    for k in sorted(state):
        t = state[k]
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{source}: tensor {k!r} has {bad} NaN/inf value(s); a model with them gives "
                "plausible-looking but meaningless forecasts"
            )
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


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers quickly (the Hub client itself retries for ~20 s)."""
    import socket

    if hub_offline():
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_config(cls, config, source: str) -> None:
    """config.json must be a JSON object whose values have the constructor defaults' types."""
    import inspect

    if not isinstance(config, dict):
        raise CheckpointError(
            f"{source}: config.json must be a JSON object of {cls.__name__} arguments, "
            f"got {type(config).__name__}"
        )
    params = inspect.signature(cls.__init__).parameters
    for key, value in config.items():
        p = params.get(key)
        if p is None:
            continue
        kinds = {"bool": bool, "int": int, "float": float, bool: bool, int: int, float: float}
        want = kinds.get(p.annotation)
        if want is None and p.default is not inspect.Parameter.empty:
            want = type(p.default)
        if want is bool and not isinstance(value, bool):
            raise CheckpointError(
                f"{source}: config.json {key!r} must be true or false, got {value!r}"
            )
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise CheckpointError(
                f"{source}: config.json {key!r} must be an integer, got {value!r}"
            )
        if want is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise CheckpointError(f"{source}: config.json {key!r} must be a number, got {value!r}")


class HubMixin(PyTorchModelHubMixin):
    """PyTorchModelHubMixin with strict, well-reported loading."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        import json

        path = str(pretrained_model_name_or_path)
        if os.path.isdir(path):
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                if not os.path.isfile(os.path.join(path, name)):
                    raise CheckpointError(f"checkpoint folder {path!r} has no {name}")
            try:
                with open(os.path.join(path, CONFIG_NAME), encoding="utf-8") as f:
                    config = json.loads(f.read())
            except (ValueError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{path}: config.json is not valid JSON ({exc})") from exc
            check_config(cls, config, path)
        elif os.path.exists(path) or path.startswith((".", "/")):
            raise CheckpointError(f"{path!r} is not a checkpoint folder")
        elif not kwargs.get("local_files_only") and not hub_reachable():
            # Fail fast: the Hub client would retry for ~25 s, then raise a generic error.
            try:
                return super().from_pretrained(path, **{**kwargs, "local_files_only": True})
            except Exception as exc:  # noqa: BLE001 - not in the local Hub cache
                why = (
                    "HF_HUB_OFFLINE is set"
                    if hub_offline()
                    else "the Hugging Face Hub cannot be reached"
                )
                raise CheckpointError(
                    f"model {path!r} cannot be downloaded: {why} and it is not in the local Hub "
                    f"cache ({type(exc).__name__}). Download it where there is a network, then "
                    "pass its folder (or set HF_HUB_OFFLINE=1 once it is in the Hub cache)"
                ) from exc
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
