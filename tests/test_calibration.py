"""Forecaster.calibrate and the Calibrator: coverage on a known distribution, no outcome after
the cut, refusals, warnings, and the calibrator as plain data."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import make_panel
from scipy.stats import norm

from kronos_alpha import Forecaster
from kronos_alpha.inference.calibration import (
    LEVELS,
    CalibrationError,
    Calibrator,
    crps_quantiles,
    fit,
    grid_levels,
)
from kronos_alpha.inference.realised import realised_returns


def gaussian_rows(n: int, seed: int, horizon: int = 5):
    """Forecast rows whose outcome is N(0.002, sigma^2) with sigma known from hist_vol: the
    sampled statistics are noise (ret_mean) or under-dispersed and noisy (ret_std, pred_vol:
    sigma / 3 times a lognormal error, as a few samples give), ewma_vol a noisy copy."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.01, 0.05, n)
    dates = pd.bdate_range("2020-01-01", periods=n // 10)
    index = pd.MultiIndex.from_product(
        [dates, [f"I{k}" for k in range(10)]], names=["datetime", "instrument"]
    )
    table = pd.DataFrame(
        {
            "ret_mean": rng.normal(0, 0.01, n),
            "ret_std": sigma / 3 * np.exp(rng.normal(0, 0.6, n)),
            "pred_vol": sigma / 3 / np.sqrt(horizon) * np.exp(rng.normal(0, 0.4, n)),
            "hist_vol": sigma / np.sqrt(horizon),
        },
        index=index,
    )
    y = 0.002 + sigma * rng.standard_normal(n)
    table["ewma_vol"] = sigma / np.sqrt(horizon) * np.exp(rng.normal(0, 0.5, n))
    return table, y, sigma


def test_coverage_and_prob_up_come_out_right_on_a_known_distribution():
    table, y, _ = gaussian_rows(4000, seed=1)
    cal = fit(table, y, 5, {}, "2030-01-01", drift="fitted")  # the drift here is real
    # hist_vol is the only scale that tracks the outcome's spread; the fitted scale may
    # match it only by putting all its weight there
    assert cal.scale in ("hist_vol", "fitted")
    if cal.scale == "fitted":
        b = np.asarray(cal.coef[1:])  # (pred_vol, hist_vol, ewma_vol)
        assert b.sum() == pytest.approx(1, abs=0.1) and b[1] > 0.8
    assert cal.slope == pytest.approx(0, abs=0.15)  # ret_mean is noise: shrunk away
    test, y2, sigma = gaussian_rows(20000, seed=2)
    for level in (0.5, 0.8, 0.9):
        lo, hi = cal.quantiles(test, [(1 - level) / 2, (1 + level) / 2]).T
        assert np.mean((y2 >= lo) & (y2 <= hi)) == pytest.approx(level, abs=0.015)
    truth = 1 - norm.cdf(0, 0.002, sigma)
    out = cal.apply(test.assign(prob_up=0.5, ret_median=0.0, ret_q10=0.0), (0.1,))
    assert np.abs(out["prob_up"] - truth).mean() < 0.02
    assert np.mean((out["prob_up"] - (y2 > 0)) ** 2) < np.mean((0.5 - (y2 > 0)) ** 2)
    pit = cal.cdf(test, y2)
    hist = np.histogram(pit, bins=10, range=(0, 1))[0] / len(pit)
    assert np.abs(hist - 0.1).max() < 0.015  # a flat PIT histogram
    # the calibrated CRPS is close to the true Gaussian's, and far better than the raw spread
    q = cal.quantile_grid(test)
    true_q = 0.002 + sigma[:, None] * norm.ppf(grid_levels())[None, :]
    crps_cal = crps_quantiles(q, y2, grid_levels()).mean()
    assert crps_cal < 1.02 * crps_quantiles(true_q, y2, grid_levels()).mean()
    narrow = fit(table, y, 5, {}, "2030-01-01", scales=("ret_std",), drift="fitted")
    assert crps_cal < crps_quantiles(narrow.quantile_grid(test), y2, grid_levels()).mean()
    # the default drift "zero" centres the distribution on Kronos's (shrunk) mean, not the past's
    zero = fit(table, y, 5, {}, "2030-01-01")
    assert zero.drift == "zero" and np.median(zero.quantiles(test, [0.5])) == pytest.approx(
        0, abs=3e-4
    )
    assert np.median(cal.quantiles(test, [0.5])) == pytest.approx(0.002, abs=1e-3)


def test_fitted_scale_learns_which_volatility_tracks_the_outcome():
    """Outcomes whose spread is sqrt(pred_vol * ewma_vol) (hist_vol is noise): the fitted
    scale is chosen, finds elasticities near (0.5, 0, 0.5), and covers; hist_vol alone is
    far worse."""

    def rows(n, seed):
        rng = np.random.default_rng(seed)
        pv, ev = rng.uniform(0.005, 0.03, (2, n))
        dates = pd.bdate_range("2020-01-01", periods=n // 10)
        index = pd.MultiIndex.from_product([dates, [f"I{k}" for k in range(10)]])
        table = pd.DataFrame(
            {"ret_mean": rng.normal(0, 0.01, n), "ret_std": rng.uniform(0.01, 0.05, n),
             "pred_vol": pv, "hist_vol": rng.uniform(0.005, 0.03, n), "ewma_vol": ev},
            index=index.set_names(["datetime", "instrument"]),
        )  # fmt: skip
        sigma = 1.5 * np.sqrt(pv * ev * 5)
        return table, sigma * rng.standard_t(5, n), sigma

    table, y, _ = rows(6000, seed=3)
    cal = fit(table, y, 5, {}, "2030-01-01")
    assert cal.scale == "fitted"
    b0, *b = cal.coef
    assert b == pytest.approx([0.5, 0, 0.5], abs=0.08)
    test, y2, sigma = rows(20000, seed=4)
    lo, hi = cal.quantiles(test, [0.1, 0.9]).T
    assert np.mean((y2 >= lo) & (y2 <= hi)) == pytest.approx(0.8, abs=0.015)
    assert np.corrcoef(np.log(cal.spread(test)), np.log(sigma))[0, 1] > 0.97
    hv = fit(table, y, 5, {}, "2030-01-01", scales=("hist_vol",))
    levels = grid_levels()
    crps = {c.scale: crps_quantiles(c.quantile_grid(test), y2, levels).mean() for c in (cal, hv)}
    assert crps["fitted"] < 0.96 * crps["hist_vol"]  # measured: 0.944
    # a flat context (zero volatility) gets the floor, not a zero or infinite scale
    flat = test.iloc[:3].assign(hist_vol=0.0, ewma_vol=0.0, pred_vol=[0.0, np.nan, 0.01])
    assert np.all(np.isfinite(cal.spread(flat))) and np.all(cal.spread(flat) >= cal.floor)
    # the coefficients are plain data: JSON round trip, and malformed ones are refused
    data = json.loads(json.dumps(cal.to_dict()))
    assert Calibrator.from_dict(data) == cal and len(data["coef"]) == 4
    for bad in ([0.1, 0.5, -0.2, 0.5], [0.1, 0.5], [0.1, 0.5, float("nan"), 0.5]):
        with pytest.raises(CalibrationError, match="coefficients"):
            Calibrator.from_dict({**data, "coef": bad})
    with pytest.raises(CalibrationError, match="coefficients"):
        Calibrator.from_dict({**hv.to_dict(), "coef": [0.0, 1.0, 0.0, 0.0]})
    with pytest.raises(CalibrationError, match="column 'ewma_vol'"):
        cal.spread(test.drop(columns="ewma_vol"))
    with pytest.raises(CalibrationError, match="positive pred_vol, hist_vol, ewma_vol, got 0"):
        fit(table.assign(pred_vol=np.nan), y, 5, {}, "2030-01-01")
    # flat contexts (suspended, forward-filled: zero volatility, zero return) do not lever
    # the fit: a tenth of the rows planted flat leaves the elasticities where they were
    flat_rows = np.arange(len(y)) % 10 == 0
    planted = table.copy()
    planted.loc[flat_rows, ["hist_vol", "ewma_vol"]] = 0.0
    y_flat = np.where(flat_rows, 0.0, y)
    again = fit(planted, y_flat, 5, {}, "2030-01-01")
    assert again.coef[1:] == pytest.approx(cal.coef[1:], abs=0.03)  # left in: off by 0.08


def test_fit_refuses_too_few_pairs_and_unknown_scales():
    table, y, _ = gaussian_rows(30, seed=0)
    with pytest.raises(CalibrationError, match="at least 40"):
        fit(table, y, 5, {}, "2030-01-01")
    table, y, _ = gaussian_rows(400, seed=0)
    with pytest.raises(ValueError, match="scale must be one of"):
        fit(table, y, 5, {}, "2030-01-01", scales=("vix",))


@pytest.fixture
def forecaster(tiny_pair):
    m, t = tiny_pair
    return Forecaster(
        m, t, lookback=32, horizon=3, sample_count=4, calendar="business", progress=False
    )


def panel_and_times(n_bars: int = 260):
    panel = make_panel(4, n_bars, sigma=0.015)
    return panel, panel["S0"].index


def test_calibration_reads_nothing_after_its_last_outcome_bar(forecaster):
    panel, times = panel_and_times()
    dates = times[40:160:3]
    a = forecaster.calibrate(panel, dates).calibrator_
    end = pd.Timestamp(a.realised_end)
    assert end == times[times.get_loc(dates[-1]) + 3]
    planted = {}
    for name, df in panel.items():  # garbage strictly after the last outcome bar
        df = df.copy()
        after = df.index > end
        df.loc[after, ["open", "high", "low", "close"]] *= 50.0
        df.loc[after, "volume"] = 1.0
        planted[name] = df
    b = forecaster.calibrate(planted, dates).calibrator_
    assert a.to_dict() == b.to_dict()
    # the outcome bar itself is read: changing it changes the fit (the test above can fail)
    moved = {k: v.copy() for k, v in panel.items()}
    moved["S1"].loc[end, ["open", "high", "low", "close"]] *= 1.3
    c = forecaster.calibrate(moved, dates).calibrator_
    assert c.to_dict() != a.to_dict()


def test_dates_without_a_realised_horizon_are_refused_by_name(forecaster):
    panel, times = panel_and_times()
    dates = list(times[100:120]) + [times[-3], times[-2]]
    with pytest.raises(CalibrationError, match=str(times[-3].date())):
        forecaster.calibrate(panel, dates)
    assert forecaster.calibrator_ is None


def test_realised_returns_follow_the_panel_bar_times():
    panel, times = panel_and_times(50)
    idx = pd.MultiIndex.from_tuples(
        [(times[10], "S2"), (times[48], "S2")], names=["datetime", "instrument"]
    )
    r = realised_returns(panel, idx, 1)
    c = panel["S2"]["close"]
    assert r[0] == c.iloc[11] / c.iloc[10] - 1
    assert r[1] == c.iloc[49] / c.iloc[48] - 1  # t + 1 is the last bar: realised
    assert np.isnan(realised_returns(panel, idx, 2)[1])  # t + 2 is not in the panel
    gappy = {k: v.copy() for k, v in panel.items()}
    gappy["S2"] = gappy["S2"].drop(times[11])  # no bar at t + 1: unrealised, not shifted
    assert np.isnan(realised_returns(gappy, idx, 1)[0])


def test_calibrated_forecast_keeps_raw_columns_and_warns_inside_the_span(forecaster):
    panel, times = panel_and_times()
    raw = forecaster.forecast(panel, times[200:240])
    forecaster.calibrate(panel, times[40:160:2])
    cal = forecaster.calibrator_
    y = realised_returns(panel, forecaster.forecast(panel, times[40:160:2]).index, 3)
    assert forecaster.calibration_report_["up_rate"] == pytest.approx(np.mean(y > 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # out of sample: no warning at all
        out = forecaster.forecast(panel, times[200:240])
    assert forecaster.report["calibrated"] is True
    for c in ("ret_q10", "ret_q50", "ret_q90", "ret_median", "ret_std", "prob_up"):
        np.testing.assert_array_equal(out[f"raw_{c}"], raw[c])
    np.testing.assert_array_equal(out["pred_return"], raw["pred_return"])
    np.testing.assert_allclose(out["ret_q90"], cal.quantiles(raw, [0.9])[:, 0])
    assert (out["ret_q90"] - out["ret_q10"]).mean() > (raw["ret_q90"] - raw["ret_q10"]).mean()
    assert forecaster.calibrated_returns_.shape == (len(out), 99)
    with pytest.warns(UserWarning, match="inside the calibration span"):
        forecaster.forecast(panel, times[150:152])
    with pytest.raises(CalibrationError, match="horizon 3"):
        forecaster.with_settings(forecaster.settings.replace(horizon=4)).forecast(
            panel, times[200:202]
        )
    with pytest.warns(UserWarning, match="fitted under"):
        forecaster.with_settings(forecaster.settings.replace(T=0.5)).forecast(panel, times[200:202])


def test_calibrator_round_trips_through_json_pickle_and_set_calibrator(forecaster, tmp_path):
    panel, times = panel_and_times()
    forecaster.calibrate(panel, times[40:160:2])
    cal = forecaster.calibrator_
    path = cal.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    assert data["format"] == "kronos-alpha calibrator" and len(data["z"]) == len(LEVELS)
    assert Calibrator.load(path) == cal
    again = pickle.loads(pickle.dumps(forecaster))
    assert again.calibrator_ == cal
    fresh = Forecaster(forecaster.model, forecaster.tokenizer, forecaster.settings).set_calibrator(
        path
    )
    pd.testing.assert_frame_equal(
        fresh.forecast(panel, times[200:210]), forecaster.forecast(panel, times[200:210])
    )
    assert fresh.set_calibrator(None).forecast(panel, times[200:202]).filter(like="raw_").empty
    data["z"] = data["z"][::-1]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="sorted"):
        Calibrator.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(CalibrationError, match="not a kronos-alpha calibrator"):
        Calibrator.load(tmp_path / "other.json")
    with pytest.raises(CalibrationError, match="not found"):
        Calibrator.load(tmp_path / "missing.json")


def test_tuning_chooses_from_the_grid_and_keeps_the_choice(forecaster):
    panel, times = panel_and_times()
    grid = ((0.5, 1.0), (1.0, 0.9))
    forecaster.calibrate(panel, times[40:160:3], tune=True, grid=grid)
    rep = forecaster.calibration_report_
    scores = rep["heldout_crps_by_T_top_p"]
    assert set(scores) == {"T=0.5, top_p=1.0", "T=1.0, top_p=0.9"}
    best = min(scores, key=scores.get)
    assert best == f"T={forecaster.T}, top_p={forecaster.top_p}"
    assert forecaster.calibrator_.settings["T"] == forecaster.T


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"dates": None}, CalibrationError, "needs past decision dates"),
        ({"dates": []}, CalibrationError, "needs past decision dates"),
        ({"scales": ("vix",)}, ValueError, "scale must be one of"),
        ({"scales": "hist_vol"}, ValueError, "non-empty sequence"),
        ({"drift": "up"}, ValueError, "drift must be one of"),
        ({"tune": True, "grid": [(1.0, 0.9), (-1.0, 0.9)]}, ValueError, "T must be >= 0"),
        ({"tune": True, "grid": [(1.0, 1.5)]}, ValueError, "top_p must be in"),
    ],
)
def test_bad_calibration_arguments_are_named_before_anything_is_forecast(
    forecaster, monkeypatch, kwargs, error, words
):
    panel, times = panel_and_times()
    kwargs = {"dates": times[40:160:2], **kwargs}

    def no_forecast(*a, **k):
        raise AssertionError("forecast ran before the arguments were checked")

    monkeypatch.setattr(Forecaster, "forecast", no_forecast)
    with pytest.raises(error, match=words):
        forecaster.calibrate(panel, **kwargs)
    assert forecaster.calibrator_ is None
