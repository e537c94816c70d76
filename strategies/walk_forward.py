"""Walk-forward evaluation of Kronos against honest baselines, window by window.

    from kronos_alpha.strategies.walk_forward import run_walk_forward
    summary = run_walk_forward("examples/walk_forward_csi300.yaml")

or ``kronos-alpha walk-forward --config FILE``. The report (markdown, PNG charts, one table of
every model against every metric) is written by ``walk_forward_report``.

Windows. Qlib's ``RollingGen`` (sliding, ``step`` trading days, ``trunc_days = horizon + 1``)
rolls a task template whose segments are train / valid / test, the test segment being the
whole out-of-sample span (RollingGen cuts it into ``step``-day pieces; it stops when a full
step no longer fits the calendar, so up to ``step - 1`` final bars go untested - the CSI300
example loses 2022-12-29/30, whose 5-bar labels do not exist anyway). The template's model is
the LightGBM baseline. Qlib's ``TaskManager`` is not used: it needs a MongoDB server;
resumability comes from one result file per finished window (plus the forecaster's disk cache
and the fine-tuning run's own resumable state). ``handler_mod`` is not used either: the
Alpha158 features are computed once for the whole span (every Alpha158 expression looks
backwards only, and no processor is fitted on data), and each window takes its rows.
Qlib's ``LGBModel.fit`` logs every boosting round to an MLflow recorder, so the baseline calls
lightgbm directly with the same parameters instead of opening an experiment store per window.

Per window (train segment, valid segment, test segment), with h = the label horizon:
- Purge: valid ends >= h + 1 bars before the test starts (RollingGen's trunc_days) and train
  ends h + 1 bars before valid starts, so no training label (t -> t + h) reaches a later
  segment. Checked for every window (``LookAheadError``).
- Decision dates: every ``decision_every``-th trading day from the out-of-sample start (one
  global grid), those inside the test segment.
- Universe at t: CSI300 members at t (point-in-time spans of the instruments file) among the
  sampled instruments, with a traded bar at t (volume > 0), and - when Kronos runs - a Kronos
  forecast (>= ``lookback`` traded bars of history). Every model is scored on these pairs.
- Models (signal = expected h-bar return, higher is better):
  zero_info     seeded random scores (no information; calibrates the t-statistics)
  reversal_5d   -(close_t / close_{t-5} - 1)
  momentum_20d  close_t / close_{t-20} - 1
  lgb_alpha158  LightGBM on Qlib's Alpha158 without VWAP0 (the data has no $vwap:
                ``Alpha158Checked`` leaves the feature out instead of reading an all-NaN
                column), label Ref($close, -h) / $close - 1, CS-z-scored; fitted on the
                train segment, early-stopped on the valid segment (refit every ``every``
                windows; windows between use the latest earlier fit)
  kronos_zero_shot  the base checkpoint through the shared ``Forecaster``
  kronos_finetuned  the base checkpoint fine-tuned (``kronos_alpha.finetune``) on the train /
                valid segments (every ``every`` windows; windows between use the latest
                earlier fine-tune)
- No look-ahead: fits get a panel cut at the valid end (fine-tuning) or rows of the train and
  valid segments (LightGBM); forecasts get a panel cut at the window's last decision date and
  the Forecaster uses only bars <= t for decision time t. tests/test_walk_forward.py plants a
  price spike inside a test segment and checks that nothing decided before it changes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.inference.panel import InputError

from .panel import init_qlib, load_panel

MODELS = (
    "zero_info",
    "reversal_5d",
    "momentum_20d",
    "lgb_alpha158",
    "kronos_zero_shot",
    "kronos_finetuned",
)

# Qlib's published LightGBM/Alpha158 parameters (examples/benchmarks/LightGBM), one thread.
LGB_PARAMS = dict(
    objective="regression",
    colsample_bytree=0.8879,
    learning_rate=0.2,
    subsample=0.8789,
    lambda_l1=205.6999,
    lambda_l2=580.9768,
    max_depth=8,
    num_leaves=210,
    num_threads=1,
    verbosity=-1,
    seed=0,
)

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
    },
    "kronos": {
        "enabled": True,
        "model": None,
        "tokenizer": None,
        "lookback": 60,
        "sample_count": 8,
        "T": 1.0,
        "top_p": 0.9,
        "seed": 0,
        "batch_size": None,
        "history_bars": None,  # bars before a window given to the forecaster (None: 3 x lookback + 60)
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

FREE_FORM = {("lightgbm", "params"), ("finetune", "tokenizer"), ("finetune", "predictor")}


class WalkForwardConfigError(InputError):
    """A walk-forward configuration field that is unknown, missing or inconsistent."""


class LookAheadError(InputError):
    """A window whose segments would let a fit see labels of a later segment."""


# -- configuration -------------------------------------------------------------------------
def _merge(defaults: dict, given: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(defaults)
    for k, v in given.items():
        name = f"{prefix}{k}"
        if k not in defaults:
            raise WalkForwardConfigError(
                f"unknown field {name!r}; fields here are {sorted(defaults)}"
            )
        if isinstance(defaults[k], dict) and tuple(name.split(".")) not in FREE_FORM:
            if not isinstance(v, dict):
                raise WalkForwardConfigError(f"{name} must be a mapping, got {v!r}")
            out[k] = _merge(defaults[k], v, f"{name}.")
        elif isinstance(defaults[k], dict):
            out[k] = {**defaults[k], **(v or {})}
        else:
            out[k] = v
    return out


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
    cfg = _merge(DEFAULTS, config)
    d, w = cfg["data"], cfg["windows"]
    for key in ("provider_uri", "start", "end"):
        if not d[key]:
            raise WalkForwardConfigError(f"data.{key} is required")
    for key in ("start", "end", "history_start"):
        if d[key] is not None:
            d[key] = str(pd.Timestamp(d[key]).date())
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
    if cfg["finetune"]["enabled"] and not k["enabled"]:
        raise WalkForwardConfigError("finetune.enabled needs kronos.enabled")
    h = w["horizon"]
    need = k["lookback"] + 3 * h + 1  # purge h + 1, the fine-tune embargo h, one window
    if cfg["finetune"]["enabled"] and w["valid_days"] < need:
        raise WalkForwardConfigError(
            f"windows.valid_days ({w['valid_days']}) leaves no fine-tuning validation window: "
            f"it needs kronos.lookback + 3 x horizon + 1 = {need} bars"
        )
    if cfg["portfolio"]["topk"] < 1:
        raise WalkForwardConfigError("portfolio.topk must be positive")
    return cfg


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
    on["lgb_alpha158"] = bool(cfg["lightgbm"]["enabled"])
    on["kronos_zero_shot"] = bool(cfg["kronos"]["enabled"])
    on["kronos_finetuned"] = bool(cfg["finetune"]["enabled"])
    return [m for m in MODELS if on[m]]


# -- data ----------------------------------------------------------------------------------
class Data:
    """Panel (datetime, instrument), benchmark returns, calendar and point-in-time membership."""

    def __init__(self, cfg: dict):
        d = cfg["data"]
        init_qlib(d["provider_uri"], d["region"])
        from qlib.data import D

        pool = D.instruments(d["market"])
        oos = D.list_instruments(pool, start_time=d["start"], end_time=d["end"], as_list=True)
        if not oos:
            raise InputError(f"market {d['market']!r} has no members in {d['start']}..{d['end']}")
        # membership spans over the whole loaded history: training rows are members too
        spans = D.list_instruments(
            pool, start_time=d["history_start"], end_time=d["end"], as_list=False
        )
        names = sorted(oos)
        if d["max_instruments"] and d["max_instruments"] < len(names):
            rng = np.random.default_rng(cfg["seed"])
            names = sorted(rng.choice(names, int(d["max_instruments"]), replace=False).tolist())
        self.names = names
        self.calendar = pd.DatetimeIndex(
            D.calendar(start_time=d["history_start"], end_time=d["end"])
        )
        # a list (not the market) loads every instrument's whole history, members or not
        self.panel, self.benchmark = load_panel(
            d["provider_uri"], names, d["history_start"], d["end"], d["benchmark"], d["region"]
        )
        members = pd.DataFrame(False, index=self.calendar, columns=names)
        for name in names:
            for s, e in spans[name]:
                members.loc[pd.Timestamp(s) : pd.Timestamp(e), name] = True
        self.members = members
        self.close = self.panel["close"].unstack("instrument").reindex(self.calendar)
        volume = self.panel["volume"].unstack("instrument").reindex(self.calendar)
        self.traded = volume.fillna(0) > 0

    def eligible(self, dates) -> pd.MultiIndex:
        """(t, instrument) pairs of members with a traded bar at t."""
        ok = (
            self.members & self.traded.reindex(columns=self.members.columns, fill_value=False)
        ).loc[dates]
        s = ok.stack()
        s = s[s]
        s.index.names = ["datetime", "instrument"]
        return s.index

    def cut(self, end, start=None, instruments=None) -> pd.DataFrame:
        """Panel rows with start <= datetime <= end (and only ``instruments``)."""
        t = self.panel.index.get_level_values("datetime")
        keep = t <= pd.Timestamp(end)
        if start is not None:
            keep &= t >= pd.Timestamp(start)
        if instruments is not None:
            keep &= self.panel.index.get_level_values("instrument").isin(list(instruments))
        return self.panel[keep]


# -- windows -------------------------------------------------------------------------------
def lgb_task_template(cfg: dict, segments: dict) -> dict:
    """The Qlib task of the LightGBM baseline, whose segments RollingGen rolls."""
    lg = cfg["lightgbm"]
    return {
        "model": {
            "class": "LGBModel",
            "module_path": "qlib.contrib.model.gbdt",
            "kwargs": {**LGB_PARAMS, **lg["params"]},
        },
        "dataset": {
            "class": "DatasetH",
            "module_path": "qlib.data.dataset",
            "kwargs": {
                "handler": {
                    "class": "Alpha158Horizon",
                    "module_path": "kronos_alpha.strategies.walk_forward",
                },
                "segments": segments,
            },
        },
    }


def rolling_windows(cfg: dict, calendar: pd.DatetimeIndex) -> list[dict]:
    """Windows from Qlib's RollingGen: dicts of train/valid/test (start, end) and decision dates."""
    from qlib.workflow.task.gen import RollingGen

    w, d = cfg["windows"], cfg["data"]
    h = w["horizon"]
    ts = int(calendar.searchsorted(pd.Timestamp(d["start"])))
    te = int(calendar.searchsorted(pd.Timestamp(d["end"]), side="right")) - 1
    if ts > te:
        raise WalkForwardConfigError(f"no trading day between {d['start']} and {d['end']}")
    valid_start = ts - w["valid_days"]
    train_end = valid_start - (h + 1)
    train_start = train_end - w["train_days"] + 1
    if train_start < 0:
        raise WalkForwardConfigError(
            f"data.history_start {d['history_start']} leaves {ts} trading days before "
            f"data.start; windows.train_days + valid_days + horizon + 1 needs "
            f"{w['train_days'] + w['valid_days'] + h + 1}"
        )
    segments = {
        "train": (calendar[train_start], calendar[train_end]),
        "valid": (calendar[valid_start], calendar[ts - 1]),
        "test": (calendar[ts], calendar[te]),  # the whole out-of-sample span
    }
    gen = RollingGen(
        step=w["step"], rtype=RollingGen.ROLL_SD, ds_extra_mod_func=None, trunc_days=h + 1
    )
    tasks = gen.generate(lgb_task_template(cfg, segments))
    grid = calendar[ts : te + 1 : w["decision_every"]]
    out = []
    for i, task in enumerate(tasks):
        seg = task["dataset"]["kwargs"]["segments"]
        test_end = min(pd.Timestamp(seg["test"][1] or calendar[te]), calendar[te])
        win = {
            "index": i,
            "train": (pd.Timestamp(seg["train"][0]), pd.Timestamp(seg["train"][1])),
            "valid": (pd.Timestamp(seg["valid"][0]), pd.Timestamp(seg["valid"][1])),
            "test": (pd.Timestamp(seg["test"][0]), test_end),
        }
        win["dates"] = [t for t in grid if win["test"][0] <= t <= win["test"][1]]
        check_purged(win, calendar, h)
        if win["dates"]:
            out.append(win)
    return out


