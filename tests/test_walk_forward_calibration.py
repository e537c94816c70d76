"""The walk-forward's rolling calibration and its report section, on synthetic data with a tiny
model: calibration dates end horizon + 1 bars before the test, a planted future leaves the
calibrator identical, leaky cuts are refused; coverage, Brier, PIT and reliability come out
right on distributions whose truth is known."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import make_panel
from kronos_alpha.strategies import forecast_calibration as fcal
from kronos_alpha.strategies.walk_forward import LookAheadError, load_config
from kronos_alpha.strategies.walk_forward.calibration import calibrate_window
from kronos_alpha.strategies.walk_forward.data import Data
from kronos_alpha.strategies.walk_forward.windows import calibration_dates, grid_dates
from scipy.stats import norm

from kronos_alpha import Forecaster

H = 5


def synth_data(frames: dict) -> Data:
    """The walk-forward's Data on synthetic frames; the last name joins the index at bar 300."""
    data = Data.from_frames(frames)
    data.members.iloc[:300, -1] = False
    return data


def config(start, days: int = 60) -> dict:
    return load_config(
        {
            "data": {"provider_uri": "x", "start": str(start.date()), "end": "2030-01-01"},
            "windows": {"horizon": H, "decision_every": 5},
            "kronos": {"model": "m", "tokenizer": "t", "lookback": 32,
                       "calibration": {"days": days}},
        }
    )  # fmt: skip


def window(cal: pd.DatetimeIndex, t0: int, index: int = 0) -> dict:
    return {"index": index, "test": (cal[t0], cal[t0 + 19]), "dates": list(cal[t0 : t0 + 20 : 5])}


@pytest.fixture
def forecaster(tiny_pair):
    m, t = tiny_pair
    return Forecaster(m, t, lookback=32, horizon=H, sample_count=4, seed=0,
                      calendar="business", progress=False)  # fmt: skip


def test_calibration_dates_end_a_horizon_before_the_test_on_the_decision_grid():
    cal = pd.bdate_range("2020-01-01", periods=400)
    t0 = 300
    cfg = config(cal[280], days=60)
    dates = calibration_dates(cfg, cal, window(cal, t0))
    pos = [cal.get_loc(t) for t in dates]
    assert all((p - 280) % 5 == 0 for p in pos)  # the test grid's phase, extended backwards
    assert max(pos) + H < t0 and max(pos) + H + 5 >= t0  # outcomes before the test, the latest
    assert min(pos) > t0 - (H + 1) - 60  # within the last 60 bars
    assert len(dates) == 12
    assert grid_dates(cfg, cal, cal[300], cal[319]) == window(cal, t0)["dates"]
    # a fine-tuned model: only dates after the last bar it trained on
    late = calibration_dates(cfg, cal, window(cal, t0), after=cal[270])
    assert late == [t for t in dates if t > cal[270]] and len(late) < len(dates)
    assert calibration_dates(cfg, cal, window(cal, t0), after=cal[299]) == []


def test_rolling_calibration_reads_no_outcome_at_or_after_the_test_start(forecaster):
    frames = make_panel(4, 360, sigma=0.015, start="2020-01-01")
    data = synth_data(frames)
    cal = data.calendar
    t0 = 300
    cfg = config(cal[280], days=120)
    win = window(cal, t0)
    fc, info = calibrate_window(cfg, data, forecaster, win)
    assert forecaster.calibrator_ is None  # the run's forecaster stays raw
    end = pd.Timestamp(fc.calibrator_.realised_end)
    assert end < cal[t0] and info["realised_end"] == str(end.date())
    assert info["dates"] == len(calibration_dates(cfg, cal, win)) and info["pairs"] >= 40
    # the last name, not a member at any calibration date, is left out
    assert info["pairs"] == 3 * info["dates"]

    def planted(after: pd.Timestamp, factor: float) -> Data:
        out = {}
        for name, df in frames.items():
            df = df.copy()
            df.loc[df.index >= after, ["open", "high", "low", "close"]] *= factor
            out[name] = df
        return synth_data(out)

    # garbage from the test start on, and between the last outcome bar and the test start
    for after in (cal[t0], cal[cal.get_loc(end) + 1]):
        fc2, info2 = calibrate_window(cfg, planted(after, 3.0), forecaster, win)
        assert fc2.calibrator_.to_dict() == fc.calibrator_.to_dict()
        assert info2 == info
    # the last outcome bar itself is read: changing it changes the calibrator (can fail)
    moved = calibrate_window(cfg, planted(end, 1.2), forecaster, win)[0]
    assert moved.calibrator_.to_dict() != fc.calibrator_.to_dict()
    # the calibrated copy forecasts the test out of sample: no in-sample warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*inside the calibration span.*")
        table = fc.forecast(data.cut(win["dates"][-1]), win["dates"])
    assert {"raw_prob_up", "raw_ret_q10"} <= set(table.columns)
    assert fc.calibrated_returns_.shape == (len(table), 99)


