"""The baselines: price signals, the historical-volatility Gaussian, LightGBM on Alpha158."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.files import write_parquet

from .data import Data

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


# -- price signals and volatility ----------------------------------------------------------
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
    from ..factors import daily_returns

    ret = daily_returns(data.panel).reindex(data.calendar)
    sd = ret.rolling(window, min_periods=max(2, window * 2 // 3)).std()
    return _pick(sd, index)


# -- LightGBM on Alpha158 ----------------------------------------------------------------------
@functools.cache
def alpha158_class():
    """Alpha158Horizon, built on first use (importing Qlib's handlers is slow)."""
    from ..alpha158 import Alpha158Checked

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
        return alpha158_class()
    raise AttributeError(name)


def alpha158_frames(cfg: dict, data: Data, windows: list[dict], out: Path) -> dict:
    """Features (every row) and CS-z-scored labels (rows with a label), cached as parquet in
    ``out/alpha158``."""
    folder = Path(out) / "alpha158"
    paths = {"feature": folder / "feature.parquet", "label": folder / "label.parquet"}
    if all(p.exists() for p in paths.values()):
        return _read_frames(paths)
    from qlib.data.dataset.handler import DataHandlerLP

    handler = alpha158_class()(
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
    write_parquet(paths["label"], label.to_frame())
    write_parquet(paths["feature"], feature)
    # read back: a fresh run and a resumed one fit on the very same frames
    return _read_frames(paths)


def _read_frames(paths: dict) -> dict:
    feature = pd.read_parquet(paths["feature"])
    label = pd.read_parquet(paths["label"]).iloc[:, 0]
    return {"feature": feature, "label": label, "n_features": feature.shape[1]}


def _member_rows(data: Data, index: pd.MultiIndex) -> np.ndarray:
    m = data.members.stack()
    m.index.names = ["datetime", "instrument"]
    return m.reindex(index).fillna(False).to_numpy(dtype=bool)


def design(feature: pd.DataFrame, index: pd.MultiIndex, extra: pd.DataFrame | None = None):
    """The model's input rows: Alpha158 columns, then the ``extra`` columns (Kronos features)."""
    X = feature.reindex(index)
    if extra is not None:
        X = pd.concat([X, extra.reindex(index)], axis=1)
    return X


def fit_lgb(
    cfg: dict,
    data: Data,
    frames: dict,
    win: dict,
    extra: pd.DataFrame | None = None,
    params: dict | None = None,
) -> tuple[str, dict]:
    """LightGBM fitted on the train segment's member rows, early-stopped on the valid segment:
    (the booster's model text, a summary of the fit). With ``extra`` (more feature columns by
    (datetime, instrument), possibly none) only the rows it indexes are used, and its columns
    join Alpha158. ``params``: the LightGBM parameters (default: Qlib's + lightgbm.params)."""
    import lightgbm as lgb

    lg = cfg["lightgbm"]
    feature, label = frames["feature"], frames["label"]
    sets, seen = [], hashlib.sha256()
    for seg in ("train", "valid"):
        a, b = win[seg]
        y = label.loc[a:b]
        y = y[_member_rows(data, y.index)]
        if extra is not None:
            y = y[y.index.isin(extra.index)]
        X = design(feature, y.index, extra)
        seen.update(y.to_numpy().tobytes() + X.to_numpy().tobytes())
        sets.append(lgb.Dataset(X.to_numpy(), label=y.to_numpy(), free_raw_data=True))
    params = {**(params or lgb_params(cfg)), "num_threads": cfg["num_threads"]}
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
        "features": int(X.shape[1]),
        "lambda_l1": float(params.get("lambda_l1", 0.0)),
        "lambda_l2": float(params.get("lambda_l2", 0.0)),
        "train_rows": int(sets[0].num_data()),
        "valid_rows": int(sets[1].num_data()),
        "train_label_end": str(win["train"][1].date()),
        "digest": hashlib.sha256(text.encode()).hexdigest()[:16],  # the trees
        "data_digest": seen.hexdigest()[:16],  # every feature and label it saw
    }
    return text, info


def lgb_params(cfg: dict) -> dict:
    """Qlib's published parameters with the config's ``lightgbm.params`` over them."""
    return {**LGB_PARAMS, **cfg["lightgbm"]["params"]}


def load_booster(text: str):
    """A booster from its own model text (``Booster.model_to_string``): no pickle."""
    import lightgbm as lgb

    return lgb.Booster(model_str=text)
