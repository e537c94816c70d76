"""The input boundary's check of an adapter's feed: a backtrader data or a vectorbt column
(its values and the suspension policy go through ``panel``, like every other door's bars)."""

from __future__ import annotations

import warnings

import numpy as np

from .panel import PRICE_COLS, InputError, numeric_matrix, traded_mask

NAN_BAR_POLICIES = ("raise", "skip")


def check_feed_bars(df, name: str, nan_bars="raise", what="data", warn=True, stacklevel=2):
    """The listed span of an adapter's feed: a slice from its first to its last bar with any
    price (None: no bar has one). Bars outside it are before listing or after delisting (the
    forecaster skips them; their times stay its calendar). A NaN price inside it is an
    InputError naming the feed, column and bar (``nan_bars="raise"``) or, with ``"skip"``, a
    suspended bar. ``warn``: a warning when the span has no volume data (forecast from prices)."""
    if nan_bars not in NAN_BAR_POLICIES:
        raise InputError(f"nan_bars must be one of {NAN_BAR_POLICIES}, got {nan_bars!r}")
    finite = np.isfinite(numeric_matrix(df, PRICE_COLS, f"{what} {name!r}"))
    listed = finite.any(axis=1)
    if not listed.any():
        return None
    span = slice(int(np.argmax(listed)), len(df) - int(np.argmax(listed[::-1])))
    bars, finite = df.iloc[span], finite[span]
    bad = ~finite.all(axis=1)
    if bad.any() and nan_bars == "raise":
        r = int(np.argmax(bad))
        raise InputError(
            f"{what} {name!r} has a NaN {PRICE_COLS[int(np.argmin(finite[r]))]!r} price on the bar "
            f"of {bars.index[r]} ({int(bad.sum())} such bar(s) within its priced span); clean the "
            "bars, or pass nan_bars='skip' to treat them as suspended bars"
        )
    if warn and not traded_mask(bars, f"{what} {name!r}")[1]:
        msg = f"{what} {name!r} has no volume (all NaN or 0): Kronos forecasts it from prices only"
        warnings.warn(msg, stacklevel=stacklevel + 1)
    return span
