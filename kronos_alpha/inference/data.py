"""Model inputs from validated bars: calendar stamps and the per-window normalisation.

The bars themselves are checked in ``kronos_alpha.inference.panel`` (the input boundary);
inference, the forecaster and fine-tuning all normalise through these functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STAMP_COLS = ["minute", "hour", "weekday", "day", "month"]
NORM_EPS = 1e-5


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
