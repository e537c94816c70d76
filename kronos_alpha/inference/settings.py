"""ForecastSettings: the one validated set of forecast settings.

Every door (the Forecaster, the Qlib model, the backtrader indicator, the vectorbt signal,
walk-forward and the CLI) builds one of these instead of declaring its own fields, so there
is one set of defaults and one place where a setting is checked. It is frozen: a change is a
new object (``replace``), validated again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
MAX_SEED = 2**63 - 1
MAX_COUNT = 2**31 - 1  # counts and lengths: torch and numpy index them with 32-bit ints


class SettingsError(ValueError):
    """A setting out of its range or of the wrong type; the message names the setting."""


def quantile_column(q: float) -> str:
    """The table column of a return quantile: 0.1 -> ``ret_q10``."""
    return f"ret_q{q * 100:g}"


def check_integer(name: str, v, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise SettingsError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    v = int(v)
    if minimum is not None and v < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, got {v}")
    return v


def check_real(name: str, v) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SettingsError(f"{name} must be a number, got {v!r} ({type(v).__name__})")
    v = float(v)
    if not math.isfinite(v):
        raise SettingsError(f"{name} must be finite, got {v}")
    return v


def torch_device_name(device) -> str:
    """The device's canonical name ('cuda' -> 'cuda'), or a SettingsError naming it."""
    import torch

    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as exc:
        raise SettingsError(f"device {device!r} is not a torch device: {exc}") from None


