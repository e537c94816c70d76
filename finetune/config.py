"""Fine-tuning configuration: dataclasses with a YAML form.

Every field is checked when a config is built from a mapping: an unknown field, a value of
the wrong type or a combination that cannot work raises ``ConfigError`` naming the field
(``data.lookback``, ``predictor.config.s1_bits``, ...).
"""

import dataclasses
import datetime as _dt
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pandas as pd
import yaml

from kronos_alpha.inference.panel import InputError
from kronos_alpha.inference.settings import MAX_SEED, SettingsError, torch_device_name


class ConfigError(InputError):
    """A configuration field that is unknown, of the wrong type, or inconsistent."""


# Defaults for a fresh module: small, CPU-friendly sizes. Any key may be overridden in
# ``<stage>.config``; keys must be constructor arguments of the module.
FRESH_TOKENIZER = dict(
    d_in=6, d_model=64, n_heads=4, ff_dim=128, n_enc_layers=3, n_dec_layers=3,
    ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0,
    s1_bits=8, s2_bits=8, beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4,
)  # fmt: skip
FRESH_PREDICTOR = dict(
    s1_bits=8, s2_bits=8, n_layers=4, d_model=128, n_heads=4, ff_dim=256,
    ffn_dropout_p=0.1, attn_dropout_p=0.0, resid_dropout_p=0.1, token_dropout_p=0.0, learn_te=True,
)  # fmt: skip


@dataclass
class DataConfig:
    """Where the bars come from, how windows are cut, and the time splits."""

    source: str = "panel"  # "qlib", "csv" (a folder of CSV files) or "panel" (Python only)
    provider_uri: str | None = None  # qlib: provider folder
    region: str = "cn"  # qlib region
    market: str = "csi300"  # qlib market (instruments file name) or "all"
    fields: list[str] = field(default_factory=lambda: ["open", "high", "low", "close", "volume"])
    freq: str = "day"  # qlib frequency
    csv_dir: str | None = None  # csv: folder of <instrument>.csv[.gz]
    time_column: str = "timestamps"  # csv: the timestamp column
    instruments: list[str] | None = None  # keep only these series
    max_instruments: int | None = None  # keep the first N series (sorted by name)
    lookback: int = 90
    horizon: int = 10
    clip: float = 5.0  # normalised values are clipped to +-clip, as at inference
    stride: int = 1  # bars between consecutive window starts
    gap: int | None = None  # bars skipped after a split ends before the next starts (>= horizon)
    train: list[str] | None = None  # [start, end], inclusive
    valid: list[str] | None = None
    test: list[str] | None = None


@dataclass
class StageConfig:
    """One training stage (tokenizer or predictor). Defaults are upstream's."""

    train: bool = True
    init: str = "fresh"  # "fresh", a checkpoint folder, or a Hub id
    config: dict | None = None  # constructor overrides for init: fresh
    epochs: int = 10
    batch_size: int = 50
    accum_steps: int = 1
    lr: float = 4e-5
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    pct_start: float = 0.03
    div_factor: float = 10.0
    clip_grad: float = 3.0
    samples_per_epoch: int | None = None  # None: every training window once per epoch
    val_samples: int | None = None  # None: every validation window
    patience: int = 3  # epochs without a better val loss before stopping
    save_every: int = 50  # optimizer steps between resumable training states


def tokenizer_stage() -> StageConfig:
    return StageConfig(lr=2e-4, betas=[0.9, 0.999], clip_grad=2.0)


def predictor_stage() -> StageConfig:
    return StageConfig()


