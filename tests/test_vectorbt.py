"""vectorbt adapter: one forecaster pass per parameter combination, thresholds without re-runs,
agreement with the Forecaster (every output, the features too), no look-ahead, bad input, and
the top-K book.

Real CSI300 bars (../shared/data) and the upstream-tiny fixture checkpoint. vectorbt's numba
JIT is paid once: the indicator run and the portfolio are module-scoped fixtures.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

vbt = pytest.importorskip("vectorbt")

from conftest import SHARED  # noqa: E402
from kronos_alpha.adapters.vectorbt import (  # noqa: E402
    OUTPUTS,
    KronosSignal,
    to_panel,
    topk_portfolio,
)
from kronos_alpha.strategies import topk_weights  # noqa: E402

from kronos_alpha.inference.forecaster import Forecaster  # noqa: E402
from kronos_alpha.inference.panel import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED / "data" / "cn_daily_2010_2022"
FIXTURE = SHARED / "fixtures" / "upstream-tiny"
NAMES = ["SH600000", "SH600036", "SH601318", "SZ000001"]
LOOKBACKS, HORIZON, SAMPLES = [16, 20], 3, 2
FIELDS = ["open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    if not (DATA / "calendars" / "day.txt").exists():
        pytest.skip(f"shared Qlib data not found at {DATA}")
    from kronos_alpha.strategies.panel import load_panel

    panel, _ = load_panel(DATA, NAMES, "2020-01-01", "2020-02-28")
    return {f: panel[f].unstack("instrument") for f in FIELDS}


@pytest.fixture(scope="module")
def forecaster() -> Forecaster:
    if not (FIXTURE / "model").is_dir():
        pytest.skip(f"upstream-tiny fixture not found at {FIXTURE}")
    fc = Forecaster(
        model=str(FIXTURE / "model"),
        tokenizer=str(FIXTURE / "tokenizer"),
        lookback=LOOKBACKS[0],
        horizon=HORIZON,
        sample_count=SAMPLES,
        progress=False,
    )
    return fc.load()


@pytest.fixture(scope="module")
def calls():
    """Counts forecaster calls for the whole module (every adapter call goes through forecast)."""
    seen = []
    original = Forecaster.forecast

    def counted(self, panel, dates=None):
        seen.append(self.lookback)
        return original(self, panel, dates)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Forecaster, "forecast", counted)
        yield seen


@pytest.fixture(scope="module")
def signal(bars, forecaster, calls):
    sig = KronosSignal.run(
        *(bars[f] for f in FIELDS),
        lookback=LOOKBACKS,
        horizon=HORIZON,
        sample_count=SAMPLES,
        forecaster=forecaster,
    )
    assert calls == LOOKBACKS  # one batched pass per parameter combination, all columns
    return sig


def long_panel(bars) -> pd.DataFrame:
    return pd.concat({f: bars[f].stack() for f in FIELDS}, axis=1).rename_axis(
        ["datetime", "instrument"]
    )


def test_outputs_match_direct_forecaster_with_warm_up(bars, forecaster, signal):
    for lookback in LOOKBACKS:
        fc = Forecaster(**{**forecaster.get_params(), "lookback": lookback})
        table = fc.forecast(long_panel(bars))
        assert set(OUTPUTS) >= {"path_mean", "path_min", "path_max", "pred_vol", "prob_up"}
        for out in OUTPUTS:
            col = {"lower": "ret_q10", "upper": "ret_q90"}.get(out, out)
            got = getattr(signal, out)[(lookback, HORIZON, SAMPLES)]
            want = table[col].unstack("instrument").reindex(index=got.index, columns=got.columns)
            np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
            assert got.iloc[: lookback - 1].isna().all().all()  # documented warm-up
            assert got.iloc[lookback - 1 :].notna().all().all()


def test_threshold_sweep_never_reruns_the_model(signal, calls):
    n = len(calls)
    entries = signal.pred_return_above([0.0, 0.01])
    exits = signal.prob_up_below(0.5)
    assert len(calls) == n
    assert entries.shape[1] == 2 * len(LOOKBACKS) * len(NAMES)
    pr = signal.pred_return[(LOOKBACKS[0], HORIZON, SAMPLES)]
    got = entries[(0.01, LOOKBACKS[0], HORIZON, SAMPLES)]
    pd.testing.assert_frame_equal(got, pr > 0.01, check_names=False)
    assert exits.shape == signal.prob_up.shape


def test_no_look_ahead(bars, forecaster, signal):
    cut = bars["close"].index[-8]
    shocked = {f: v.copy() for f, v in bars.items()}
    for f in ("open", "high", "low", "close"):
        shocked[f].loc[cut:] *= 1.3
    shocked["volume"].loc[cut:] *= 5
    again = KronosSignal.run(
        *(shocked[f] for f in FIELDS),
        lookback=LOOKBACKS[0],
        horizon=HORIZON,
        sample_count=SAMPLES,
        forecaster=forecaster,
    )
    for out in OUTPUTS:
        base = getattr(signal, out)[(LOOKBACKS[0], HORIZON, SAMPLES)]
        before = base.index < cut
        moved = getattr(again, out)
        np.testing.assert_array_equal(moved[before].to_numpy(), base[before].to_numpy())
        assert not np.allclose(moved[~before].to_numpy(), base[~before].to_numpy())  # seen


def test_short_series_is_all_warm_up(bars, forecaster):
    short = {f: v.iloc[:10, :1] for f, v in bars.items()}
    sig = KronosSignal.run(*(short[f] for f in FIELDS), lookback=16, horizon=HORIZON,
                           sample_count=SAMPLES, forecaster=forecaster)  # fmt: skip
    assert sig.pred_return.shape == (10, 1) and sig.pred_return.isna().all().all()


def test_nan_bars_named_unless_outside_the_listed_span(bars):
    bad = {f: v.copy() for f, v in bars.items()}
    day = bad["close"].index[12]
    bad["close"].loc[day, NAMES[2]] = np.nan
    with pytest.raises(InputError, match=rf"{NAMES[2]}.*{day:%Y-%m-%d}"):
        to_panel(*(bad[f] for f in FIELDS))
    assert NAMES[2] in to_panel(*(bad[f] for f in FIELDS), nan_bars="skip")
    listed_late = {f: v.copy() for f, v in bars.items()}
    for f in FIELDS:
        listed_late[f].iloc[:5, 0] = np.nan  # not listed yet: fine, NaN outputs there
    panel = to_panel(*(listed_late[f] for f in FIELDS))
    assert panel[NAMES[0]]["close"].iloc[:5].isna().all()
    no_volume = {**bars, "volume": bars["volume"] * np.nan}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        to_panel(*(no_volume[f] for f in FIELDS))
    assert sum("no volume" in str(w.message) for w in caught) == len(NAMES)
    with pytest.raises(ValueError, match="forecaster= .* or model="):
        KronosSignal.run(*(bars[f] for f in FIELDS), lookback=16)


def test_a_column_that_is_not_numbers_is_named(bars):
    flags = {**bars, "volume": bars["volume"] > 0}  # True/False volumes read as 1.0 before
    with pytest.raises(InputError, match=f"instrument '{NAMES[0]}': column 'volume' holds bool"):
        to_panel(*(flags[f] for f in FIELDS))
    text = {**bars, "close": bars["close"].astype(object)}
    day = text["close"].index[7]
    text["close"].loc[day, NAMES[1]] = "n/a"
    with pytest.raises(InputError, match=rf"'{NAMES[1]}': column 'close' is not numeric .*'n/a'"):
        to_panel(*(text[f] for f in FIELDS))


def test_frames_are_paired_by_column_name_not_position(bars):
    base = to_panel(*(bars[f] for f in FIELDS))
    shuffled = {f: v[v.columns[::-1]] if f == "volume" else v for f, v in bars.items()}
    for name, df in to_panel(*(shuffled[f] for f in FIELDS)).items():
        pd.testing.assert_frame_equal(df, base[name])
    other = {**bars, "high": bars["high"].rename(columns={NAMES[1]: "SH999999"})}
    with pytest.raises(InputError, match=r"high and close have different instrument columns"):
        to_panel(*(other[f] for f in FIELDS))
    short = {**bars, "low": bars["low"].iloc[1:]}
    with pytest.raises(InputError, match="low and close have different bar times"):
        to_panel(*(short[f] for f in FIELDS))


def test_topk_book_follows_the_strategies_weights(bars, signal):
    pred = signal.pred_return[(LOOKBACKS[0], HORIZON, SAMPLES)]
    pf, weights = topk_portfolio(bars["close"], pred, k=2, n_drop=1, fees=0.001, slippage=0.0005)
    scored = pred.droplevel([0, 1, 2], axis=1) if isinstance(pred.columns, pd.MultiIndex) else pred
    scored = scored[scored.notna().any(axis=1)]
    pd.testing.assert_frame_equal(weights, topk_weights(scored, k=2, n_drop=1), check_names=False)
    # the book decided at the close of t is held from the close of t+1 on (lag 1)
    value = pf.value()
    held = pf.asset_value(group_by=False).div(value, axis=0)
    pos = bars["close"].index.get_indexer(weights.index)
    assert held.iloc[: pos[0] + 1].abs().to_numpy().max() == 0
    traded = pos + 1 < len(held)
    got = held.iloc[pos[traded] + 1].reindex(columns=weights.columns)
    np.testing.assert_allclose(got.to_numpy(), weights[traded].to_numpy(), atol=0.01)
    assert pf.orders.count() > 0 and float(pf.orders.fees.sum()) > 0
    assert float(value.iloc[0]) == pytest.approx(1_000_000.0, rel=0.01)


def test_defaults_are_the_forecasters_and_overrides_one_replace(bars, forecaster):
    from kronos_alpha.inference.settings import SettingsError

    two = {f: v.iloc[:, :2] for f, v in bars.items()}
    sig = KronosSignal.run(*(two[f] for f in FIELDS), forecaster=forecaster)
    assert list(sig.pred_return.columns) == NAMES[:2]  # None parameters: no column levels
    want = forecaster.forecast(long_panel(two))["pred_return"].unstack("instrument")
    np.testing.assert_array_equal(sig.pred_return.to_numpy(), want.reindex(sig.pred_return.index))
    # seed is vectorbt's own run keyword too: it must still reach the forecaster
    seeded = KronosSignal.run(*(two[f] for f in FIELDS), forecaster=forecaster, seed=7)
    want = Forecaster(**{**forecaster.get_params(), "seed": 7}).forecast(long_panel(two))
    want = want["pred_return"].unstack("instrument").reindex(sig.pred_return.index)
    np.testing.assert_array_equal(seeded.pred_return.to_numpy(), want.to_numpy())
    assert not np.allclose(seeded.pred_return.dropna(), sig.pred_return.dropna())
    again = KronosSignal.run(*(two[f] for f in FIELDS), forecaster=forecaster,
                             settings=forecaster.settings.replace(seed=7))  # fmt: skip
    pd.testing.assert_frame_equal(again.pred_return, seeded.pred_return)
    assert forecaster.seed == 0  # the user's forecaster is untouched
    with pytest.raises(SettingsError, match="lookback must be at least 2"):
        KronosSignal.run(*(two[f] for f in FIELDS), forecaster=forecaster, lookback=1)
    with pytest.raises(SettingsError, match="lookback must be an integer, got 2.5"):
        KronosSignal.run(*(two[f] for f in FIELDS), forecaster=forecaster, lookback=2.5)  # not 2
    with pytest.raises(SettingsError, match="no setting 'horizn'"):
        KronosSignal.run(*(two[f] for f in FIELDS), forecaster=forecaster, settings={"horizn": 2})