def check_flag(name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise SettingsError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def check_int8(device, dtype) -> None:
    """SettingsError unless int8 mode can run there: on the CPU, in float32 (a torch dtype
    or a ForecastSettings.dtype name; None is float32)."""
    if str(device).split(":")[0] != "cpu":
        raise SettingsError(
            f"int8=True runs on the CPU only (torch's fbgemm int8 kernels), not on device "
            f"{str(device)!r}; use device='cpu' or int8=False"
        )
    name = None if dtype is None else str(dtype).replace("torch.", "")
    if name not in (None, "float32"):
        raise SettingsError(
            f"int8=True takes float32 activations, not dtype {name}; use dtype=None or "
            "'float32', or int8=False"
        )


def check_cuda_graphs(device) -> None:
    """SettingsError unless CUDA-graph steps can run there: on a CUDA device."""
    if str(device).split(":")[0] != "cuda":
        raise SettingsError(
            f"cuda_graphs=True replays CUDA graphs and needs a CUDA device, not "
            f"{str(device)!r}; use device='cuda' or cuda_graphs=False"
        )


def check_modes(settings, device, dtype=None) -> None:
    """The int8 and CUDA-graph switches against the device resolved for a run (and the
    model's dtype, or the settings' when None)."""
    if settings.int8:
        check_int8(device, settings.dtype if dtype is None else dtype)
    if settings.cuda_graphs:
        check_cuda_graphs(device)


@dataclass(frozen=True)
class ForecastSettings:
    """How to forecast. Checked at construction; see each field.

    lookback: bars of context (>= 2; clipped to the model's max_context with a warning).
    horizon: bars forecast; ``pred_return`` is close[t+horizon] / close[t] - 1.
    sample_count: sampled paths per window.
    T, top_k, top_p: sampling temperature (>= 0; 0 decodes greedily, as top_k=1 does),
        top-k (0 = off) and nucleus mass (0 < top_p <= 1).
    seed: an integer makes every window's draws a function of (seed, instrument, t) only;
        None samples afresh (and disables the cache).
    clip: normalised inputs are clipped to +-clip (> 0).
    quantiles: of the sampled horizon returns, reported as ``ret_qNN`` columns.
    min_history: fewest usable bars for a forecast (None: lookback).
    fill_suspended: keep suspended bars as flat bars instead of dropping them.
    return_paths: also keep every sampled path (``Forecaster.paths_``) and the mean path.
    device: None picks cuda, then mps, then cpu. dtype: None/float32, bf16 or fp16.
    int8: run the predictor's linear layers with int8 weights (CPU only, float32 only; off
        by default): faster one-token steps, forecasts that drift slightly from float32
        ones; see inference.quantize and the README's performance section.
    cuda_graphs: replay each one-token step as CUDA graphs on static buffers (CUDA only; off
        by default): the same tokens, fewer kernel launches; see inference.graphs.
    max_context: None takes the model's. batch_size: windows per batch (None: sized to memory).
    cache_dir: folder of the forecast cache (None: no cache). progress: tqdm bars.
    calendar: where the future bar times (time features) come from, never the panel's rows
        after t: None/"auto" (the exchange of the instrument codes, else business days with a
        warning), an exchange-calendars name ("XSHG", "XNYS", "24/7", ...), timestamps or a
        calendar file, "business", or "panel" (look-ahead-prone); see inference.calendar.
    """

    lookback: int = 90
    horizon: int = 10
    sample_count: int = 5
    T: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    seed: int | None = 0
    clip: float = 5.0
    quantiles: tuple = (0.1, 0.5, 0.9)
    min_history: int | None = None
    fill_suspended: bool = False
    return_paths: bool = False
    device: str | None = None
    dtype: str | None = None
    int8: bool = False
    cuda_graphs: bool = False
    max_context: int | None = None
    batch_size: int | None = None
    cache_dir: str | None = None
    progress: bool = True
    calendar: str | tuple | None = None

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("lookback", check_integer("lookback", self.lookback, 2, MAX_COUNT))
        put("horizon", check_integer("horizon", self.horizon, 1, MAX_COUNT))
        put("sample_count", check_integer("sample_count", self.sample_count, 1, MAX_COUNT))
        T = check_real("T", self.T)
        if T < 0:
            raise SettingsError(f"T must be >= 0 (0 decodes greedily), got {T}")
        put("T", T)
        put("top_k", check_integer("top_k", self.top_k, 0, MAX_COUNT))
        top_p = check_real("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise SettingsError(f"top_p must be in (0, 1], got {top_p}")
        put("top_p", top_p)
        if self.seed is not None:
            put("seed", check_integer("seed", self.seed, 0, MAX_SEED))
        clip = check_real("clip", self.clip)
        if clip <= 0:
            raise SettingsError(f"clip must be > 0, got {clip}")
        put("clip", clip)
        put("quantiles", self._check_quantiles(self.quantiles))
        if self.min_history is not None:
            mh = check_integer("min_history", self.min_history, 2)
            if mh > self.lookback:
                raise SettingsError(
                    f"min_history must be between 2 and lookback ({self.lookback}), got {mh}"
                )
            put("min_history", mh)
        for name in ("fill_suspended", "return_paths", "progress", "int8", "cuda_graphs"):
            put(name, check_flag(name, getattr(self, name)))
        if self.device is not None:
            put("device", torch_device_name(self.device))
        if self.dtype is not None:
            put("dtype", self._check_dtype(self.dtype))
        if self.int8 and self.cuda_graphs:
            raise SettingsError("int8=True runs on the CPU, cuda_graphs=True on CUDA: choose one")
        if self.int8 or (self.cuda_graphs and self.device is not None):
            check_modes(self, self.device or "cpu")
        for name in ("max_context", "batch_size"):
            if getattr(self, name) is not None:
                put(name, check_integer(name, getattr(self, name), 1, MAX_COUNT))
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, Path)) or not str(self.cache_dir).strip():
                raise SettingsError(
                    f"cache_dir must be a folder path (None: no cache), got {self.cache_dir!r}"
                )
            put("cache_dir", str(self.cache_dir))
        from .exchange import check_calendar  # lazily: exchange imports this module

        put("calendar", check_calendar(self.calendar))

    @staticmethod
    def _check_quantiles(qs) -> tuple:
        if isinstance(qs, (int, float, np.number)):
            qs = (qs,)
        try:
            values = tuple(check_real("quantiles", q) for q in qs)
        except TypeError:
            raise SettingsError(f"quantiles must be a sequence of numbers, got {qs!r}") from None
        if not values:
            raise SettingsError("quantiles is empty; give at least one level in (0, 1)")
        if not all(0 < q < 1 for q in values):
            raise SettingsError(f"quantiles must lie strictly between 0 and 1, got {qs!r}")
        names = [quantile_column(q) for q in values]
        if len(set(names)) != len(names):
            raise SettingsError(f"quantiles {qs!r} repeat a level (columns {names})")
        return values

    @staticmethod
    def _check_dtype(dtype) -> str:
        name = str(dtype).lower().replace("torch.", "")
        if name not in DTYPE_NAMES:
            raise SettingsError(
                f"dtype must be one of {sorted(DTYPE_NAMES)} or a torch dtype, got {dtype!r}"
            )
        return DTYPE_NAMES[name]

    # -- building and changing ---------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def build(cls, settings: ForecastSettings | dict | None = None, **changes) -> ForecastSettings:
        """From a ForecastSettings, a mapping (a YAML block) or the defaults, with changes."""
        if settings is None:
            base = cls()
        elif isinstance(settings, ForecastSettings):
            base = settings
        elif isinstance(settings, dict):
            base = cls().replace(**settings)
        else:
            raise SettingsError(
                f"settings must be a ForecastSettings or a mapping, got {type(settings).__name__}"
            )
        return base.replace(**changes) if changes else base

    def replace(self, **changes) -> ForecastSettings:
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise SettingsError(
                f"ForecastSettings has no setting {unknown[0]!r}; settings are {list(self.names())}"
            )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.names()}

    @property
    def quantile_columns(self) -> list[str]:
        return [quantile_column(q) for q in self.quantiles]


def check_horizon(horizon: int, max_context: int) -> None:
    """A forecast is decoded from the last max_context tokens: it cannot be longer."""
    if horizon > max_context:
        raise SettingsError(
            f"horizon (pred_len) {horizon} exceeds the model's max_context {max_context}: "
            "the tokenizer decodes at most max_context bars at once"
        )


def merge_mappings(
    base: dict, extra: dict, strict: bool = False, free_form=(), prefix: str = "", error=None
) -> dict:
    """``extra`` (a YAML block, say) merged over a copy of ``base``, nested mappings too.

    ``strict``: a key not in ``base`` is an ``error`` (default SettingsError) naming its dotted
    path; mappings whose dotted path is in ``free_form`` take any keys.
    """
    import copy

    error = error or SettingsError
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        name = f"{prefix}{k}"
        if strict and k not in base:
            raise error(f"unknown field {name!r}; fields here are {sorted(base)}")
        old = base.get(k)
        if isinstance(old, dict) and (not strict or tuple(name.split(".")) not in free_form):
            if not isinstance(v, dict):
                if not strict:
                    out[k] = v
                    continue
                raise error(f"{name} must be a mapping, got {v!r}")
            out[k] = merge_mappings(old, v, strict, free_form, f"{name}.", error)
        elif isinstance(old, dict):
            out[k] = {**old, **(v or {})}
        else:
            out[k] = copy.deepcopy(v)
    return out
