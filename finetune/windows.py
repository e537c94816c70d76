"""Training windows cut from a panel of bar series.

A window is ``lookback + horizon`` consecutive bars of one series. It is normalised with
the mean and std of its lookback part only (``kronos_alpha.inference.data.scaler_stats`` /
``normalize``, clipped as at inference), so the scaler never sees the part the model
learns to forecast.

Masking policy (documented in finetune/README.md):
- A bar is *suspended* by the input boundary's one policy
  (``kronos_alpha.inference.panel.traded_mask``): volume NaN or <= 0 (Qlib's suspended days
  are flat forward-filled bars with volume 0 or empty), or a non-finite price on a series
  without volume data. Missing calendar days of a Qlib series count as suspended.
- A window never contains a suspended bar: suspensions cut a series into runs of tradable
  bars and windows lie inside one run. Features of each run come from
  ``kronos_alpha.inference.panel.ohlcv_matrix`` (amount = volume * mean(OHLC) when absent).
- A price NaN/inf or a negative price on a tradable bar is an error naming the series,
  column and timestamp; nothing is filled.
- Runs shorter than one window (short histories, listings, gaps) give no windows; the
  counts are reported in ``WindowDataset.report``.

Splits are by time: a window belongs to a split when all its bars lie in the split's date
range, and a window of a later split starts at least ``gap`` (>= horizon) bars after the
previous split's last bar on the same series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from kronos_alpha.inference.data import normalize, scaler_stats, time_features, unit_scale
from kronos_alpha.inference.panel import (
    AMOUNT_COL,
    VOLUME_COL,
    InputError,
    as_timestamps,
    clean_columns,
    column_name,
    missing_prices,
    ohlc_inconsistent,
    ohlcv_matrix,
    traded_mask,
    warn_inconsistent,
)


@dataclass
class Series:
    """One instrument: raw features (NaN on suspended bars), stamps, times, tradable mask."""

    name: str
    x: np.ndarray  # (n, 6) float32
    stamp: np.ndarray  # (n, 5) float32
    time: pd.DatetimeIndex
    tradable: np.ndarray  # (n,) bool


def series_from_frame(df: pd.DataFrame, name: str, time_column: str | None = None) -> Series:
    """Validate one instrument's bars. Timestamps: ``time_column`` or a DatetimeIndex.

    Columns, timestamps and the suspension policy are the input boundary's
    (``kronos_alpha.inference.panel``); a NaN price on a bar with volume is an error here.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"series {name!r} must be a DataFrame, got {type(df).__name__}")
    df = clean_columns(df, f"series {name!r}", features_only=False)
    time_column = column_name(time_column) if time_column else None
    if time_column and time_column in df.columns:
        time = as_timestamps(df[time_column], f"series {name!r} column {time_column!r}")
    elif isinstance(df.index, pd.DatetimeIndex):
        time = as_timestamps(df.index, f"series {name!r} index")
    else:
        raise InputError(
            f"series {name!r} has no timestamp column {time_column!r} and no DatetimeIndex"
        )
    missing = missing_prices(df.columns)
    if missing:
        raise InputError(
            f"series {name!r} is missing price column(s) {missing}; it has {list(df.columns)}"
        )
    frame = df.reset_index(drop=True)
    frame.index = time
    tradable, has_volume = traded_mask(frame, f"series {name!r}", nan_prices="raise")
    if not has_volume:
        frame = frame.drop(columns=[c for c in (VOLUME_COL, AMOUNT_COL) if c in frame.columns])
    x = np.full((len(frame), 6), np.nan, dtype=np.float32)
    for a, b in runs(tradable):
        x[a:b] = ohlcv_matrix(frame.iloc[a:b], name=f"series {name!r}")
    warn_inconsistent(ohlc_inconsistent(x) & tradable, time, f"series {name!r}", stacklevel=4)
    return Series(name, x, time_features(time), time, tradable)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True values."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def normalize_window(x: np.ndarray, lookback: int, clip: float):
    """The training transform: stats from x[:lookback] only, applied to the whole window
    (in the units inference uses: ``unit_scale`` of the lookback part, so a volume of 1e30
    trains on finite numbers, not on a float32 std of inf)."""
    x = x * unit_scale(x[None, :lookback])[1][0]
    mean, std = scaler_stats(x[:lookback])
    return normalize(x, mean, std, clip).astype(np.float32), mean, std


@dataclass
class WindowDataset:
    """Windows of a set of series; ``batch(indices)`` gives normalised tensors."""

    series: list[Series]
    index: np.ndarray  # (N, 2) int64: series number, start row
    lookback: int
    horizon: int
    clip: float
    report: dict = field(default_factory=dict)

    @property
    def window(self) -> int:
        return self.lookback + self.horizon

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        k, s = self.index[i]
        ser = self.series[k]
        x, _, _ = normalize_window(ser.x[s : s + self.window], self.lookback, self.clip)
        return x, ser.stamp[s : s + self.window]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        xs, stamps = zip(*(self[int(i)] for i in indices))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(stamps))


def split_windows(
    series: list[Series],
    ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    lookback: int,
    horizon: int,
    clip: float,
    stride: int = 1,
    gap: int | None = None,
) -> dict[str, WindowDataset]:
    """One WindowDataset per named split; ``ranges`` must be in time order."""
    w = lookback + horizon
    gap = horizon if gap is None else gap
    if gap < horizon:
        raise InputError(f"gap ({gap}) must be at least the horizon ({horizon})")
    out = {}
    prev_end = None
    for split, (start, end) in ranges.items():
        idx, short, masked, odd = [], 0, 0, 0
        for k, ser in enumerate(series):
            inside = np.asarray((ser.time >= start) & (ser.time <= end))
            if prev_end is not None:
                # Embargo: the first `gap` bars after the previous split's end start no window.
                first = int(np.asarray(ser.time <= prev_end).sum())  # times are sorted
                inside[first : first + gap] = False
            ok = inside & ser.tradable
            masked += int((inside & ~ser.tradable).sum())
            odd += int((ohlc_inconsistent(ser.x) & ok).sum())
            starts = []
            for a, b in runs(ok):
                if b - a >= w:
                    starts.extend(range(a, b - w + 1, stride))
            if inside.any() and not starts:
                short += 1
            idx.extend((k, s) for s in starts)
        index = np.array(idx, dtype=np.int64).reshape(-1, 2)
        report = {
            "split": split,
            "start": str(start.date()),
            "end": str(end.date()),
            "windows": len(index),
            "series_with_windows": len(np.unique(index[:, 0])) if len(index) else 0,
            "series_too_short": short,
            "suspended_bars_masked": masked,
            "ohlc_inconsistent_bars": odd,  # used as they are (panel.ohlc_inconsistent)
        }
        out[split] = WindowDataset(series, index, lookback, horizon, clip, report)
        prev_end = end
    return out


def epoch_order(n: int, count: int, seed: int, epoch: int) -> np.ndarray:
    """``count`` window numbers for one epoch: whole permutations of 0..n-1, then a part.

    A pure function of (seed, epoch), so a resumed run replays the same order.
    """
    rng = np.random.default_rng([seed, epoch])
    reps = -(-count // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]


def eval_subset(n: int, count: int | None, seed: int) -> np.ndarray:
    """A fixed validation subset (all windows when count is None or >= n)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7919]).choice(n, size=count, replace=False))
