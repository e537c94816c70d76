"""lgb_alpha158_kronos on synthetic data with a tiny model: it fits and predicts, its Kronos
feature rows and embedding PCA see no row after what they may see (a planted future), and its
principal components are the ones ``kronos_features`` gives with the same PCA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_panel
from kronos_alpha.strategies.kronos_features import PCAState, kronos_features
from kronos_alpha.strategies.walk_forward import load_config
from kronos_alpha.strategies.walk_forward.baselines import load_booster
from kronos_alpha.strategies.walk_forward.data import Data
from kronos_alpha.strategies.walk_forward.stacked import (
    KronosRows,
    fit_lgb_kronos,
    fit_lgb_sparse,
    predict_lgb_kronos,
    train_dates,
)

from kronos_alpha import Forecaster

H = 5


def config(start) -> dict:
    return load_config(
        {
            "data": {"provider_uri": "x", "start": str(start.date()), "end": "2030-01-01"},
            "windows": {"horizon": H, "decision_every": 5},
            "lightgbm": {
                "num_boost_round": 30,
                "early_stopping_rounds": 5,
                "params": {"lambda_l1": 0.0, "lambda_l2": 1.0, "num_leaves": 7,
                           "min_data_in_leaf": 5, "learning_rate": 0.1},
                "kronos_features": {"components": 2},
            },
            "kronos": {"model": "m", "tokenizer": "t", "lookback": 32},
        }
    )  # fmt: skip


def frames_for(data: Data) -> dict:
    """Alpha158 stand-ins: three backward-looking features and the z-scored 5-bar label."""
    close = data.panel["close"].unstack("instrument")
    ret = close.pct_change()
    feats = {"MOM5": close / close.shift(5) - 1, "VOL10": ret.rolling(10).std(), "RET1": ret}
    feature = pd.concat({k: v.stack() for k, v in feats.items()}, axis=1)
    label = close.shift(-H) / close - 1
    label = label.sub(label.mean(axis=1), axis=0).div(label.std(axis=1), axis=0).stack()
    feature.index.names = label.index.names = ["datetime", "instrument"]
    return {"feature": feature.sort_index(), "label": label.dropna().sort_index()}


def window(cal) -> dict:
    return {
        "index": 0,
        "train": (cal[100], cal[229]),
        "valid": (cal[236], cal[293]),
        "test": (cal[300], cal[319]),
        "dates": list(cal[300:320:5]),
    }


@pytest.fixture
def forecaster(tiny_pair):
    m, t = tiny_pair
    return Forecaster(m, t, lookback=32, horizon=H, sample_count=3, seed=0,
                      calendar="business", progress=False)  # fmt: skip


def planted(frames: dict, after, factor: float) -> dict:
    out = {}
    for name, df in frames.items():
        df = df.copy()
        df.loc[df.index >= after, ["open", "high", "low", "close"]] *= factor
        out[name] = df
    return out


def fit(cfg, bars: dict, forecaster, win):
    data = Data.from_frames(bars)
    frames = frames_for(data)
    rows = KronosRows(cfg, data, forecaster)
    text, info = fit_lgb_kronos(cfg, data, frames, win, rows)
    return data, frames, rows, text, info


def test_lgb_alpha158_kronos_fits_predicts_and_sees_no_future(forecaster):
    bars = make_panel(5, 340, sigma=0.015, start="2020-01-01")
    cal = Data.from_frames(bars).calendar
    cfg = config(cal[300])
    win = window(cal)
    data, frames, rows, text, info = fit(cfg, bars, forecaster, win)
    dates = train_dates(cfg, data, win)
    assert all((cal.get_loc(t) - 300) % 5 == 0 for t in dates)  # the decision grid's phase
    assert dates[0] >= win["train"][0] and dates[-1] <= win["valid"][1]
    assert "KRONOS_PRED_RETURN" in info["kronos_columns"] and "KRONOS_PC2" in info["kronos_columns"]
    assert info["features"] == 3 + len(info["kronos_columns"])
    # the PCA saw the train rows only: the embedding rows up to the train end
    pca = info["pca"]
    emb = rows.embedding(dates)
    n_train = int((emb.index.get_level_values("datetime") <= win["train"][1]).sum())
    assert pca["fit_rows"] == n_train < len(emb)
    assert pd.Timestamp(pca["fit_end"]) == win["train"][1]
    # it predicts the test rows; the PCs are kronos_features' with the same PCA
    index = pd.MultiIndex.from_product([win["dates"], data.names], names=["datetime", "instrument"])
    scores = predict_lgb_kronos(load_booster(text), info, frames, rows, win["dates"], index)
    assert scores.shape == (len(index),) and np.isfinite(scores).all()
    panel = data.cut(win["dates"][-1])
    same = kronos_features(forecaster, panel, win["dates"], components=2, pca=PCAState(**pca))
    mine = rows.frame(win["dates"], PCAState(**pca))
    pd.testing.assert_frame_equal(
        mine.sort_index(), same.frame.sort_index()[mine.columns], check_exact=False, rtol=1e-6
    )

    # the ablation: Alpha158 alone on the same rows, with the same penalties (scaled by 1/5)
    text_s, info_s = fit_lgb_sparse(cfg, data, frames, win, rows)
    assert info_s["train_rows"] == info["train_rows"] and info_s["features"] == 3
    assert info_s["lambda_l2"] == info["lambda_l2"] == pytest.approx(1.0 / 5)

    # planted future 1: prices change from the test start on -> the whole fit is identical
    # (valid labels end horizon + 1 bars before the test)
    _, _, _, text2, info2 = fit(cfg, planted(bars, cal[300], 3.0), forecaster, win)
    assert text2 == text and info2 == info
    # planted future 2: prices change after the train end -> the PCA is identical, while the
    # valid rows' features (and so the fit) change: the test can fail
    _, _, rows3, text3, info3 = fit(cfg, planted(bars, cal[230], 3.0), forecaster, win)
    assert info3["pca"] == pca
    valid = [t for t in dates if t > win["train"][1]]
    a, b = rows.frame(valid, PCAState(**pca)), rows3.frame(valid, PCAState(**pca))
    assert not np.allclose(a["KRONOS_PRED_VOL"], b["KRONOS_PRED_VOL"])
    train = [t for t in dates if t <= win["train"][1]]
    pd.testing.assert_frame_equal(rows.frame(train, PCAState(**pca)),
                                  rows3.frame(train, PCAState(**pca)))  # fmt: skip


def test_feature_rows_are_computed_once_per_date(forecaster, monkeypatch):
    bars = make_panel(3, 200, sigma=0.015)
    data = Data.from_frames(bars)
    cfg = config(data.calendar[150])
    rows = KronosRows(cfg, data, forecaster)
    calls = []
    original = forecaster.forecast

    def counted(panel, dates=None):
        calls.append(len(dates))
        return original(panel, dates)

    monkeypatch.setattr(forecaster, "forecast", counted)
    dates = list(data.calendar[100:150:5])
    first = rows.frame(dates, PCAState((0.0,) * 64, ((1.0,) * 64,), (1.0,), 1, "x"))
    again = rows.frame(dates[3:], PCAState((0.0,) * 64, ((1.0,) * 64,), (1.0,), 1, "x"))
    assert calls == [len(dates)]  # the second ask reads the kept rows
    pd.testing.assert_frame_equal(again, first.loc[dates[3] :])
