"""Property tests (hypothesis): generated hostile panels and settings through the doors.

The property: the project raises one of its own clear errors, or it returns a finite table
whose rows are all accounted for (computed + from cache + skipped = requested).
"""

from __future__ import annotations

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
    max_examples=60,
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
    level = often(draw, 100.0, [1.0, 1e-6, 1e6, 1e30])
    c = level * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    o = c * (1 + rng.normal(0, 0.005, n))
    df = pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) * 1.01,
            "low": np.minimum(o, c) * 0.99,
            "close": c,
            "volume": rng.uniform(1e3, 1e6, n),
        }
    )
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):  # bad or odd values at random cells
        if n:
            col = draw(st.sampled_from(list(df.columns)))
            row = draw(st.integers(0, n - 1))
            df.loc[row, col] = draw(st.sampled_from([np.nan, np.inf, -1.0, 0.0, 1e39, 1e-12]))
    if n:  # suspended bars: volume 0 or NaN
        rows = draw(st.lists(st.integers(0, n - 1), max_size=4))
        df.loc[rows, "volume"] = draw(st.sampled_from([0.0, np.nan]))
    drop = often(draw, None, ["volume", "open", "close"])
    if drop:
        df = df.drop(columns=drop)
    if draw(st.booleans()):
        df.columns = [draw(st.sampled_from(["", "$"])) + c.upper() for c in df.columns]
    df = df.astype(often(draw, "float64", ["float32", "object"]))
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
    assert (out[["open", "high", "low", "close"]].to_numpy() > 0).all()
