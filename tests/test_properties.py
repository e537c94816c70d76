"""Property tests (hypothesis): generated hostile panels and settings through the doors.

The property: the project raises one of its own clear errors, or it returns a finite table
whose rows are all accounted for (computed + from cache + skipped = requested).
60 examples per test in CI; ``KRONOS_PROPERTY_EXAMPLES=600`` searches deeper (about a minute).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kronos_alpha import Forecaster, InputError, KronosPredictor
from kronos_alpha.inference.device import MemoryEstimateError
from kronos_alpha.inference.settings import SettingsError

OURS = (InputError, SettingsError, MemoryEstimateError)
PROFILE = settings(
    max_examples=int(os.environ.get("KRONOS_PROPERTY_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@pytest.fixture(scope="module")
def tiny():
    from conftest import TINY_MODEL, TINY_TOKENIZER

    from kronos_alpha import Kronos, KronosTokenizer

    torch.manual_seed(0)
    return Kronos(**TINY_MODEL).eval(), KronosTokenizer(**TINY_TOKENIZER).eval()


def often(draw, value, rarely):
    """``value`` four times in five, else one of ``rarely``."""
    return value if draw(st.integers(0, 4)) else draw(st.sampled_from(rarely))


@st.composite
def frames(draw):
    """One instrument's bars, with whatever a hostile user might hand over."""
    n = draw(st.sampled_from([0, 1, 3, 12, 25, 40, 40, 40]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    level = often(
        draw, 100.0, [1.0, 1e-6, 1e6, 1e30, 1e-40, 1e-300]
    )  # float32 flushes the last two
    c = level * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    o = c * (1 + rng.normal(0, 0.005, n))
    df = pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) * 1.01,
            "low": np.minimum(o, c) * 0.99,
            "close": c,
            # volume in any unit: shares, lots, a token's base units (1e20), fractions
            "volume": often(draw, 1.0, [1e-9, 1e20, 1e36]) * rng.uniform(1e3, 1e6, n),
        }
    )
    amount = often(draw, None, [1e7, 1e-3, 1e25, 1e37])  # given, in its own unit
    if amount is not None:
        df["amount"] = amount * rng.uniform(1, 2, n)
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):  # bad or odd values at random cells
        if n:
            col = draw(st.sampled_from(list(df.columns)))
            row = draw(st.integers(0, n - 1))
            value = draw(
                st.sampled_from([np.nan, np.inf, -1.0, 0.0, 1e39, 3e38, 1e-12, "n/a", True])
            )
            if not isinstance(value, float):  # text or a flag: the column becomes object
                df[col] = df[col].astype(object)
            df.loc[row, col] = value
    if n:  # suspended bars: volume 0 or NaN
        rows = draw(st.lists(st.integers(0, n - 1), max_size=4))
        df.loc[rows, "volume"] = draw(st.sampled_from([0.0, np.nan]))
    drop = often(draw, None, ["volume", "open", "close"])
    if drop:
        df = df.drop(columns=drop)
    if draw(st.booleans()):
        df.columns = [draw(st.sampled_from(["", "$"])) + c.upper() for c in df.columns]
    df = df.astype(often(draw, "float64", ["float32", "object"]), errors="ignore")
    kind = often(draw, None, ["bool volume", "date close", "twice"])
    if kind == "bool volume" and "volume" in df.columns:
        df["volume"] = df["volume"].notna()
    elif kind == "date close" and "close" in df.columns:
        df["close"] = pd.date_range("2020-01-01", periods=n)
    elif kind == "twice" and len(df.columns):
        df = pd.concat([df, df.iloc[:, [0]]], axis=1)
    days = pd.bdate_range("2021-01-04", periods=n)
    form = often(draw, "dates", ["dup", "unsorted", "nat", "column", "ymd", "range", "tz"])
    if form == "dup" and n > 2:
        days = days.insert(1, days[0])[:n]
    elif form == "unsorted":
        days = days[::-1]
    elif form == "nat" and n:
        days = days.where(np.arange(n) != n // 2, pd.NaT)
    if form == "column":
        df.insert(0, "date", days.strftime("%Y-%m-%d"))
    elif form == "ymd":
        df.index = days.strftime("%Y%m%d").astype(int)
    elif form == "tz":
        df.index = days.tz_localize("Asia/Shanghai")
    elif form != "range":
        df.index = days
    return df


@st.composite
def run_settings(draw):
    lookback = draw(st.integers(2, 30))
    kw = dict(
        lookback=lookback,
        horizon=draw(st.integers(1, 5)),
        sample_count=draw(st.integers(1, 3)),
        T=draw(st.sampled_from([0.0, 0.5, 1.0, 1.0])),
        top_k=draw(st.sampled_from([0, 0, 1, 3])),
        top_p=draw(st.sampled_from([0.5, 0.9, 1.0])),
        min_history=draw(st.one_of(st.none(), st.integers(2, lookback))),
        fill_suspended=draw(st.booleans()),
    )
    bad = often(
        draw, None, ["lookback", "horizon", "sample_count", "T", "top_k", "top_p", "min_history"]
    )
    if bad:
        kw[bad] = draw(st.sampled_from([0, -1, 2.5, True, float("nan"), 10**30]))
    return kw


def accounted(fc, table) -> None:
    r = fc.report
    assert r["computed"] + r["from_cache"] + r["skipped_total"] == r["requested"]
    assert len(table) == r["computed"] + r["from_cache"]
    assert np.isfinite(table.to_numpy(dtype=np.float64)).all()


@PROFILE
@given(
    panel=st.dictionaries(st.sampled_from(["A", "B", "C"]), frames(), min_size=1, max_size=3),
    kw=run_settings(),
    last=st.booleans(),
)
def test_forecaster_errors_are_ours_or_every_row_is_accounted_for(tiny, panel, kw, last):
    model, tok = tiny
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = Forecaster(model, tok, progress=False, **kw)
            first = next(iter(panel.values()))
            dates = None
            if last and len(first) and isinstance(first.index, pd.DatetimeIndex):
                dates = first.index[-1:]
            table = fc.forecast(panel, dates=dates)
    except OURS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("forecast" if len(table) else "forecast, every row skipped")
    accounted(fc, table)


@PROFILE
@given(df=frames(), kw=run_settings())
def test_predictor_errors_are_ours_or_the_forecast_is_finite(tiny, df, kw):
    model, tok = tiny
    predictor = KronosPredictor(model, tok, max_context=32)
    n = kw["horizon"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = (
                pd.Series(df.index)
                if isinstance(df.index, pd.DatetimeIndex)
                else pd.Series(pd.bdate_range("2021-01-04", periods=len(df)))
            )
            last = (
                times.iloc[-1]
                if len(times) and not pd.isna(times.iloc[-1])
                else pd.Timestamp("2021-01-01")
            )
            periods = n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10 else 3
            future = pd.Series(pd.bdate_range(last + pd.offsets.BDay(1), periods=periods))
            out = predictor.predict(
                df,
                times,
                future,
                pred_len=n,
                T=kw["T"],
                top_k=kw["top_k"],
                top_p=kw["top_p"],
                sample_count=kw["sample_count"],
                seed=0,
                verbose=False,
            )
    except OURS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("forecast")
    assert out.shape == (n, 6) and np.isfinite(out.to_numpy()).all()
    prices = pd.to_numeric(pd.Series(df.to_numpy().ravel()), errors="coerce").abs()
    if not (prices > 1e30).any():  # a corrupt 3e38 cell (its bar warned of and counted as
        # OHLC-inconsistent) spans a std far above its mean: mean - z*std goes below 0
        assert (out[["open", "high", "low", "close"]].to_numpy() > 0).all()


# -- the adapters -------------------------------------------------------------------------------
@st.composite
def wide_bars(draw):
    """Wide (time x instrument) OHLCV frames as a vectorbt user hands them over."""
    n = draw(st.sampled_from([0, 3, 20, 30, 30]))
    names = draw(st.sampled_from([["A", "B"], [1, 2, 3], ["X"], [1, "1"]]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    c = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n, len(names))), axis=0))
    wide = {
        "open": c * (1 + rng.normal(0, 0.003, c.shape)),
        "close": c,
        "volume": rng.uniform(1e3, 1e5, c.shape),
    }
    wide["high"] = np.maximum(wide["open"], c) * 1.01
    wide["low"] = np.minimum(wide["open"], c) * 0.99
    for _ in range(draw(st.sampled_from([0, 0, 1, 4]))):
        if n:
            f = draw(st.sampled_from(sorted(wide)))
            wide[f][draw(st.integers(0, n - 1)), draw(st.integers(0, len(names) - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -2.0, 0.0])
            )
    index = often(draw, pd.bdate_range("2021-01-04", periods=n), [pd.RangeIndex(n)])
    frames = {k: pd.DataFrame(v, index=index, columns=names) for k, v in wide.items()}
    if draw(st.integers(0, 4)) == 0:  # one frame with its columns in another order
        k = draw(st.sampled_from(sorted(frames)))
        frames[k] = frames[k][frames[k].columns[::-1]]
    return frames


