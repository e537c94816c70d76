"""Turning a (datetime, instrument) signal into the wide date x instrument frame the books use.

Convention used everywhere in ``kronos_alpha.strategies``: a signal, return or weight table is a
*wide* DataFrame, index ``datetime`` (sorted, unique), columns ``instrument``. A weight row at date
t is the target book decided with information up to the close of t; it earns the return from the
close of t to the close of t+1 (Qlib's convention: the score of t is traded on t+1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import StrategyInputError


def to_wide(signal: pd.Series | pd.DataFrame, column: str = "pred_return") -> pd.DataFrame:
    """A (datetime, instrument) Series/DataFrame (or an already wide frame) as wide float frame.

    ``column`` picks the score column of a long DataFrame (the Forecaster's ``pred_return`` by
    default; a one-column frame uses its only column). Duplicate (datetime, instrument) pairs and
    non-numeric scores are errors; +/-inf become errors too, NaN means "no score on that date".
    """
    if isinstance(signal, pd.DataFrame) and not isinstance(signal.index, pd.MultiIndex):
        wide = signal.copy()
    else:
        if not isinstance(signal.index, pd.MultiIndex) or signal.index.nlevels != 2:
            raise StrategyInputError(
                "signal must be indexed by a (datetime, instrument) MultiIndex or be a wide "
                f"date x instrument DataFrame; got index {type(signal.index).__name__}"
            )
        if isinstance(signal, pd.DataFrame):
            if column in signal.columns:
                signal = signal[column]
            elif signal.shape[1] == 1:
                signal = signal.iloc[:, 0]
            else:
                raise StrategyInputError(
                    f"signal has no column {column!r}; columns are {list(signal.columns)}"
                )
        names = list(signal.index.names)
        if "datetime" in names and "instrument" in names:
            signal = signal.reorder_levels(["datetime", "instrument"])
        dup = signal.index.duplicated()
        if dup.any():
            raise StrategyInputError(
                f"signal has duplicate (datetime, instrument) rows, first {signal.index[dup][0]}"
            )
        wide = signal.unstack(level=1)
    wide.index = pd.DatetimeIndex(wide.index, name="datetime")
    wide.columns.name = "instrument"
    try:
        wide = wide.astype(float)
    except (TypeError, ValueError) as exc:
        raise StrategyInputError(f"signal scores must be numeric: {exc}") from None
    if np.isinf(wide.to_numpy()).any():
        date = wide.index[np.isinf(wide.to_numpy()).any(axis=1)][0]
        raise StrategyInputError(f"signal has +/-inf scores on {date:%Y-%m-%d}")
    if not wide.index.is_monotonic_increasing or wide.index.has_duplicates:
        wide = wide.sort_index()
        if wide.index.has_duplicates:
            raise StrategyInputError("signal has duplicate dates")
    return wide


def to_long(wide: pd.DataFrame, name: str = "weight", drop_zero: bool = True) -> pd.Series:
    """The wide frame as a (datetime, instrument) Series (Qlib's layout) without NaN cells;
    zeros dropped too by default."""
    s = wide.stack().dropna()
    s.index.names = ["datetime", "instrument"]
    s.name = name
    return s[s != 0] if drop_zero else s
