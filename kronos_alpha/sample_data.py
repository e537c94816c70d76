"""Real daily bars for examples and the offline CLI: AAPL, GOOG, IBM and MSFT from the
``bokeh-sampledata`` package (BSD-3-Clause; the data are Quandl WIKI prices, public
domain), 2000 to March 2013.

The source's open/high/low/close/volume are unadjusted; by default they are split- and
dividend-adjusted with the source's ``adj_close`` (prices times adj_close / close, volume
divided by it), so splits do not show as crashes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")


def _module():
    try:
        import bokeh_sampledata.stocks as stocks
    except ImportError as exc:
        raise ImportError(
            "the bundled sample data come from the bokeh-sampledata package: pip install bokeh-sampledata"
        ) from exc
    return stocks


def load_stock(ticker: str = "AAPL", adjust: bool = True) -> pd.DataFrame:
    """Daily bars of one ticker, indexed by date (``datetime``), columns open high low close volume."""
    stocks = _module()
    name = ticker.upper()
    if name not in TICKERS:
        raise ValueError(f"unknown sample ticker {ticker!r}; available: {list(TICKERS)}")
    raw = getattr(stocks, name)
    df = pd.DataFrame({c: raw[c] for c in ("open", "high", "low", "close", "volume", "adj_close")})
    df.index = pd.DatetimeIndex(pd.to_datetime(raw["date"]), name="datetime")
    df = df.astype(float).sort_index()
    if adjust:
        factor = df.pop("adj_close") / df["close"]
        for c in ("open", "high", "low", "close"):
            df[c] = df[c] * factor
        df["volume"] = df["volume"] / factor
    else:
        df = df.drop(columns="adj_close")
    return df[np.isfinite(df).all(axis=1)]


def load_panel(tickers=TICKERS, adjust: bool = True) -> dict[str, pd.DataFrame]:
    """{ticker: daily bars} for the Forecaster."""
    return {t.upper(): load_stock(t, adjust) for t in tickers}


def shared_folder() -> Path:
    """The project's shared data and fixtures (not shipped): ``$KRONOS_SHARED``, else the
    ``shared`` folder beside this checkout. Tests and examples read it through this one place."""
    return Path(os.environ.get("KRONOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