@dataclass
class FinetuneConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: StageConfig = field(default_factory=tokenizer_stage)
    predictor: StageConfig = field(default_factory=predictor_stage)
    output_dir: str = "finetune_out"
    seed: int = 100
    device: str = "auto"  # auto, cpu, cuda, cuda:N (under torchrun: the local GPU)
    amp: str = "auto"  # auto (bf16 or fp16 on a GPU, off on the CPU), bf16, fp16, off
    max_context: int = 512  # the predictor's window, in tokens
    num_threads: int | None = None  # torch CPU threads
    progress: bool = True  # tqdm bars
    tensorboard: bool = False  # also write TensorBoard scalars (needs the tensorboard package)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        cfg = _build(cls, d, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path) -> "FinetuneConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        with open(path) as f:
            d = yaml.safe_load(f) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of fields")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self, path=None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from kronos_alpha.files import write_text

            write_text(path, text)
        return text

    # -- consistency ----------------------------------------------------------------------
    def validate(self) -> None:
        d = self.data
        if d.source not in ("qlib", "csv", "panel"):
            raise ConfigError(f"data.source must be 'qlib', 'csv' or 'panel', got {d.source!r}")
        if d.source == "qlib" and not d.provider_uri:
            raise ConfigError("data.provider_uri is required when data.source is 'qlib'")
        if d.source == "csv" and not d.csv_dir:
            raise ConfigError("data.csv_dir is required when data.source is 'csv'")
        _positive("data.lookback", d.lookback, minimum=2)
        _positive("data.horizon", d.horizon)
        _positive("data.stride", d.stride)
        if d.clip <= 0:
            raise ConfigError(f"data.clip must be positive, got {d.clip}")
        if d.max_instruments is not None:
            _positive("data.max_instruments", d.max_instruments)
        _positive("max_context", self.max_context)
        if d.lookback + d.horizon > self.max_context:
            raise ConfigError(
                f"data.lookback + data.horizon = {d.lookback + d.horizon} exceeds max_context "
                f"({self.max_context}): a training window must fit the predictor's context"
            )
        if d.gap is not None and d.gap < d.horizon:
            raise ConfigError(f"data.gap ({d.gap}) must be at least data.horizon ({d.horizon})")
        if d.train is None:
            raise ConfigError("data.train is required: [start, end]")
        if d.valid is None:
            raise ConfigError("data.valid is required: [start, end]")
        prev = None
        for name in ("train", "valid", "test"):
            rng = getattr(d, name)
            if rng is None:
                continue
            start, end = split_range(rng, f"data.{name}")
            if start > end:
                raise ConfigError(
                    f"data.{name} has reversed dates: start {start.date()} is after end {end.date()}"
                )
            if prev is not None and start <= prev[1]:
                raise ConfigError(
                    f"data.{name} starts {start.date()}, not after data.{prev[0]} ends {prev[1].date()}: "
                    "splits must be in time order without overlap"
                )
            prev = (name, end)
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.device != "auto":
            try:
                torch_device_name(self.device)
            except SettingsError as exc:  # the forecasting doors' device check
                raise ConfigError(str(exc)) from None
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"amp must be auto, bf16, fp16 or off, got {self.amp!r}")
        if self.num_threads is not None:
            _positive("num_threads", self.num_threads)
        for stage in ("tokenizer", "predictor"):
            _validate_stage(getattr(self, stage), stage)
        tok, pred = self.tokenizer, self.predictor
        for stage in ("tokenizer", "predictor"):
            if getattr(self, stage).init == "fresh":
                _check_buildable(stage, self.fresh_config(stage))
        if tok.init == "fresh" and pred.init == "fresh":
            t, p = self.fresh_config("tokenizer"), self.fresh_config("predictor")
            for bits in ("s1_bits", "s2_bits"):
                if t[bits] != p[bits]:
                    raise ConfigError(
                        f"predictor.config.{bits} ({p[bits]}) does not fit tokenizer.config.{bits} ({t[bits]})"
                    )
        if self.tensorboard:
            try:
                import tensorboard  # noqa: F401
            except ImportError as exc:
                raise ConfigError(
                    "tensorboard: true needs the tensorboard package (pip install tensorboard)"
                ) from exc

    def fresh_config(self, stage: str) -> dict:
        """Constructor arguments of a fresh module: the small defaults plus the overrides."""
        base = FRESH_TOKENIZER if stage == "tokenizer" else FRESH_PREDICTOR
        return {**base, **(getattr(self, stage).config or {})}


