"""Forecaster: table contents, no look-ahead, determinism, missing history, bad input."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURE
from conftest import make_panel as shared_make_panel

from kronos_alpha import Forecaster, InputError
from kronos_alpha.inference.calendar import BarCalendar


@pytest.fixture(scope="module")
def tiny():
    if not FIXTURE.is_dir():
        pytest.skip(f"fixture checkpoint {FIXTURE} is absent")
    from kronos_alpha.model import Kronos
    from kronos_alpha.model.tokenizer import KronosTokenizer

    return Kronos.from_pretrained(str(FIXTURE / "model")), KronosTokenizer.from_pretrained(
        str(FIXTURE / "tokenizer")
    )


# This module's bars (its tests were written on exactly these numbers).
make_panel = partial(
    shared_make_panel, n_bars=50, names=("AAA", "BBB", "CCC"), seed=0, start="2021-01-04",
    price=50.0, sigma=0.015, open_style="log", open_sd=0.004, wick=0.01, volume=(1e5, 3e5),
)  # fmt: skip


def to_long(panel: dict) -> pd.DataFrame:
    df = pd.concat(panel, names=["instrument", "datetime"]).swaplevel().sort_index()
    return df


def fc_for(tiny, **kw):
    model, tok = tiny
    params = dict(lookback=24, horizon=3, sample_count=3, progress=False)
    params.update(kw)
    return Forecaster(model, tok, **params)


def test_table_columns_and_values_match_the_sampled_paths(tiny):
    panel = make_panel()
    dates = panel["AAA"].index[-3:]
    fc = fc_for(tiny, return_paths=True, quantiles=(0.1, 0.25, 0.5, 0.9))
    table = fc.forecast(panel, dates=dates)
    assert list(table.index.names) == ["datetime", "instrument"]
    assert len(table) == 9
    expected = ["pred_return", "ret_mean", "ret_median", "ret_q10", "ret_q25", "ret_q50", "ret_q90"]
    assert list(table.columns[:7]) == expected
    assert {"ret_std", "prob_up", "pred_vol", "close_h1", "close_h3"} <= set(table.columns)
    for (t, name), row in table.iterrows():
        future, paths = fc.paths_[(t, name)]
        assert len(future) == 3 and future[0] > t
        c0 = panel[name].loc[t, "close"]
        ret = paths[:, -1, 3] / c0 - 1
        assert row.pred_return == pytest.approx(ret.mean(), rel=1e-6)
        assert row.ret_q25 == pytest.approx(np.quantile(ret, 0.25), rel=1e-6)
        assert row.ret_std == pytest.approx(ret.std(), rel=1e-6)
        assert row.prob_up == pytest.approx((ret > 0).mean())
        assert row.close_h3 == pytest.approx(paths[:, -1, 3].mean(), rel=1e-6)
        bars = np.diff(np.concatenate([np.full((3, 1), c0), paths[:, :, 3]], axis=1), axis=1)
        assert row.pred_vol == pytest.approx(
            (bars / np.concatenate([np.full((3, 1), c0), paths[:, :-1, 3]], 1)).std(), rel=1e-5
        )
        # the context's volatilities: the last 24 bars' 23 returns, plain and RiskMetrics EWMA
        r = panel[name]["close"].loc[:t].iloc[-24:].pct_change().dropna().to_numpy()
        assert row.hist_vol == pytest.approx(r.std(), rel=1e-9)
        w = 0.94 ** np.arange(23)[::-1]  # the newest return weighs 1
        assert row.ewma_vol == pytest.approx(np.sqrt((w * r**2).sum() / w.sum()), rel=1e-9)
    assert fc.report["requested"] == 9 and fc.report["computed"] == 9
    # pred_return is a return of plausible size, not a normalised price difference
    assert table.pred_return.abs().max() < 1.0


def test_no_look_ahead_changing_any_later_bar_leaves_the_forecast(tiny):
    panel = make_panel()
    t = panel["AAA"].index[35]
    dates = panel["AAA"].index[32:36]
    fc = fc_for(tiny)
    base = fc.forecast(panel, dates=dates)
    rng = np.random.default_rng(1)
    changed = {}
    for name, df in panel.items():
        df = df.copy()
        later = df.index > t
        df.loc[later, ["open", "high", "low", "close"]] *= rng.uniform(0.5, 2.0, (later.sum(), 1))
        df.loc[later, "volume"] = rng.uniform(1, 1e7, later.sum())
        changed[name] = df
    after = fc.forecast(changed, dates=dates)
    pd.testing.assert_frame_equal(base, after)
    # Cutting the data at t (business-day calendar, so the extrapolated dates are the same).
    cut = fc.forecast({k: v[v.index <= t] for k, v in panel.items()}, dates=dates)
    pd.testing.assert_frame_equal(base, cut)
    # A change at t itself does move the forecast for t (the test can fail).
    moved = {k: v.copy() for k, v in panel.items()}
    moved["AAA"].loc[t, "close"] *= 1.2
    assert not np.allclose(fc.forecast(moved, dates=[t]).loc[(t, "AAA")], base.loc[(t, "AAA")])


def test_seeded_forecast_of_a_series_does_not_depend_on_the_batch(tiny):
    panel = make_panel(names=("AAA", "BBB", "CCC", "DDD"))
    dates = panel["AAA"].index[-2:]
    full = fc_for(tiny).forecast(panel, dates=dates)
    alone = fc_for(tiny, batch_size=1).forecast({"BBB": panel["BBB"]}, dates=dates)
    pair = fc_for(tiny, batch_size=3).forecast(
        to_long({k: panel[k] for k in ("DDD", "BBB")}), dates=dates[::-1]
    )
    np.testing.assert_allclose(
        full.xs("BBB", level="instrument"), alone.xs("BBB", level="instrument"), rtol=1e-6
    )
    np.testing.assert_allclose(
        full.xs("BBB", level="instrument"), pair.xs("BBB", level="instrument"), rtol=1e-6
    )
    # Same seed reproduces; another seed gives other draws; instruments get different streams.
    np.testing.assert_array_equal(
        full.to_numpy(), fc_for(tiny).forecast(panel, dates=dates).to_numpy()
    )
    other = fc_for(tiny, seed=7).forecast(panel, dates=dates)
    assert not np.allclose(full.ret_q90, other.ret_q90)


def test_long_frame_and_dict_give_the_same_table(tiny):
    panel = make_panel()
    dates = panel["AAA"].index[-2:]
    fc = fc_for(tiny)
    pd.testing.assert_frame_equal(
        fc.forecast(panel, dates=dates), fc.forecast(to_long(panel), dates=dates)
    )
    # Qlib's (instrument, datetime) order with '$' columns works too.
    qlib_like = to_long(panel).swaplevel().sort_index().rename(columns=lambda c: "$" + c)
    pd.testing.assert_frame_equal(
        fc.forecast(panel, dates=dates), fc.forecast(qlib_like, dates=dates)
    )


def test_all_dates_and_missing_history_policy(tiny):
    panel = make_panel(n_bars=36, names=("AAA", "BBB"))
    bbb = panel["BBB"]
    bbb.loc[bbb.index[26:29], "volume"] = 0.0  # suspended for three days
    bbb.loc[bbb.index[31], ["open", "high", "low", "close"]] = np.nan  # a missing bar
    panel["CCC"] = panel["AAA"].iloc[20:].copy()  # listed later: too short
    fc = fc_for(tiny)
    table = fc.forecast(panel)
    rep = fc.report
    assert rep["requested"] == 36 + 36 + 16
    assert rep["skipped"]["suspended"] == 4
    assert rep["suspended_bars_dropped"] == 4
    # AAA: 13 windows (bars 24..36); BBB: 32 traded bars -> 9; CCC: 16 bars < 24 -> none
    assert rep["computed"] == 13 + 9 == len(table)
    assert rep["skipped"]["short_history"] == 23 + 23 + 16
    assert not table.index.isin([(bbb.index[27], "BBB"), (bbb.index[31], "BBB")]).any()
    # A window after a suspension is made of the last 24 traded bars, never of flat fills.
    t = bbb.index[33]
    traded = bbb.drop(bbb.index[[26, 27, 28, 31]])
    only = fc.forecast({"BBB": traded}, dates=[t])
    np.testing.assert_allclose(table.loc[[(t, "BBB")]].to_numpy(), only.to_numpy(), rtol=1e-6)
    # fill_suspended keeps them: forecasts on suspended days, different windows.
    filled = fc_for(tiny, fill_suspended=True).forecast(panel, dates=[bbb.index[27], t])
    assert (bbb.index[27], "BBB") in filled.index
    assert not np.allclose(filled.loc[(t, "BBB")], table.loc[(t, "BBB")])
    # min_history lets shorter windows through
    short = fc_for(tiny, min_history=10).forecast({"CCC": panel["CCC"]})
    assert len(short) == 7


def test_no_bar_at_a_requested_date_is_skipped_and_counted(tiny):
    panel = make_panel(names=("AAA", "BBB"))
    t = panel["AAA"].index[-1]
    panel["BBB"] = panel["BBB"].iloc[:-1]
    fc = fc_for(tiny)
    table = fc.forecast(panel, dates=[t])
    assert list(table.index) == [(t, "AAA")]
    assert fc.report["skipped"]["no_bar"] == 1


def test_bad_input_errors(tiny):
    panel = make_panel(names=("AAA", "BBB"))
    long = to_long(panel)
    fc = fc_for(tiny)
    with pytest.raises(InputError, match="duplicated"):
        fc.forecast(pd.concat([long, long.iloc[[5]]]))
    shuffled = long.sample(frac=1.0, random_state=0)
    with pytest.warns(UserWarning, match="not in time order"):
        got = fc.forecast(shuffled, dates=panel["AAA"].index[-2:])
    pd.testing.assert_frame_equal(got, fc.forecast(long, dates=panel["AAA"].index[-2:]))
    with pytest.raises(InputError, match="outside the data"):
        fc.forecast(panel, dates=["2030-01-02"])
    with pytest.raises(InputError, match="not a bar time"):
        fc.forecast(panel, dates=["2021-01-09"])  # a Saturday
    aware = {"AAA": panel["AAA"].tz_localize("UTC"), "BBB": panel["BBB"]}
    with pytest.raises(InputError, match=r"different time zones \['None', 'UTC'\]"):
        fc.forecast(aware)
    mixed_long = long.copy()
    stamps = list(mixed_long.index.get_level_values(0))
    stamps[0] = stamps[0].tz_localize("UTC")
    mixed_long.index = pd.MultiIndex.from_arrays(
        [pd.Index(stamps, dtype=object), mixed_long.index.get_level_values(1)],
        names=["datetime", "instrument"],
    )
    with pytest.raises(InputError, match="mixes time zones: naive and aware"):
        fc.forecast(mixed_long)
    with pytest.raises(InputError, match="timezone"):
        fc.forecast(
            {k: v.tz_localize("UTC") for k, v in panel.items()}, dates=[panel["AAA"].index[-1]]
        )
    with pytest.raises(InputError, match="close"):
        fc.forecast({"AAA": panel["AAA"].drop(columns="close")})
    with pytest.raises(InputError, match="negative"):
        bad = panel["AAA"].copy()
        bad.iloc[3, 0] = -1.0
        fc.forecast({"AAA": bad})


def test_lookback_above_max_context_is_clipped_with_a_warning(tiny):
    panel = make_panel(n_bars=40, names=("AAA",))
    fc = fc_for(tiny, lookback=30, max_context=20)
    with pytest.warns(UserWarning, match="max_context 20"):
        table = fc.forecast(panel, dates=panel["AAA"].index[-2:])
    assert fc.report["lookback"] == 20 and len(table) == 2
    same = fc_for(tiny, lookback=20, max_context=20).forecast(panel, dates=panel["AAA"].index[-2:])
    pd.testing.assert_frame_equal(table, same)


def test_params_are_stored_and_loading_is_lazy(tiny):
    fc = Forecaster("no-such-model-anywhere", lookback=30)
    assert fc.get_params()["lookback"] == 30 and fc._loaded is None
    fc.set_params(horizon=3)
    assert fc.horizon == 3
    with pytest.raises(ValueError, match="no parameter"):
        fc.set_params(horizn=3)
    with pytest.raises(ValueError, match="tokenizer"):
        Forecaster(tiny[0]).load()


def test_named_model_that_cannot_load_is_an_error(tmp_path):
    from kronos_alpha import CheckpointError

    with pytest.raises(CheckpointError):
        Forecaster(str(tmp_path), tokenizer=str(tmp_path)).load()


def test_calendar_extrapolates_business_days_and_the_intraday_grid():
    cal = BarCalendar(pd.bdate_range("2024-01-01", periods=10))
    assert list(cal.future(pd.Timestamp("2024-01-11"), 3)) == list(
        pd.to_datetime(["2024-01-12", "2024-01-15", "2024-01-16"])
    )
    days = pd.bdate_range("2024-01-04", periods=2)
    mins = list(range(570, 690, 5)) + list(range(780, 900, 5))
    cal = BarCalendar(pd.DatetimeIndex([d + pd.Timedelta(minutes=m) for d in days for m in mins]))
    got = cal.future(pd.Timestamp("2024-01-05 14:50"), 3)
    assert list(got) == list(
        pd.to_datetime(["2024-01-05 14:55", "2024-01-08 09:30", "2024-01-08 09:35"])
    )
    got = cal.future(pd.Timestamp("2024-01-04 11:25"), 2)  # lunch break skipped
    assert list(got) == list(pd.to_datetime(["2024-01-04 13:00", "2024-01-04 13:05"]))
    # The panel calendar wins where it has the dates (a holiday stays skipped).
    cal = BarCalendar(pd.bdate_range("2024-01-01", periods=10).drop(pd.Timestamp("2024-01-03")))
    assert pd.Timestamp("2024-01-03") not in cal.future(pd.Timestamp("2024-01-02"), 3)


def test_bf16_model_keeps_a_float32_tokenizer(tiny):
    import torch

    panel = make_panel(names=("AAA",))
    dates = panel["AAA"].index[-2:]
    fc = fc_for(tiny, dtype="bf16")
    half = fc.forecast(panel, dates=dates)
    assert next(fc.model_.parameters()).dtype == torch.bfloat16
    assert next(fc.tokenizer_.parameters()).dtype == torch.float32
    assert fc.report["dtype"] == "bfloat16" and np.isfinite(half.to_numpy()).all()
    full = fc_for(tiny).forecast(panel, dates=dates)
    assert np.abs(half.pred_return - full.pred_return).max() < 0.05  # same model, rounded weights
    with pytest.raises(ValueError, match="fp16 needs a cuda"):
        fc_for(tiny, dtype="fp16", device="cpu").load()
    assert next(tiny[0].parameters()).dtype == torch.float32  # the caller's model is untouched


def test_greedy_paths_equal_the_predictor_on_the_same_window(tiny):
    from kronos_alpha import KronosPredictor

    panel = make_panel(names=("AAA",))
    bars = panel["AAA"]
    t = bars.index[-6]
    fc = fc_for(tiny, top_k=1, sample_count=1, return_paths=True)
    fc.forecast(panel, dates=[t])
    future, paths = fc.paths_[(t, "AAA")]
    window = bars.loc[:t].iloc[-24:]
    pred = KronosPredictor(*tiny, device="cpu", max_context=512)
    want = pred.predict(
        window, window.index, future, pred_len=3, top_k=1, sample_count=1, verbose=False
    )
    np.testing.assert_allclose(paths[0], want.to_numpy(), rtol=1e-5, atol=1e-4)
    assert list(future) == list(bars.index[-5:-2])  # future stamps from the panel calendar


def test_intraday_panel_extrapolates_the_session_grid(tiny):
    days = pd.bdate_range("2024-06-03", periods=3)
    mins = list(range(575, 691, 5)) + list(range(785, 901, 5))  # 09:35-11:30, 13:05-15:00
    idx = pd.DatetimeIndex([d + pd.Timedelta(minutes=m) for d in days for m in mins])
    bars = make_panel(n_bars=len(idx), names=("X",))["X"].set_axis(idx)
    fc = fc_for(tiny, return_paths=True)
    fc.forecast({"X": bars}, dates=[idx[-2]])
    future, _ = fc.paths_[(idx[-2], "X")]
    assert list(future) == list(
        pd.to_datetime(["2024-06-05 15:00", "2024-06-06 09:35", "2024-06-06 09:40"])
    )