@PROFILE
@given(frames=wide_bars(), kw=run_settings(), nan_bars=st.sampled_from(["raise", "skip"]))
def test_vectorbt_errors_are_ours_or_every_output_is_accounted_for(tiny, frames, kw, nan_bars):
    from kronos_alpha.adapters.vectorbt import kronos_cache

    model, tok = tiny
    base = Forecaster(model, tok, progress=False)
    combo = (kw.pop("lookback"), kw.pop("horizon"), kw.pop("sample_count"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = kronos_cache(
                *(frames[f] for f in ("open", "high", "low", "close", "volume")),
                [combo[0]], [combo[1]], [combo[2]],
                forecaster=base, settings=kw, nan_bars=nan_bars,
            )  # fmt: skip
    except OURS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("forecast")
    outputs = out[combo]
    close = frames["close"]
    for arr in outputs:
        assert arr.shape == close.shape
        assert not np.isinf(arr).any()  # a value, or NaN for a bar without a forecast
    assert (np.isnan(outputs[0]) == np.isnan(outputs[-1])).all()


@PROFILE
@given(df=frames(), kw=run_settings())
def test_backtrader_errors_are_ours_or_every_line_value_is_finite_or_warm_up(tiny, df, kw):
    bt = pytest.importorskip("backtrader")
    from kronos_alpha.adapters.backtrader import Kronos

    model, tok = tiny
    base = Forecaster(model, tok, progress=False)
    if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is not None or len(df) < 2:
        return  # backtrader's PandasData itself needs a naive DatetimeIndex
    if df.index.hasnans or df.index.has_duplicates or not df.index.is_monotonic_increasing:
        return
    df = df.copy()
    df.columns = [str(c).lstrip("$").lower() for c in df.columns]
    if not {"open", "high", "low", "close"} <= set(df.columns):
        return
    try:
        df = df.astype("float64")
    except (TypeError, ValueError):
        return  # text or datetime columns: PandasData holds float lines, the door never sees them

    class Run(bt.Strategy):
        def __init__(self):
            self.k = Kronos(
                self.data,
                forecaster=base,
                **{k: kw[k] for k in ("lookback", "horizon", "sample_count")},
            )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.adddata(bt.feeds.PandasData(dataname=df), name="A")
            cerebro.addstrategy(Run)
            strat = cerebro.run()[0]
    except OURS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("forecast")
    values = np.asarray(strat.k.lines.pred_return.array, dtype=np.float64)
    assert len(values) == len(df) and not np.isinf(values).any()


@PROFILE
@given(
    panel=st.dictionaries(
        st.sampled_from(["SH600000", "SZ000001", "X"]), frames(), min_size=1, max_size=2
    ),
    kw=run_settings(),
)
def test_qlib_model_errors_are_ours_or_every_score_is_finite_and_accounted_for(tiny, panel, kw):
    pytest.importorskip("qlib")
    from kronos_alpha.adapters.qlib import KronosModel
    from qlib.data.dataset import DatasetH
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.data.dataset.loader import StaticDataLoader

    parts = []
    for name, df in panel.items():
        if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is not None or len(df) < 2:
            return  # a Qlib handler holds a naive (datetime, instrument) index
        if df.index.hasnans or df.index.has_duplicates or not df.index.is_monotonic_increasing:
            return
        if df.columns.has_duplicates:
            return  # a Qlib handler's columns are unique
        body = df.copy()
        body.columns = pd.MultiIndex.from_tuples([("feature", str(c)) for c in body.columns])
        body[("label", "LABEL0")] = 0.0
        body.index = pd.MultiIndex.from_arrays(
            [df.index, [name] * len(df)], names=["datetime", "instrument"]
        )
        parts.append(body)
    data = pd.concat(parts).sort_index()
    days = data.index.get_level_values("datetime").unique().sort_values()
    model, tok = tiny
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handler = DataHandlerLP(
                data_loader=StaticDataLoader(data), learn_processors=[], infer_processors=[]
            )
            dataset = DatasetH(handler, segments={"test": (days[len(days) // 2], days[-1])})
            m = KronosModel(model=model, tokenizer=tok, **kw)
            score = m.predict(dataset, "test")
    except OURS as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("scored")
    r = m.last_report
    assert np.isfinite(score.to_numpy()).all()
    assert r["computed"] + r["from_cache"] + r["skipped_total"] == r["requested"]
    assert len(score) <= r["computed"] + r["from_cache"]


@st.composite
def forecast_tables(draw):
    """Forecast rows with hostile volatility columns: zeros (a flat context), NaN, tiny and
    huge values, and outcomes from calm to wild."""
    n = draw(st.sampled_from([40, 100, 200, 400]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    index = pd.MultiIndex.from_product(
        [pd.bdate_range("2020-01-01", periods=n // 10), [f"I{k}" for k in range(10)]],
        names=["datetime", "instrument"],
    )
    cols = {"ret_mean": rng.normal(0, 0.01, n), "ret_std": rng.uniform(0, 0.05, n)}
    for name in ("pred_vol", "hist_vol", "ewma_vol"):
        v = rng.uniform(0.001, 0.05, n) * often(draw, 1.0, [0.0, 1e-12, 1e6])
        v[rng.random(n) < draw(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5]))] = np.nan
        cols[name] = v
    scale = often(draw, 0.03, [0.0, 1e-9, 10.0])
    return pd.DataFrame(cols, index=index), scale * rng.standard_t(3, n)


@PROFILE
@given(data=forecast_tables(), test=forecast_tables())
def test_calibrator_errors_are_ours_or_its_distribution_is_finite_and_ordered(data, test):
    from kronos_alpha.inference.calibration import CalibrationError, Calibrator, fit

    table, y = data
    try:
        cal = fit(table, y, 5, {}, "2030-01-01")
    except CalibrationError as exc:
        event(f"refused: {str(exc)[:40]}")
        return
    assert Calibrator.from_dict(cal.to_dict()) == cal  # never a NaN or negative elasticity
    rows = test[0]
    q = cal.quantiles(rows, [0.05, 0.1, 0.5, 0.9, 0.95])
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    assert np.all(cal.spread(rows) >= cal.floor)
    p = 1 - cal.cdf(rows, 0.0)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


CELLS = ["2024-01-02", "2024-01-03", "2024/01/05", "1.5", "abc", "", "nan", "-1", "1e39", "0",
         '"q,uoted"', "NaT", "True", "  3 ", "1,5", "\t", "SH600000"]  # fmt: skip
COLUMNS = ["date", "Date", "datetime", "open", "OPEN", "high", "low", "close", "volume",
           "amount", "instrument", "score", "x", ""]  # fmt: skip
GOOD = ["datetime", "instrument", "open", "high", "low", "close", "volume", "score"]


@st.composite
def csv_files(draw):
    """A small bar/signal file: a good one with a few cells (or its header) spoilt, or junk."""
    n = draw(st.integers(0, 8))
    if draw(st.booleans()):  # junk
        header = draw(st.lists(st.sampled_from(COLUMNS), max_size=8))
        rows = draw(st.lists(st.lists(st.sampled_from(CELLS), max_size=9), max_size=n))
    else:
        header = list(GOOD) if draw(st.booleans()) else draw(st.permutations(GOOD))
        days = pd.bdate_range("2024-01-02", periods=n).strftime("%Y-%m-%d")
        rows = [[d, draw(st.sampled_from(["SH600000", "SZ000001"])), "10", "10.5", "9.5",
                 "10.2", "1000", "0.01"] for d in days]  # fmt: skip
        order = [GOOD.index(c) for c in header]
        rows = [[r[k] for k in order] for r in rows]
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            if rows:
                row = draw(st.integers(0, len(rows) - 1))
                rows[row][draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(CELLS))
        if draw(st.integers(0, 4)) == 0 and header:  # a spoilt header name
            header[draw(st.integers(0, len(header) - 1))] = draw(st.sampled_from(COLUMNS))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    text = sep.join(header) + "\n" + "\n".join(sep.join(r) for r in rows)
    return text.replace("\n", "\r\n") if draw(st.booleans()) else text, draw(st.booleans())


@PROFILE
@given(file=csv_files())
def test_input_file_readers_raise_our_errors_or_read_checked_bars(tmp_path_factory, file):
    """Small CSV files, good and spoilt, through the forecast and evaluate commands' readers."""
    from kronos_alpha.cli.evaluate import read_signal
    from kronos_alpha.cli.forecast import read_bars
    from kronos_alpha.inference.frames import split_panel
    from kronos_alpha.inference.panel import ohlcv_matrix

    text, bom = file
    path = tmp_path_factory.mktemp("file") / "x.csv"
    path.write_text(text, encoding="utf-8-sig" if bom else "utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for name, df in split_panel(read_bars(str(path))).items():
                assert np.isfinite(ohlcv_matrix(df, name)).all()
            event("bars read")
        except InputError:
            event("bars refused")
        try:
            signal, _ = read_signal(str(path), None)
            assert list(signal.index.names) == ["datetime", "instrument"]
            assert not signal.index.to_frame().isna().any().any()  # every row has both
            event("signal read")
        except InputError:
            event("signal refused")