def split_range(rng, name: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    if not isinstance(rng, (list, tuple)) or len(rng) != 2:
        raise ConfigError(f"{name} must be [start, end], got {rng!r}")
    try:
        start, end = pd.Timestamp(rng[0]), pd.Timestamp(rng[1])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} has a value that is not a date: {rng!r}") from exc
    if pd.isna(start) or pd.isna(end):
        raise ConfigError(f"{name} has a missing date: {rng!r}")
    # An end given as a bare date includes the whole day.
    if end == end.normalize():
        end = end + pd.Timedelta(days=1) - pd.Timedelta(nanoseconds=1)
    return start, end


def _check_buildable(stage: str, config: dict) -> None:
    """A fresh module's arguments build one (on the meta device: no memory, no time), so a
    bad dimension or dropout fails here, naming the stage, not after the data is read."""
    import torch

    from kronos_alpha.model import Kronos
    from kronos_alpha.model.tokenizer import KronosTokenizer

    for key, v in config.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{stage}.config.{key} must be finite, got {v}")
    cls = KronosTokenizer if stage == "tokenizer" else Kronos
    try:
        with torch.device("meta"):
            cls(**config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{stage}.config does not build a {cls.__name__}: {exc}") from None


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")


def _validate_stage(s: StageConfig, name: str) -> None:
    for f in ("epochs", "batch_size", "accum_steps", "save_every"):
        _positive(f"{name}.{f}", getattr(s, f))
    for f in ("samples_per_epoch", "val_samples"):
        if getattr(s, f) is not None:
            _positive(f"{name}.{f}", getattr(s, f))
    if s.patience < 1:
        raise ConfigError(f"{name}.patience must be at least 1, got {s.patience}")
    if s.lr <= 0:
        raise ConfigError(f"{name}.lr must be positive, got {s.lr}")
    if s.weight_decay < 0:
        raise ConfigError(f"{name}.weight_decay must not be negative, got {s.weight_decay}")
    if len(s.betas) != 2 or not all(0 <= b < 1 for b in s.betas):
        raise ConfigError(f"{name}.betas must be two numbers in [0, 1), got {s.betas}")
    if not 0 < s.pct_start < 1:
        raise ConfigError(f"{name}.pct_start must be in (0, 1), got {s.pct_start}")
    if s.div_factor <= 0:
        raise ConfigError(f"{name}.div_factor must be positive, got {s.div_factor}")
    if s.clip_grad <= 0:
        raise ConfigError(f"{name}.clip_grad must be positive, got {s.clip_grad}")
    if not s.init:
        raise ConfigError(f"{name}.init must be 'fresh', a checkpoint folder or a Hub id")
    if s.init != "fresh" and s.config:
        raise ConfigError(
            f"{name}.config is only used with {name}.init: fresh (init is {s.init!r})"
        )
    if s.init == "fresh":
        from kronos_alpha.model import Kronos
        from kronos_alpha.model.tokenizer import KronosTokenizer

        cls = KronosTokenizer if name == "tokenizer" else Kronos
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
        for key in s.config or {}:
            if key not in allowed:
                raise ConfigError(
                    f"{name}.config.{key} is not a {cls.__name__} argument; known: {sorted(allowed)}"
                )
        if not s.train and name == "predictor":
            raise ConfigError(
                "predictor.init: fresh with predictor.train: false gives an untrained predictor"
            )


# -- strict mapping -> dataclass ----------------------------------------------------------


def _build(cls, d, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(d).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in d:
        if key not in names:
            raise ConfigError(f"unknown field {prefix}{key!s}; known fields: {sorted(names)}")
    kwargs = {}
    for key, value in d.items():
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    obj = cls(**kwargs)
    # Stage-specific defaults (tokenizer lr etc.) when a stage mapping is given partially.
    if cls is FinetuneConfig:
        for stage, factory in (("tokenizer", tokenizer_stage), ("predictor", predictor_stage)):
            if stage in d:
                base = {**dataclasses.asdict(factory()), **d[stage]}
                setattr(obj, stage, _build(StageConfig, base, f"{stage}."))
    return obj


def _coerce(value, tp, name: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, f"{name}.")
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], name)
    if value is None:
        raise ConfigError(f"{name} must not be empty")
    if isinstance(value, (_dt.date, _dt.datetime)):
        value = value.isoformat()
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):  # a NaN or infinite rate trains NaN weights
            raise ConfigError(f"{name} must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return str(value)
    return value
