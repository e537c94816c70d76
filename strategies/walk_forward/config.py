"""The walk-forward configuration: defaults, checks, and the one ForecastSettings it implies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kronos_alpha.inference.exchange import REGION_EXCHANGES
from kronos_alpha.inference.panel import InputError
from kronos_alpha.inference.settings import (
    MAX_SEED,
    ForecastSettings,
    SettingsError,
    merge_mappings,
)

from ..errors import check_numbers

MODELS = (
    "zero_info",
    "reversal_5d",
    "momentum_20d",
    "lgb_alpha158",
    "lgb_alpha158_sparse",
    "lgb_alpha158_kronos",
    "kronos_zero_shot",
    "kronos_calibrated",
    "kronos_finetuned",
    "kronos_finetuned_calibrated",
)
CALIBRATED = {
    "kronos_calibrated": "kronos_zero_shot",
    "kronos_finetuned_calibrated": "kronos_finetuned",
}

DEFAULTS = {
    "output_dir": "runs/walk_forward",
    "seed": 0,
    "num_threads": 1,  # torch and LightGBM threads
    "progress": True,
    "data": {
        "provider_uri": None,
        "region": "cn",
        "market": "csi300",
        "benchmark": "SH000300",
        "history_start": None,  # bars loaded from here (lookback, features, training)
        "start": None,  # out-of-sample start (first test day)
        "end": None,  # out-of-sample end
        "max_instruments": None,  # seeded sample of the market's instruments (None: all)
    },
    "windows": {
        "train_days": 500,
        "valid_days": 90,
        "step": 21,
        "horizon": 5,
        "decision_every": 5,
    },
    "portfolio": {
        "topk": 20,
        "n_drop": None,
        "hold_period": 1,
        "commission": 0.0005,
        "slippage": 0.0005,
    },
    "baselines": {
        "zero_info": True,
        "reversal_5d": True,
        "momentum_20d": True,
        "hist_vol_window": 60,  # bars of the historical-volatility Gaussian forecast
    },
    "lightgbm": {
        "enabled": True,
        "every": 1,
        "vwap": "auto",
        "num_boost_round": 200,
        "early_stopping_rounds": 20,
        "params": {},
        # lgb_alpha158_kronos: Alpha158 + kronos_features() (needs kronos.enabled). Its train /
        # valid rows are the dates every ``every`` bars on the decision grid's phase (None:
        # windows.decision_every) that have a Kronos forecast; components > 0 adds that many
        # principal components of the embedding, the PCA fitted on the train segment only.
        # ``ablation``: also lgb_alpha158_sparse, Alpha158 alone on the very same rows. Both
        # divide lambda_l1 / lambda_l2 by ``every`` (see stacked.py); ``params`` overrides
        "kronos_features": {
            "enabled": True,
            "components": 0,
            "every": None,
            "ablation": True,
            "params": {},
        },
    },
    "kronos": {  # model, tokenizer, history_bars: walk-forward's; the rest: ForecastSettings
        "enabled": True,
        "model": None,
        "tokenizer": None,
        "lookback": 60,
        "sample_count": 8,
        "T": 1.0,
        "top_p": 0.9,
        "seed": 0,
        "batch_size": None,
        "int8": False,  # opt-in int8 predictor weights on the CPU (ForecastSettings.int8)
        "cuda_graphs": False,  # opt-in CUDA-graph steps on a GPU (ForecastSettings.cuda_graphs)
        "calendar": None,  # future bar times (None: data.region's exchange, else the codes')
        "history_bars": None,  # bars before a window given to the forecaster (None: 3 x lookback + 60)
        # kronos_calibrated (and kronos_finetuned_calibrated): each window calibrates on the
        # decision-grid dates of the last ``days`` bars whose outcomes are realised before its
        # test starts (Forecaster.calibrate; ``tune`` also picks T and top_p)
        "calibration": {"enabled": True, "days": 250, "tune": False},
    },
    "finetune": {
        "enabled": False,
        "every": 1,
        "stride": 1,
        "max_context": 512,
        "tokenizer": {"train": False},
        "predictor": {"epochs": 1, "batch_size": 32, "samples_per_epoch": 2000, "lr": 4e-5},
    },
}

FREE_FORM = {
    ("lightgbm", "params"),
    ("lightgbm", "kronos_features", "params"),
    ("finetune", "tokenizer"),
    ("finetune", "predictor"),
}


class WalkForwardConfigError(InputError):
    """A walk-forward configuration field that is unknown, missing or inconsistent."""


class LookAheadError(InputError):
    """A window whose segments would let a fit see labels of a later segment."""


def load_config(config) -> dict:
    """A YAML path or a mapping -> the full configuration (defaults filled in, checked)."""
    if isinstance(config, (str, Path)):
        import yaml

        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise WalkForwardConfigError("the configuration must be a mapping of fields")
    cfg = merge_mappings(
        DEFAULTS, config, strict=True, free_form=FREE_FORM, error=WalkForwardConfigError
    )
    d, w = cfg["data"], cfg["windows"]
    for key in ("provider_uri", "start", "end"):
        if not d[key]:
            raise WalkForwardConfigError(f"data.{key} is required")
    for key in ("start", "end", "history_start"):
        if d[key] is not None:
            try:
                d[key] = str(pd.Timestamp(d[key]).date())
            except (TypeError, ValueError):
                raise WalkForwardConfigError(f"data.{key} is not a date: {d[key]!r}") from None
    _check_numbers(cfg)
    if pd.Timestamp(d["start"]) > pd.Timestamp(d["end"]):
        raise WalkForwardConfigError(f"data.start {d['start']} is after data.end {d['end']}")
    for key in ("train_days", "valid_days", "step", "horizon", "decision_every"):
        if not isinstance(w[key], int) or w[key] < 1:
            raise WalkForwardConfigError(
                f"windows.{key} must be a positive integer, got {w[key]!r}"
            )
    k = cfg["kronos"]
    if k["enabled"] and not k["model"]:
        raise WalkForwardConfigError(
            "kronos.model is required (a Hub-format folder, or one with model/ and tokenizer/)"
        )
    if k["enabled"]:
        try:
            forecast_settings(cfg)  # checked here, before any data is loaded
        except SettingsError as exc:
            raise WalkForwardConfigError(f"kronos.{exc}") from None
    _check_blocks(cfg)
    if cfg["finetune"]["enabled"] and not k["enabled"]:
        raise WalkForwardConfigError("finetune.enabled needs kronos.enabled")
    h = w["horizon"]
    need = k["lookback"] + 3 * h + 1  # purge h + 1, the fine-tune embargo h, one window
    if cfg["finetune"]["enabled"] and w["valid_days"] < need:
        raise WalkForwardConfigError(
            f"windows.valid_days ({w['valid_days']}) leaves no fine-tuning validation window: "
            f"it needs kronos.lookback + 3 x horizon + 1 = {need} bars"
        )
    return cfg


# field: its least value, or None for a field that may be null (else at least 1)
INTEGERS = {("seed",): 0, ("num_threads",): None, ("data", "max_instruments"): None,
            ("portfolio", "topk"): 1, ("portfolio", "n_drop"): None,
            ("portfolio", "hold_period"): 1, ("baselines", "hist_vol_window"): 2,
            ("lightgbm", "every"): 1, ("lightgbm", "num_boost_round"): 1,
            ("lightgbm", "early_stopping_rounds"): 1, ("finetune", "every"): 1,
            ("finetune", "stride"): 1, ("finetune", "max_context"): 1}  # fmt: skip
COSTS = (("portfolio", "commission"), ("portfolio", "slippage"))  # finite, >= 0


def _check_numbers(cfg: dict) -> None:
    """Integers and costs of the run: a NaN cost or a seed of -1 would not fail until a window."""
    value = {path: cfg[path[0]] if len(path) == 1 else cfg[path[0]][path[1]] for path in INTEGERS}
    integers = {
        ".".join(path): (value[path], 1 if least is None else least, MAX_SEED)
        for path, least in INTEGERS.items()
        if not (least is None and value[path] is None)
    }
    costs = {f"{block}.{key}": (cfg[block][key], 0.0) for block, key in COSTS}
    check_numbers(integers, costs, error=WalkForwardConfigError)


def _check_blocks(cfg: dict) -> None:
    """The calibration and Kronos-feature blocks (no ForecastSettings fields of their own)."""
    c, f = cfg["kronos"]["calibration"], cfg["lightgbm"]["kronos_features"]
    for name, block, key in (("kronos.calibration", c, "enabled"),
                             ("kronos.calibration", c, "tune"),
                             ("lightgbm.kronos_features", f, "enabled"),
                             ("lightgbm.kronos_features", f, "ablation")):  # fmt: skip
        if not isinstance(block[key], bool):
            raise WalkForwardConfigError(f"{name}.{key} must be true or false, got {block[key]!r}")
    step = cfg["windows"]["decision_every"]
    if not _count(c["days"]) or c["days"] < 2 * step:
        raise WalkForwardConfigError(
            f"kronos.calibration.days must be an integer >= 2 x windows.decision_every "
            f"({2 * step}), got {c['days']!r}"
        )
    if not _count(f["components"], zero=True):
        raise WalkForwardConfigError(
            f"lightgbm.kronos_features.components must be an integer >= 0, got {f['components']!r}"
        )
    if f["every"] is not None and not _count(f["every"]):
        raise WalkForwardConfigError(
            f"lightgbm.kronos_features.every must be a positive integer or null, got {f['every']!r}"
        )


def _count(v, zero: bool = False) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= (0 if zero else 1)


def forecast_settings(cfg: dict, cache_dir=None) -> ForecastSettings:
    """The one ForecastSettings of every Kronos forecast of the run (base and fine-tuned).

    The kronos block's forecast fields, the label horizon, the CPU when threads are pinned,
    no tqdm bars (the run has its own). ``kronos.calendar`` None: the exchange of
    ``data.region`` (cn: XSHG, us: XNYS; another region: the instrument codes'), so every
    forecast's future bar times come from the exchange calendar, never from the panel.
    The sampled returns come from ``Forecaster.sample_returns_``, so no paths are kept.
    """
    k = cfg["kronos"]
    given = {name: k[name] for name in ForecastSettings.names() if name in k}
    if given.get("calendar") is None:
        given["calendar"] = REGION_EXCHANGES.get(str(cfg["data"]["region"]).lower())
    return ForecastSettings.build(
        given,
        horizon=cfg["windows"]["horizon"],
        device="cpu" if cfg["num_threads"] else None,
        cache_dir=None if cache_dir is None else str(cache_dir),
        progress=False,
    )


def model_paths(cfg: dict) -> tuple[str, str]:
    """(predictor folder, tokenizer folder) of the base checkpoint."""
    k = cfg["kronos"]
    model, tok = Path(k["model"]), k["tokenizer"]
    if tok is None:
        if (model / "model").is_dir() and (model / "tokenizer").is_dir():
            return str(model / "model"), str(model / "tokenizer")
        raise WalkForwardConfigError(
            f"kronos.tokenizer is required: {model} has no model/ and tokenizer/ subfolders"
        )
    return str(model), str(tok)


def enabled_models(cfg: dict) -> list[str]:
    on = {name: bool(cfg["baselines"][name]) for name in MODELS[:3]}
    lg, k = cfg["lightgbm"], cfg["kronos"]
    on["lgb_alpha158"] = bool(lg["enabled"])
    on["lgb_alpha158_kronos"] = bool(
        lg["enabled"] and k["enabled"] and lg["kronos_features"]["enabled"]
    )
    on["lgb_alpha158_sparse"] = on["lgb_alpha158_kronos"] and lg["kronos_features"]["ablation"]
    on["kronos_zero_shot"] = bool(k["enabled"])
    on["kronos_finetuned"] = bool(cfg["finetune"]["enabled"])
    for name, raw in CALIBRATED.items():
        on[name] = on[raw] and bool(k["calibration"]["enabled"])
    return [m for m in MODELS if on[m]]
