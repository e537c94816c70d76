"""Forecaster.embed: the hidden-state features keep forecast()'s guarantees."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_panel

from kronos_alpha import Forecaster


@pytest.fixture
def forecaster(tiny_pair):
    m, t = tiny_pair
    return Forecaster(m, t, lookback=24, calendar="business", progress=False)


def test_embedding_is_the_models_hidden_state_at_t_and_its_mean(forecaster, tiny_pair):
    panel = make_panel(2, 80)
    t = panel["S0"].index[60]
    emb = forecaster.embed(panel, [t])
    d = tiny_pair[0].d_model
    assert emb.shape == (2, 2 * d) and emb.dtypes.eq(np.float32).all()
    assert list(emb.columns[:2]) == ["emb_last_0", "emb_last_1"]
    assert emb.columns[d] == "emb_mean_0"
    # by hand, through the model: normalise, tokenise, one pass, last and mean state
    from kronos_alpha.inference.data import normalize, scaler_stats, time_features, unit_scale

    model, tok = tiny_pair
    df = panel["S1"].loc[:t].iloc[-24:]
    ohlcv = df[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)
    amount = ohlcv[:, 4] * ohlcv[:, :4].mean(1)  # the boundary's rule for a missing amount
    bars = np.column_stack([ohlcv, amount]).astype(np.float32)
    x, _ = unit_scale(bars[None])
    mean, std = scaler_stats(x)
    with torch.no_grad():
        s1, s2 = tok.encode(torch.as_tensor(normalize(x, mean, std, 5.0)), half=True)
        h, _ = model.hidden(s1, s2, torch.as_tensor(time_features(df.index))[None])
    row = emb.loc[(t, "S1")].to_numpy()
    np.testing.assert_allclose(row[:d], h[0, -1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(row[d:], h[0].mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_no_look_ahead_and_batch_independence(forecaster):
    panel = make_panel(3, 120)
    times = panel["S0"].index
    dates = times[60:70]
    full = forecaster.embed(panel, dates)
    for t in (dates[0], dates[5]):
        cut = {k: v.loc[:t] for k, v in panel.items()}
        planted = {k: v.copy() for k, v in panel.items()}
        for v in planted.values():
            v.loc[v.index > t, ["open", "high", "low", "close"]] *= 3.0
        for other in (cut, planted):
            got = forecaster.embed(other, [t])
            np.testing.assert_array_equal(got.to_numpy(), full.loc[[t]].to_numpy())
    one = forecaster.with_settings(forecaster.settings.replace(batch_size=1)).embed(panel, dates)
    np.testing.assert_allclose(one.to_numpy(), full.to_numpy(), rtol=1e-5, atol=1e-6)
    alone = forecaster.embed({"S2": panel["S2"]}, dates)
    np.testing.assert_allclose(alone.to_numpy(), full.xs("S2", level=1).to_numpy(), atol=1e-6)
    again = forecaster.with_settings(forecaster.settings.replace(seed=7)).embed(panel, dates)
    np.testing.assert_array_equal(again.to_numpy(), full.to_numpy())  # nothing is sampled


def test_skips_are_counted_and_the_cache_is_used(forecaster, tmp_path):
    panel = make_panel(2, 60)
    times = panel["S0"].index
    short = {"S0": panel["S0"], "S1": panel["S1"].iloc[40:]}
    emb = forecaster.embed(short, times[50:55])
    assert forecaster.report["skipped"]["short_history"] == 5
    assert set(emb.index.get_level_values("instrument")) == {"S0"}
    cached = forecaster.with_settings(
        forecaster.settings.replace(cache_dir=str(tmp_path), seed=None)
    )
    first = cached.embed(panel, times[30:40])
    assert cached.report["from_cache"] == 0
    second = cached.embed(panel, times[30:40])
    assert cached.report["from_cache"] == 20 and cached.report["computed"] == 0
    pd.testing.assert_frame_equal(first, second)


def test_kronos_features_columns_pca_rows_and_errors(forecaster):
    from kronos_alpha.strategies.kronos_features import fit_pca, kronos_features

    from kronos_alpha.inference.settings import SettingsError

    panel = make_panel(3, 120)
    times = panel["S0"].index
    dates, fit_end = times[60:80], times[69]
    kf = kronos_features(forecaster, panel, dates, components=2, fit_end=fit_end)
    table = forecaster.forecast(panel, dates)
    assert list(kf.frame.columns[:3]) == ["KRONOS_PRED_RETURN", "KRONOS_RET_Q10", "KRONOS_RET_Q50"]
    np.testing.assert_array_equal(kf.frame["KRONOS_PATH_MAX"], table["path_max"])
    assert {"KRONOS_PC1", "KRONOS_PC2"} <= set(kf.frame) and np.isfinite(kf.frame).all().all()
    assert kf.pca.fit_rows == 30 and kf.pca.fit_end == str(fit_end)  # 10 dates x 3 names
    # rows after fit_end do not shape the PCA: planting garbage there leaves it identical
    emb = forecaster.embed(panel, dates)
    planted = emb.copy()
    planted[planted.index.get_level_values("datetime") > fit_end] = 1e3
    assert fit_pca(planted, 2, fit_end) == kf.pca
    with pytest.raises(SettingsError, match="fit_end"):
        kronos_features(forecaster, panel, dates, components=2)
    with pytest.raises(SettingsError, match="components"):
        kronos_features(forecaster, panel, dates, components=-1)
    with pytest.raises(SettingsError, match="more than 5 rows"):
        fit_pca(emb, 5, times[60])