def test_a_leaky_calibration_panel_is_refused(forecaster):
    frames = make_panel(3, 360, sigma=0.015)
    data = synth_data(frames)
    cal = data.calendar
    cfg = config(cal[280], days=120)

    class Leaky(Data):
        def cut(self, end, start=None, instruments=None):  # ignores its end
            return super().cut(self.calendar[-1], start, instruments)

    with pytest.raises(LookAheadError, match="reaches"):
        calibrate_window(cfg, Leaky.from_frames(frames), forecaster, window(cal, 300))
    # a window whose past holds no calibration date is skipped, not calibrated on nothing
    short = config(cal[0], days=60)
    fc, info = calibrate_window(short, data, forecaster, window(cal, 4))
    assert fc is None and "no calibration date" in info["skipped"]


# -- the report section ------------------------------------------------------------------------
def known_case(n: int = 20000, seed: int = 0):
    """Outcomes N(mu, sigma^2) with mu, sigma known per row; a calibrated 99-quantile model, a
    too-narrow 8-sample model and the zero-mean Gaussian."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 0.01, n)
    sigma = rng.uniform(0.01, 0.05, n)
    y = mu + sigma * rng.standard_normal(n)
    levels = (np.arange(99) + 0.5) / 99
    grid = mu[:, None] + sigma[:, None] * norm.ppf(levels)[None, :]
    narrow = mu[:, None] + 0.3 * sigma[:, None] * rng.standard_normal((n, 8))
    dists = {
        "calibrated": fcal.Dist("ensemble", prob_up=1 - norm.cdf(0, mu, sigma), members=grid,
                                method="hazen"),
        "narrow": fcal.Dist("ensemble", prob_up=(narrow > 0).mean(axis=1), members=narrow),
        fcal.GAUSSIAN: fcal.Dist("gaussian", prob_up=np.full(n, 0.5), mu=np.zeros(n), sigma=sigma),
    }  # fmt: skip
    return dists, y


def test_calibration_table_on_a_known_distribution():
    dists, y = known_case()
    past = np.full(len(y), 0.5)
    table = fcal.calibration_table(dists, y, past)
    for a in (50, 80, 90):
        assert table.loc["calibrated", f"coverage{a}"] == pytest.approx(a / 100, abs=0.012)
        assert table.loc["narrow", f"coverage{a}"] < a / 100 - 0.2
    assert table.loc["calibrated", "CRPS_skill_vs_histvol"] > 0  # it knows mu: beats N(0, s)
    assert table.loc["narrow", "CRPS"] > table.loc["calibrated", "CRPS"]
    up = (y > 0).astype(float)
    assert table.loc[fcal.GAUSSIAN, "Brier"] == pytest.approx(0.25)
    assert table.loc["calibrated", "Brier"] < table.loc[fcal.GAUSSIAN, "Brier"]
    freq = up.mean()
    base = "base rate: test-period frequency (in-sample)"
    assert table.loc[base, "Brier"] == pytest.approx(freq * (1 - freq))
    assert table.loc["base rate: past frequency known at t", "Brier"] == pytest.approx(0.25)
    assert "CRPS_diff_t_NW" not in table  # no dates given
    # with dates: the NW t of the per-date CRPS difference; the Gaussian is its own base
    dates = np.repeat(np.arange(200), len(y) // 200)
    table = fcal.calibration_table(dists, y, past, dates=dates, lag=4)
    assert table.loc["calibrated", "CRPS_diff_t_NW"] < -5  # knows mu: clearly better
    assert table.loc["narrow", "CRPS_diff_t_NW"] > 5  # too narrow: clearly worse
    assert np.isnan(table.loc[fcal.GAUSSIAN, "CRPS_diff_t_NW"])
    twin = {"same": dists[fcal.GAUSSIAN], fcal.GAUSSIAN: dists[fcal.GAUSSIAN]}
    same = fcal.calibration_table(twin, y, dates=dates).loc["same", "CRPS_diff_t_NW"]
    assert np.isnan(same)  # no difference on any date: no t-statistic, not a fake 0 or inf
    # the PIT: flat when calibrated, U-shaped when too narrow, for samples as for quantiles
    pit = fcal.pit_histograms(dists, y)
    assert np.abs(pit["calibrated"] - 1).max() < 0.1
    assert pit["narrow"].iloc[[0, -1]].min() > 2.5 and pit["narrow"].iloc[4:6].max() < 0.5
    rel = fcal.reliability(dists, y)
    cal = rel[rel["model"] == "calibrated"]
    assert np.average(np.abs(cal["realised"] - cal["predicted"]), weights=cal["rows"]) < 0.02
    assert rel[rel["model"] == fcal.GAUSSIAN]["rows"].sum() == len(y)


def test_a_calibrated_ensemble_of_few_members_has_a_flat_randomised_pit():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30000, 5))
    y = rng.standard_normal(30000)
    d = fcal.Dist("ensemble", members=x)
    pit = fcal.pit_histograms({"five": d}, y)["five"]
    assert np.abs(pit - 1).max() < 0.06  # rank / m would pile 1/6 of the rows at 0 and at 1
    # quantile columns: intervals only where the columns are, PIT through their CDF
    levels = np.array([0.1, 0.5, 0.9])
    q = fcal.Dist("quantiles", members=np.tile(norm.ppf(levels), (30000, 1)), levels=levels)
    assert q.interval(0.5) is None and q.interval(0.8) is not None
    table = fcal.calibration_table({"q": q}, y, base=None, levels=levels)
    assert table.loc["q", "coverage80"] == pytest.approx(0.8, abs=0.01)
    assert np.isnan(table.loc["q", "coverage50"])
    qp = fcal.pit_histograms({"q": q}, y)["q"]
    assert np.abs(qp - 1).max() < 0.06


def test_past_up_rate_counts_only_realised_outcomes():
    dates = pd.bdate_range("2021-01-04", periods=12)
    fwd = pd.DataFrame({"A": np.arange(12) - 5.5, "B": 1.0}, index=dates)  # A > 0 from bar 6
    fwd.iloc[3, 1] = np.nan
    rate = fcal.past_up_rate(fwd, horizon=2, days=3)
    # at bar p: decision dates p-5 .. p-3 (outcomes at <= p - 1)
    assert rate.iloc[:3].isna().all()
    assert rate.iloc[3] == pytest.approx(1 / 2)  # bar 0: A down, B up
    assert rate.iloc[6] == pytest.approx(2 / 5)  # bars 1..3: A down x3, B up x2 (one NaN)
    assert rate.iloc[11] == pytest.approx(1.0)  # bars 6..8: everything up
    eligible = pd.DataFrame(True, index=dates, columns=["A", "B"]).assign(B=False)
    assert fcal.past_up_rate(fwd, 2, 3, eligible).iloc[11] == pytest.approx(1.0)
    assert fcal.past_up_rate(fwd, 2, 3, eligible).iloc[6] == pytest.approx(0.0)


def test_evaluate_report_scores_a_calibrated_forecast_table(tmp_path):
    """A forecast table with calibrated ret_qNN / prob_up and their raw_ twins: the evaluate
    report gets the calibration section, and the scores tell calibrated from raw."""
    from kronos_alpha.strategies import evaluate, topk_weights, write_report

    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2021-01-04", periods=260)
    names = [f"N{i}" for i in range(20)]
    idx = pd.MultiIndex.from_product([dates[::5], names], names=["datetime", "instrument"])
    n = len(idx)
    sigma = rng.uniform(0.02, 0.06, n)
    mu = rng.normal(0, 0.01, n)
    y = pd.Series(mu + sigma * rng.standard_normal(n), index=idx)
    levels = (0.1, 0.5, 0.9)
    table = pd.DataFrame({"pred_return": mu, "hist_vol": sigma / np.sqrt(H),
                          "prob_up": 1 - norm.cdf(0, mu, sigma),
                          "raw_prob_up": (mu > 0).astype(float)}, index=idx)  # fmt: skip
    for q in levels:
        table[f"ret_q{q * 100:g}"] = mu + sigma * norm.ppf(q)
        table[f"raw_ret_q{q * 100:g}"] = mu + 0.2 * sigma * norm.ppf(q)
    realised = y.unstack("instrument").reindex(dates)
    section = fcal.from_forecast_table(table, realised, H, past=realised)
    t = section["table"]
    assert list(t.index[:3]) == ["calibrated", "raw", fcal.GAUSSIAN]
    assert t.loc["calibrated", "coverage80"] == pytest.approx(0.8, abs=0.03)
    assert t.loc["raw", "coverage80"] < 0.4 and np.isnan(t.loc["calibrated", "coverage90"])
    assert t.loc["calibrated", "quantile_score"] < t.loc["raw", "quantile_score"]
    assert t.loc["calibrated", "QS_skill_vs_histvol"] > 0  # it knows mu, the Gaussian does not
    assert t.loc["calibrated", "Brier"] < t.loc[fcal.GAUSSIAN, "Brier"] == pytest.approx(0.25)
    assert t.loc["raw", "Brier"] > t.loc["calibrated", "Brier"]
    assert np.isfinite(t.loc["base rate: past frequency known at t", "Brier"])
    # no quantile columns: no section
    assert fcal.from_forecast_table(table[["pred_return"]], realised, H) is None
    # the report: the section, its charts and its CSV
    panel = pd.concat(
        {nm: pd.DataFrame({"close": 10 * np.exp(np.cumsum(rng.normal(0, 0.01, len(dates)))),
                           "volume": 1e6}, index=dates) for nm in names},
        names=["instrument", "datetime"],
    ).swaplevel().sort_index()  # fmt: skip
    sig = table["pred_return"].rename("s")
    ev = evaluate(topk_weights(sig, 5, column="s"), panel, signal=sig, column="s")
    ev.calibration = section
    text = write_report(ev, tmp_path / "rep").read_text()
    assert "## Calibration of the forecast distribution" in text and "| raw |" in text
    for png in ("reliability.png", "pit.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000 and f"]({png})" in text
    csv = pd.read_csv(tmp_path / "rep" / "calibration.csv", index_col=0)
    assert csv.loc["calibrated", "coverage80"] == pytest.approx(t.loc["calibrated", "coverage80"])
