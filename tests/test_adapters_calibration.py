"""backtrader and vectorbt take a calibrated Forecaster: their band, prob_up and ret_std are the
calibrated table's for the same bars (not the raw samples'), next mode agrees with runonce, a
raw copy of the same forecaster is not answered from the calibrated table's cache, and a
horizon the calibrator was not fitted for is refused up front, naming the door.

A random tiny model and a synthetic panel (no shared data needed): calibrated on bar times
30..99, the adapters see bars from 100 on, so every forecast is out of the calibration span.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

bt = pytest.importorskip("backtrader")

from conftest import TINY_MODEL, TINY_TOKENIZER, make_panel  # noqa: E402
from kronos_alpha.adapters.backtrader import LINES, Kronos, bar_times  # noqa: E402

from kronos_alpha import Kronos as KronosModel  # noqa: E402
from kronos_alpha import KronosTokenizer  # noqa: E402
from kronos_alpha.inference.calibration import CalibrationError  # noqa: E402
from kronos_alpha.inference.forecaster import Forecaster  # noqa: E402

HORIZON = 3
CALIBRATED = ("lower", "upper", "prob_up", "ret_std")  # the lines calibration changes
COLUMN = {"lower": "ret_q10", "upper": "ret_q90"}


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    return make_panel(3, 150, seed=3, sigma=0.015)


@pytest.fixture(scope="module")
def calibrated(panel) -> Forecaster:
    torch.manual_seed(0)
    model, tok = KronosModel(**TINY_MODEL).eval(), KronosTokenizer(**TINY_TOKENIZER).eval()
    fc = Forecaster(model, tok, lookback=16, horizon=HORIZON, sample_count=4, seed=0,
                    calendar="business", progress=False)  # fmt: skip
    times = next(iter(panel.values())).index
    return fc.calibrate(panel, times[30:100])


@pytest.fixture(scope="module")
def feeds(panel) -> dict[str, pd.DataFrame]:
    return {name: df.iloc[100:] for name, df in panel.items()}


@pytest.fixture(scope="module")
def table(calibrated, feeds) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*inside the calibration span")  # none: later
        return calibrated.forecast(feeds)


class Record(bt.Strategy):
    params = (("kw", {}),)

    def __init__(self):
        self.ind = {d._name: Kronos(d, **self.p.kw) for d in self.datas}


def run(feeds, runonce=True, **kw) -> tuple[dict, bt.Strategy]:
    cerebro = bt.Cerebro(runonce=runonce, stdstats=False)
    for name, df in feeds.items():
        cerebro.adddata(bt.feeds.PandasData(dataname=df), name=name)
    cerebro.addstrategy(Record, kw=kw)
    strat = cerebro.run()[0]
    out = {
        name: pd.DataFrame(
            {line: np.asarray(getattr(ind.lines, line).array) for line in LINES},
            index=bar_times(ind.data),
        )
        for name, ind in strat.ind.items()
    }
    return out, strat


def lines_of(table: pd.DataFrame, name: str, index, prefix: str = "") -> pd.DataFrame:
    rows = table.xs(name, level="instrument").reindex(index)
    return pd.DataFrame({line: rows[prefix + COLUMN.get(line, line)] for line in CALIBRATED})


def test_backtrader_lines_are_the_calibrated_tables(calibrated, feeds, table):
    assert {"raw_ret_q10", "raw_prob_up"} <= set(table.columns)
    got, strat = run(feeds, forecaster=calibrated)
    ind = next(iter(strat.ind.values()))
    assert ind.forecaster.calibrator_ is calibrated.calibrator_  # kept by the copy
    for name, df in got.items():
        want = lines_of(table, name, df.index)
        assert want["lower"].notna().sum() == len(df) - 15  # every bar after the warm-up
        np.testing.assert_array_equal(df[list(CALIBRATED)].to_numpy(), want.to_numpy())
        raw = lines_of(table, name, df.index, prefix="raw_")
        for line in CALIBRATED:  # calibration moved every one of them
            ok = want[line].notna()
            assert not np.allclose(df.loc[ok, line], raw.loc[ok, line]), line
        # the uncalibrated statistics are the samples': the same columns of the table
        for line in ("pred_return", "pred_vol", "path_mean", "path_min", "path_max"):
            np.testing.assert_array_equal(df[line], table.xs(name, level=1)[line].reindex(df.index))


def test_a_raw_copy_is_not_answered_from_the_calibrated_cache(calibrated, feeds, table):
    run(feeds, forecaster=calibrated)  # the calibrated table is now in the adapter's cache
    raw_fc = copy.copy(calibrated).set_calibrator(None)  # same settings, weights and bars
    got, _ = run(feeds, forecaster=raw_fc)
    for name, df in got.items():
        want = lines_of(table, name, df.index, prefix="raw_")
        np.testing.assert_array_equal(df[list(CALIBRATED)].to_numpy(), want.to_numpy())
    assert calibrated.calibrator_ is not None  # the user's forecaster is untouched


def test_backtrader_next_mode_is_calibrated_too(calibrated, feeds):
    short = {name: df.iloc[:24] for name, df in feeds.items()}
    once, _ = run(short, forecaster=calibrated)
    nxt, _ = run(short, runonce=False, forecaster=calibrated)
    for name in short:
        pd.testing.assert_frame_equal(nxt[name], once[name])
        assert nxt[name]["lower"].notna().sum() == 24 - 15


def test_a_horizon_override_is_refused_when_the_indicator_is_made(calibrated, feeds):
    with pytest.raises(CalibrationError, match=r"KronosIndicator: horizon 2 differs from .* 3"):
        run(feeds, forecaster=calibrated, horizon=2)
    with pytest.raises(CalibrationError, match="horizon 5 differs"):
        run(feeds, forecaster=calibrated, settings={"horizon": 5})
    # other overrides keep the calibrator, with the forecaster's warning that it was fitted
    # under other sampling settings
    with pytest.warns(UserWarning, match="the calibrator was fitted under"):
        got, strat = run(feeds, forecaster=calibrated, sample_count=2)
    assert next(iter(strat.ind.values())).forecaster.calibrator_ is calibrated.calibrator_


def wide(frames: dict[str, pd.DataFrame], field: str) -> pd.DataFrame:
    return pd.concat({name: df[field] for name, df in frames.items()}, axis=1)


def test_vectorbt_outputs_are_the_calibrated_tables(calibrated, feeds, table):
    pytest.importorskip("vectorbt")
    from kronos_alpha.adapters.vectorbt import KronosSignal

    bars = [wide(feeds, f) for f in ("open", "high", "low", "close", "volume")]
    sig = KronosSignal.run(*bars, forecaster=calibrated)
    for out in (*CALIBRATED, "pred_return", "path_min"):
        col = COLUMN.get(out, out)
        got = getattr(sig, out)
        want = table[col].unstack("instrument").reindex(index=got.index, columns=got.columns)
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
        if out in CALIBRATED:
            raw = table["raw_" + col].unstack("instrument").reindex_like(want)
            ok = want.notna().to_numpy()
            assert not np.allclose(got.to_numpy()[ok], raw.to_numpy()[ok]), out
    with pytest.raises(CalibrationError, match=r"KronosSignal.run: horizon 2 differs"):
        KronosSignal.run(*bars, horizon=[HORIZON, 2], forecaster=calibrated)