def check_purged(win: dict, calendar: pd.DatetimeIndex, horizon: int) -> None:
    """Labels t -> t + h of a segment must end before the next segment starts."""
    pos = {k: [calendar.get_loc(t) for t in win[k]] for k in ("train", "valid", "test")}
    for a, b in (("train", "valid"), ("valid", "test")):
        gap = pos[b][0] - pos[a][1]
        if gap < horizon + 1:
            raise LookAheadError(
                f"window {win['index']}: {a} ends {win[a][1]:%Y-%m-%d}, only {gap} bars before "
                f"{b} starts {win[b][0]:%Y-%m-%d}; the label horizon {horizon} needs {horizon + 1}"
            )


# -- signals -------------------------------------------------------------------------------
def price_signals(data: Data, cfg: dict, index: pd.MultiIndex) -> pd.DataFrame:
    """zero_info, reversal_5d, momentum_20d at the (t, instrument) pairs of ``index``."""
    close = data.close
    out = {}
    b = cfg["baselines"]
    if b["zero_info"]:
        rows = {}
        for t in index.get_level_values(0).unique():
            rng = np.random.default_rng([int(cfg["seed"]), int(t.value // 86_400_000_000_000)])
            rows[t] = pd.Series(rng.standard_normal(len(data.names)), index=data.names)
        out["zero_info"] = _pick(pd.DataFrame(rows).T, index)
    if b["reversal_5d"]:
        out["reversal_5d"] = _pick(-(close / close.shift(5) - 1), index)
    if b["momentum_20d"]:
        out["momentum_20d"] = _pick(close / close.shift(20) - 1, index)
    return pd.DataFrame(out, index=index)


def _pick(wide: pd.DataFrame, index: pd.MultiIndex) -> np.ndarray:
    s = wide.stack(future_stack=True)
    return s.reindex(index).to_numpy(dtype=np.float64)


def hist_vol(data: Data, window: int, index: pd.MultiIndex) -> np.ndarray:
    """Std of the last ``window`` daily returns up to t (the Gaussian baseline's per-bar sigma)."""
    from .factors import daily_returns

    ret = daily_returns(data.panel).reindex(data.calendar)
    sd = ret.rolling(window, min_periods=max(2, window * 2 // 3)).std()
    return _pick(sd, index)


# -- LightGBM on Alpha158 ----------------------------------------------------------------------
def _alpha158_class():
    from .alpha158 import Alpha158Checked

    class Alpha158Horizon(Alpha158Checked):
        """Alpha158 (vwap explicit) with the label Ref($close, -h) / $close - 1."""

        def __init__(self, *args, horizon: int = 5, **kwargs):
            self.horizon = int(horizon)
            super().__init__(*args, **kwargs)

        def get_label_config(self):
            return [f"Ref($close, -{self.horizon})/$close - 1"], ["LABEL0"]

    return Alpha158Horizon


def __getattr__(name):
    if name == "Alpha158Horizon":  # importable by the task template's module_path
        return _alpha158_class()
    raise AttributeError(name)


def alpha158_frames(cfg: dict, data: Data, windows: list[dict], out: Path) -> dict:
    """Features (every row) and CS-z-scored labels (rows with a label), cached in ``out``."""
    path = out / "alpha158.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    from qlib.data.dataset.handler import DataHandlerLP

    handler = _alpha158_class()(
        instruments=data.names,
        start_time=windows[0]["train"][0],
        end_time=windows[-1]["test"][1],
        horizon=cfg["windows"]["horizon"],
        vwap=cfg["lightgbm"]["vwap"],
        infer_processors=[],
        learn_processors=[
            {"class": "DropnaLabel"},
            {"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}},
        ],
    )
    feature = handler.fetch(col_set="feature", data_key=DataHandlerLP.DK_I).astype(np.float32)
    label = handler.fetch(col_set="label", data_key=DataHandlerLP.DK_L).iloc[:, 0]
    frames = {"feature": feature, "label": label, "n_features": feature.shape[1]}
    _atomic_pickle(frames, path)
    return frames


def _member_rows(data: Data, index: pd.MultiIndex) -> np.ndarray:
    m = data.members.stack()
    m.index.names = ["datetime", "instrument"]
    return m.reindex(index).fillna(False).to_numpy(dtype=bool)


def fit_lgb(cfg: dict, data: Data, frames: dict, win: dict):
    """LightGBM fitted on the train segment's member rows, early-stopped on the valid segment."""
    import lightgbm as lgb

    lg = cfg["lightgbm"]
    feature, label = frames["feature"], frames["label"]
    sets, seen = [], hashlib.sha256()
    for seg in ("train", "valid"):
        a, b = win[seg]
        y = label.loc[a:b]
        y = y[_member_rows(data, y.index)]
        X = feature.reindex(y.index)
        seen.update(y.to_numpy().tobytes() + X.to_numpy().tobytes())
        sets.append(lgb.Dataset(X.to_numpy(), label=y.to_numpy(), free_raw_data=True))
    params = {**LGB_PARAMS, **lg["params"], "num_threads": cfg["num_threads"]}
    booster = lgb.train(
        params,
        sets[0],
        num_boost_round=lg["num_boost_round"],
        valid_sets=[sets[1]],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(lg["early_stopping_rounds"], verbose=False)],
    )
    text = booster.model_to_string()
    info = {
        "fitted_in_window": win["index"],
        "best_iteration": int(booster.best_iteration),
        "train_rows": int(sets[0].num_data()),
        "valid_rows": int(sets[1].num_data()),
        "train_label_end": str(win["train"][1].date()),
        "digest": hashlib.sha256(text.encode()).hexdigest()[:16],  # the trees
        "data_digest": seen.hexdigest()[:16],  # every feature and label it saw
    }
    return booster, text, info


# -- Kronos --------------------------------------------------------------------------------
def make_forecaster(cfg: dict, model: str, tokenizer: str, cache_dir: Path):
    from kronos_alpha.inference.forecaster import Forecaster

    k = cfg["kronos"]
    return Forecaster(
        model=model,
        tokenizer=tokenizer,
        lookback=k["lookback"],
        horizon=cfg["windows"]["horizon"],
        sample_count=k["sample_count"],
        T=k["T"],
        top_p=k["top_p"],
        seed=k["seed"],
        device="cpu" if cfg["num_threads"] else None,
        batch_size=k["batch_size"],
        cache_dir=cache_dir,
        return_paths=True,
        progress=False,
    )


def kronos_forecast(cfg: dict, data: Data, forecaster, win: dict, index: pd.MultiIndex):
    """(pred_return at ``index``, sampled h-bar returns (n, samples)) from a panel cut at the
    window's last decision date (and ``history_bars`` bars before its first)."""
    k = cfg["kronos"]
    extra = k["history_bars"] or 3 * k["lookback"] + 60
    first = data.calendar.get_loc(win["dates"][0])
    start = data.calendar[max(0, first - extra)]
    names = index.get_level_values("instrument").unique()
    panel = data.cut(win["dates"][-1], start, names)
    table = forecaster.forecast(panel, win["dates"])
    close = data.panel["close"].reindex(table.index).to_numpy(dtype=np.float64)
    paths = forecaster.paths_
    samples = np.stack([paths[key][1][:, -1, 3] for key in table.index]) / close[:, None] - 1
    samp = pd.DataFrame(samples, index=table.index)
    return table["pred_return"], samp, dict(forecaster.report)


def finetune_window(cfg: dict, data: Data, win: dict, out: Path) -> dict:
    """Fine-tune the base checkpoint on the window's train/valid segments (panel cut at valid end)."""
    from kronos_alpha.finetune import FinetuneConfig, run_finetune

    folder = out / "finetune" / f"w{win['index']:03d}"
    done = folder / "result.json"
    if done.exists():
        res = json.loads(done.read_text())
        if "model_path" in res:
            return _finetune_info(res, win)
    model, tokenizer = model_paths(cfg)
    f, k = cfg["finetune"], cfg["kronos"]
    a, b = win["train"][0], win["valid"][1]
    span = data.members.loc[a:b]
    names = span.columns[span.any()]
    cut = data.cut(b, None, names)[["open", "high", "low", "close", "volume"]]
    assert cut.index.get_level_values("datetime").max() <= b  # the fit sees nothing later
    series = {
        str(n): g.droplevel("instrument") for n, g in cut.groupby(level="instrument", sort=True)
    }
    fc = FinetuneConfig.from_dict(
        {
            "data": {
                "source": "panel",
                "lookback": k["lookback"],
                "horizon": cfg["windows"]["horizon"],
                "stride": f["stride"],
                "gap": cfg["windows"]["horizon"],
                "train": [str(win["train"][0].date()), str(win["train"][1].date())],
                "valid": [str(win["valid"][0].date()), str(win["valid"][1].date())],
            },
            "tokenizer": {"init": tokenizer, **{"train": False, **f["tokenizer"]}},
            "predictor": {"init": model, **f["predictor"]},
            "output_dir": str(folder),
            "seed": int(cfg["seed"]) + 100,
            "device": "cpu" if cfg["num_threads"] else "auto",
            "max_context": f["max_context"],
            "num_threads": cfg["num_threads"],
            "progress": False,
        }
    )
    res = run_finetune(fc, panel=series)
    if "model_path" not in res:
        raise RuntimeError(f"fine-tuning of window {win['index']} stopped early: {res}")
    return _finetune_info(res, win)


def _finetune_info(res: dict, win: dict) -> dict:
    pred = res.get("predictor", {})
    return {
        "fitted_in_window": win["index"],
        "model_path": res["model_path"],
        "tokenizer_path": res["tokenizer_path"],
        "val_loss_before": pred.get("val_loss_before"),
        "val_loss_best": pred.get("val_loss_best"),
        "data_end": str(win["valid"][1].date()),
    }


# -- the run -------------------------------------------------------------------------------
def _atomic_pickle(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _check_resumable(cfg: dict, out: Path) -> None:
    saved = out / "config.json"
    key = {k: v for k, v in cfg.items() if k not in ("output_dir", "progress")}
    text = json.dumps(key, sort_keys=True, default=str, indent=1)
    if saved.exists() and saved.read_text() != text:
        raise WalkForwardConfigError(
            f"{out} holds a walk-forward run with another configuration; use a new output_dir "
            "or restart (CLI: --restart)"
        )
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(text)


class _Fits:
    """The latest LightGBM fit and fine-tune, each refitted every ``every`` windows."""

    def __init__(self):
        self.lgb = None  # (booster, info)
        self.ft = None  # info


def run_window(cfg, data, win, frames, fits: _Fits, forecasters: dict, out: Path) -> dict:
    t0 = time.perf_counter()
    index = data.eligible(win["dates"])
    result = {"window": win, "fits": {}, "reports": {}, "samples": {}}
    models = enabled_models(cfg)
    kronos = cfg["kronos"]
    columns = {}
    if kronos["enabled"]:
        model, tok = model_paths(cfg)
        fc = forecasters.setdefault(
            ("base",), make_forecaster(cfg, model, tok, out / "forecast_cache")
        )
        pred, samp, rep = kronos_forecast(cfg, data, fc, win, index)
        index = index.intersection(pred.index, sort=False).sort_values()  # the common universe
        columns["kronos_zero_shot"] = pred
        result["samples"]["kronos_zero_shot"] = samp.reindex(index)
        result["reports"]["kronos_zero_shot"] = rep
    signals = price_signals(data, cfg, index)
    if "lgb_alpha158" in models:
        import lightgbm as lgb

        if win["index"] % cfg["lightgbm"]["every"] == 0 or fits.lgb is None:
            booster, text, info = fit_lgb(cfg, data, frames, win)
            fits.lgb = (booster, info)
            result["lgb_model"] = text
        booster, info = fits.lgb
        if not isinstance(booster, lgb.Booster):
            booster = lgb.Booster(model_str=booster)
            fits.lgb = (booster, info)
        X = frames["feature"].reindex(index).to_numpy()
        signals["lgb_alpha158"] = booster.predict(X, num_iteration=info["best_iteration"] or None)
        result["fits"]["lgb_alpha158"] = info
    if "kronos_finetuned" in models:
        if win["index"] % cfg["finetune"]["every"] == 0 or fits.ft is None:
            fits.ft = finetune_window(cfg, data, win, out)
        info = fits.ft
        key = ("ft", info["model_path"])
        if key not in forecasters:
            forecasters[key] = make_forecaster(
                cfg, info["model_path"], info["tokenizer_path"], out / "forecast_cache"
            )
        pred, samp, rep = kronos_forecast(cfg, data, forecasters[key], win, index)
        columns["kronos_finetuned"] = pred
        result["samples"]["kronos_finetuned"] = samp.reindex(index)
        result["reports"]["kronos_finetuned"] = rep
        result["fits"]["kronos_finetuned"] = info
    for name, s in columns.items():
        signals[name] = s.reindex(index).to_numpy()
    result["signals"] = signals[[m for m in models if m in signals]]
    result["hist_vol"] = pd.Series(
        hist_vol(data, cfg["baselines"]["hist_vol_window"], index), index=index
    )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def run_walk_forward(config, restart: bool = False, report: bool = True) -> dict:
    """Run (or resume) every window, then write the report; returns a summary dict."""
    import shutil

    import torch
    from tqdm.auto import tqdm

    cfg = load_config(config)
    out = Path(cfg["output_dir"])
    if restart and out.exists():
        shutil.rmtree(out)
    _check_resumable(cfg, out)
    threads = torch.get_num_threads()
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    try:
        t0 = time.perf_counter()
        data = Data(cfg)
        windows = rolling_windows(cfg, data.calendar)
        if not windows:
            raise WalkForwardConfigError("the out-of-sample span holds no decision date")
        frames = alpha158_frames(cfg, data, windows, out) if cfg["lightgbm"]["enabled"] else None
        fits, forecasters, results = _Fits(), {}, []
        computed = 0
        bar = tqdm(windows, desc="walk-forward", unit="window", disable=not cfg["progress"])
        for win in bar:
            path = out / "windows" / f"w{win['index']:03d}_{win['test'][0]:%Y%m%d}.pkl"
            if path.exists():
                with open(path, "rb") as f:
                    res = pickle.load(f)
                _restore_fits(res, fits)
            else:
                res = run_window(cfg, data, win, frames, fits, forecasters, out)
                _atomic_pickle(res, path)
                computed += 1
            results.append(res)
        summary = {
            "output_dir": str(out),
            "windows": len(windows),
            "windows_computed": computed,
            "windows_resumed": len(windows) - computed,
            "seconds_windows": round(time.perf_counter() - t0, 1),
        }
        if report:
            from .walk_forward_report import write_walk_forward_report

            summary.update(write_walk_forward_report(results, data, cfg, out))
        return summary
    finally:
        torch.set_num_threads(threads)


def _restore_fits(res: dict, fits: _Fits) -> None:
    """A resumed window hands its fits on to the windows after it."""
    if "lgb_model" in res:
        fits.lgb = (res["lgb_model"], res["fits"]["lgb_alpha158"])
    if "kronos_finetuned" in res["fits"]:
        fits.ft = res["fits"]["kronos_finetuned"]
