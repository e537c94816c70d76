"""The one place where bars become model inputs: validation, features, calendar stamps,
normalisation. Inference, the forecaster and fine-tuning all call these functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PRICE_COLS = ["open", "high", "low", "close"]
VOLUME_COL = "volume"
AMOUNT_COL = "amount"
FEATURE_COLS = PRICE_COLS + [VOLUME_COL, AMOUNT_COL]
STAMP_COLS = ["minute", "hour", "weekday", "day", "month"]
NORM_EPS = 1e-5


class InputError(ValueError):
    """Bad market data: the message names the column, row or argument at fault."""


def ohlcv_matrix(df: pd.DataFrame, name: str = "df") -> np.ndarray:
    """Validate bars and return the six model features as float32, shape (n, 6).

    Missing volume -> volume and amount are 0; missing amount -> volume * mean(OHLC), as the
    published predictor does. NaN/inf values and negative prices are errors.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InputError(f"{name} is empty")
    missing = [c for c in PRICE_COLS if c not in df.columns]
    if missing:
        raise InputError(f"{name} is missing price column(s) {missing}; it has {list(df.columns)}")
    prices = df[PRICE_COLS].to_numpy(dtype=np.float64)
    if VOLUME_COL in df.columns:
        volume = df[VOLUME_COL].to_numpy(dtype=np.float64)
        if AMOUNT_COL in df.columns:
            amount = df[AMOUNT_COL].to_numpy(dtype=np.float64)
        else:
            amount = volume * prices.mean(axis=1)
    else:
        volume = np.zeros(len(df))
        amount = np.zeros(len(df))
    x = np.column_stack([prices, volume, amount])
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"{name} has {int(bad.sum())} NaN/inf value(s); first in column "
            f"{FEATURE_COLS[col]!r} at row {df.index[row]!r}"
        )
    neg = prices < 0
    if neg.any():
        row, col = np.argwhere(neg)[0]
        raise InputError(
            f"{name} has a negative price in column {PRICE_COLS[col]!r} at row {df.index[row]!r}"
        )
    return x.astype(np.float32)


def as_timestamps(ts, name: str = "timestamps") -> pd.DatetimeIndex:
    """A DatetimeIndex from a Series, Index or list; strictly increasing, no duplicates."""
    try:
        idx = pd.DatetimeIndex(
            pd.to_datetime(pd.Series(ts).to_numpy() if not isinstance(ts, pd.Index) else ts)
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} are not timestamps: {exc}") from exc
    if idx.hasnans:
        raise InputError(f"{name} contain NaT at position {int(np.argmax(idx.isna()))}")
    if idx.has_duplicates:
        dup = idx[idx.duplicated()][0]
        raise InputError(f"{name} contain a duplicated timestamp {dup}")
    if not idx.is_monotonic_increasing:
        pos = int(np.argmax(np.diff(idx.asi8) < 0)) + 1
        raise InputError(
            f"{name} are out of order at position {pos} ({idx[pos - 1]} then {idx[pos]})"
        )
    return idx


def time_features(ts: pd.DatetimeIndex) -> np.ndarray:
    """Calendar stamps (minute, hour, weekday with Monday=0, day, month) as float32 (n, 5)."""
    return np.column_stack([ts.minute, ts.hour, ts.day_of_week, ts.day, ts.month]).astype(
        np.float32
    )


def scaler_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over the time axis (-2) of float32 bars (... , n, 6)."""
    return np.mean(x, axis=-2, keepdims=True), np.std(x, axis=-2, keepdims=True)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float) -> np.ndarray:
    """(x - mean) / (std + 1e-5), clipped to +-clip. A constant column maps to 0, never NaN."""
    return np.clip((x - mean) / (std + NORM_EPS), -clip, clip)


def denormalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return x * (std + NORM_EPS) + mean
