"""backtrader adapter: values from the shared forecaster (every line, the features too), no
look-ahead, runonce == next, bad input.

Real CSI300 bars (../shared/data) and the upstream-tiny fixture checkpoint, on small slices.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

bt = pytest.importorskip("backtrader")

from conftest import SHARED  # noqa: E402
from kronos_alpha.adapters.backtrader import LINES, Kronos, KronosIndicator, bar_times  # noqa: E402

from kronos_alpha.inference.forecaster import Forecaster  # noqa: E402
from kronos_alpha.inference.panel import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED / "data" / "cn_daily_2010_2022"
FIXTURE = SHARED / "fixtures" / "upstream-tiny"
NAMES = ["SH600000", "SH600036"]
LOOKBACK, HORIZON, SAMPLES = 16, 3, 2


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    if not (DATA / "calendars" / "day.txt").exists():
        pytest.skip(f"shared Qlib data not found at {DATA}")
    from kronos_alpha.strategies.panel import load_panel

    panel, _ = load_panel(DATA, NAMES, "2020-01-01", "2020-02-28")
    return panel[["open", "high", "low", "close", "volume"]]


@pytest.fixture(scope="module")
def forecaster() -> Forecaster:
    if not (FIXTURE / "model").is_dir():
        pytest.skip(f"upstream-tiny fixture not found at {FIXTURE}")
    fc = Forecaster(
        model=str(FIXTURE / "model"),
        tokenizer=str(FIXTURE / "tokenizer"),
        lookback=LOOKBACK,
        horizon=HORIZON,
        sample_count=SAMPLES,
        progress=False,
    )
    return fc.load()


@pytest.fixture
def calls(monkeypatch):
    """Counts forecaster calls (every adapter call goes through Forecaster.forecast)."""
    seen = []
    original = Forecaster.forecast

    def counted(self, panel, dates=None):
        seen.append(None if dates is None else list(dates))
        return original(self, panel, dates)

    monkeypatch.setattr(Forecaster, "forecast", counted)
    return seen


def frames(panel) -> dict[str, pd.DataFrame]:
    return {n: g.droplevel("instrument") for n, g in panel.groupby(level="instrument")}


class Record(bt.Strategy):
    params = (("kw", {}), ("resend", False))

    def __init__(self):
        self.ind = {d._name: Kronos(d, **self.p.kw) for d in self.datas}
        self.resent = []

    def next(self):
        if self.p.resend:  # backtrader may call next again on the same bar: same values
            for ind in self.ind.values():
                before = [line[0] for line in ind.lines]
                ind.next()
                self.resent.append((before, [line[0] for line in ind.lines]))


def run(feeds: dict, runonce: bool, **kw):
    """Runs cerebro; returns ({name: DataFrame of the lines by bar time}, strategy)."""
    cerebro = bt.Cerebro(runonce=runonce, stdstats=False)
    feed_kw = kw.get("feed_kw", {})
    for name, df in feeds.items():
        cerebro.adddata(bt.feeds.PandasData(dataname=df, **feed_kw), name=name)
    cerebro.addstrategy(Record, kw=kw.get("ind", {}), resend=kw.get("resend", False))
    strat = cerebro.run()[0]
    out = {}
    for name, ind in strat.ind.items():
        cols = {
            line: np.asarray(getattr(ind.lines, line).array) for line in ind.lines.getlinealiases()
        }
        out[name] = pd.DataFrame(cols, index=bar_times(ind.data))
    return out, strat


def expected(forecaster, panel) -> pd.DataFrame:
    """The forecaster's table as the indicator's lines: the band's quantiles as lower/upper,
    every other line the column of its name."""
    table = forecaster.forecast(panel)
    return table.rename(columns={"ret_q10": "lower", "ret_q90": "upper"})[list(LINES)]


def test_runonce_one_batched_call_matches_forecaster(panel, forecaster, calls):
    got, strat = run(frames(panel), runonce=True, ind=dict(forecaster=forecaster))
    assert calls == [None]  # both datas, every bar: one forecaster call
    want = expected(forecaster, panel)
    for name, df in got.items():
        assert list(df.columns) == list(LINES)
        assert df.index.equals(panel.xs(name, level="instrument").index)  # daily bars by date
        assert df.iloc[: LOOKBACK - 1].isna().all().all()  # documented warm-up
        w = want.xs(name, level="instrument").reindex(df.index)
        assert w["pred_return"].notna().sum() == len(df) - (LOOKBACK - 1)
        np.testing.assert_allclose(df.to_numpy(), w.to_numpy(), rtol=0, atol=0)
    ind = strat.ind[NAMES[0]]
    label = ind.plotlabel()
    assert "upstream-tiny" in label and "lb=16" in label and "object at" not in label
    assert "Forecaster(" not in label
    assert isinstance(ind, KronosIndicator)


def test_next_mode_equals_runonce_and_resent_bar_is_idempotent(panel, forecaster, calls):
    feeds = frames(panel.loc[:"2020-02-14"])
    once, _ = run(feeds, runonce=True, ind=dict(forecaster=forecaster))
    n_once = len(calls)
    nxt, strat = run(feeds, runonce=False, ind=dict(forecaster=forecaster), resend=True)
    for name in NAMES:
        pd.testing.assert_frame_equal(nxt[name], once[name])
        assert nxt[name]["pred_return"].notna().any()
    # next mode: one call per bar for all datas together, none for a re-sent bar
    bars = len(next(iter(feeds.values())))
    assert len(calls) - n_once == bars - (LOOKBACK - 1)
    assert all(len(c) == 1 for c in calls[n_once:])
    assert strat.resent and all(np.array_equal(a, b, equal_nan=True) for a, b in strat.resent)


def test_no_look_ahead(panel, forecaster):
    feeds = frames(panel)
    base, _ = run(feeds, runonce=True, ind=dict(forecaster=forecaster))
    cut = panel.index.get_level_values("datetime").unique()[-8]
    shocked = {}
    for name, df in feeds.items():
        df = df.copy()
        later = df.index >= cut
        df.loc[later, ["open", "high", "low", "close"]] *= 1.3
        df.loc[later, "volume"] *= 5
        shocked[name] = df
    moved, _ = run(shocked, runonce=True, ind=dict(forecaster=forecaster))
    for name in NAMES:
        before = base[name].index < cut
        pd.testing.assert_frame_equal(moved[name][before], base[name][before])
        assert not np.allclose(moved[name][~before], base[name][~before])  # the shock is seen


def test_feed_shorter_than_lookback_is_all_warm_up(panel, forecaster):
    short = {NAMES[0]: frames(panel)[NAMES[0]].iloc[: LOOKBACK - 2]}
    got, _ = run(short, runonce=True, ind=dict(forecaster=forecaster))
    assert got[NAMES[0]].isna().all().all()


def test_nan_bar_is_named(panel, forecaster):
    feeds = frames(panel)
    bad_day = feeds[NAMES[1]].index[20]
    feeds[NAMES[1]].loc[bad_day, "close"] = np.nan
    with pytest.raises(InputError, match=rf"{NAMES[1]}.*{bad_day:%Y-%m-%d}"):
        run(feeds, runonce=True, ind=dict(forecaster=forecaster))


def test_missing_volume_forecasts_from_prices_with_a_warning(panel, forecaster):
    df = frames(panel)[NAMES[0]].drop(columns="volume")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, _ = run(
            {NAMES[0]: df}, runonce=True, ind=dict(forecaster=forecaster), feed_kw=dict(volume=None)
        )
    assert any("no volume" in str(w.message) for w in caught)
    want = expected(forecaster, {NAMES[0]: df}).droplevel("instrument")
    np.testing.assert_allclose(
        got[NAMES[0]].to_numpy(), want.reindex(got[NAMES[0]].index).to_numpy()
    )


class OnCloseLine(bt.Strategy):
    params = (("forecaster", None),)

    def __init__(self):
        Kronos(self.data.close, forecaster=self.p.forecaster)


def test_bad_params_are_named(panel, forecaster):
    cerebro = bt.Cerebro()
    cerebro.adddata(bt.feeds.PandasData(dataname=frames(panel)[NAMES[0]]), name=NAMES[0])
    cerebro.addstrategy(OnCloseLine, forecaster=forecaster)
    with pytest.raises(InputError, match="needs a data feed"):
        cerebro.run()
    with pytest.raises(ValueError, match="forecaster= .* or model="):
        run(frames(panel), runonce=True, ind={})
    with pytest.raises(ValueError, match="quantiles"):
        run(frames(panel), runonce=True, ind=dict(forecaster=forecaster, quantiles=(0.9, 0.1)))


def test_overrides_are_one_replace_of_the_forecasters_settings(panel, forecaster):
    from kronos_alpha.inference.settings import SettingsError

    feeds = {NAMES[0]: frames(panel)[NAMES[0]].iloc[:24]}
    _, strat = run(feeds, runonce=True, ind=dict(forecaster=forecaster, horizon=2, seed=7))
    got = strat.ind[NAMES[0]].forecaster
    assert got.settings == forecaster.settings.replace(horizon=2, seed=7)  # bands 0.1/0.9 held
    assert got.model_ is forecaster.model_ and forecaster.horizon == HORIZON  # user's untouched
    start = forecaster.settings.replace(sample_count=3, quantiles=(0.25, 0.75))
    _, strat = run(feeds, runonce=True, ind=dict(forecaster=forecaster, settings=start))
    got = strat.ind[NAMES[0]].forecaster.settings
    assert got == start.replace(quantiles=(0.1, 0.25, 0.75, 0.9))
    _, strat = run(feeds, runonce=True, ind=dict(forecaster=forecaster, settings={"horizon": 4}))
    assert strat.ind[NAMES[0]].forecaster.settings == forecaster.settings.replace(horizon=4)
    with pytest.raises(SettingsError, match="lookback must be at least 2"):
        run(feeds, runonce=True, ind=dict(forecaster=forecaster, lookback=1))
    with pytest.raises(InputError, match="nan_bars must be one of"):
        run(feeds, runonce=True, ind=dict(forecaster=forecaster, nan_bars="drop"))


def test_bars_before_listing_are_nan_lines_not_errors(panel, forecaster):
    df = frames(panel)[NAMES[0]].copy()
    df.iloc[:3] = np.nan  # a feed aligned to a longer calendar: not listed yet
    got, _ = run({NAMES[0]: df}, runonce=True, ind=dict(forecaster=forecaster))
    want = expected(forecaster, {NAMES[0]: df}).droplevel("instrument").reindex(df.index)
    assert got[NAMES[0]].iloc[: 3 + LOOKBACK - 1].isna().all().all()
    assert got[NAMES[0]]["pred_return"].iloc[3 + LOOKBACK - 1 :].notna().all()
    np.testing.assert_allclose(got[NAMES[0]].to_numpy(), want.to_numpy(), rtol=0, atol=0)
