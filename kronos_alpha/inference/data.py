"""Model inputs from validated bars: series, windows, stamps, normalisation, sampled bars.

The bars themselves are checked in ``kronos_alpha.inference.panel`` (the input boundary).
Here they become what the model reads: a ``Series`` per instrument (the suspension policy
applied), a ``Window`` per forecast, calendar stamps, the per-window normalisation, and
``sample_bars`` - the one call from raw bars to sampled raw paths, for the predictor and
the forecaster alike. Fine-tuning normalises through the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .panel import (
    AMOUNT_COL,
    PRICE_COLS,
    SKIP_REASONS,
    VOLUME_COL,
    InputError,
    ohlc_inconsistent,
    ohlcv_matrix,
    priced_mask,
    to_datetime_index,
    traded_mask,
    warn_inconsistent,
)
from .paths import sample_paths

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


UNIT_LEVEL = (2.0**-7, 2.0**40)  # a column's mean |value| outside this: rescale it exactly


def unit_scale(bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bars, per-window scale (B, 1, 6)): in each window, every column whose level (mean
    of |value|) is tiny or huge is multiplied by the power of two that brings its level
    into [64, 128).

    The normalisation's fixed epsilon (1e-5) would otherwise dominate the std of values near
    1e-5, and float32 squares overflow near 1e19. Every column is normalised by its own mean
    and std, and a power of two is exact in floating point, so the result equals that of the
    same bars quoted in other units (a price in another currency unit, a volume in lots, an
    amount in thousands). Column by column, so a corrupt spike in one column leaves the
    others' scale alone. Ordinary windows are untouched, bit for bit; an all-zero volume or
    amount stays as it is.
    """
    level = np.abs(bars.astype(np.float64)).mean(axis=-2)  # (B, 6), in float64: no overflow
    odd = (level > 0) & ((level < UNIT_LEVEL[0]) | (level > UNIT_LEVEL[1]))
    exp = np.where(odd, 6 - np.floor(np.log2(np.where(odd, level, 1.0))), 0.0)
    scale = np.exp2(exp)[:, None, :].astype(np.float32)
    if not odd.any():
        return bars, scale
    return bars * scale, scale


def sample_bars(
    tokenizer,
    model,
    bars: np.ndarray,
    stamp: np.ndarray,
    future_stamp: np.ndarray,
    max_context: int,
    sample_count: int,
    temperature: float,
    top_k: int,
    top_p: float,
    clip: float,
    uniforms: torch.Tensor | None = None,
    reference: bool = False,
    progress: bool = False,
    graphs: bool = False,
    names: list[str] | None = None,
) -> np.ndarray:
    """Raw bars (B, L, 6) -> sampled raw paths (B, sample_count, P, 6), float32.

    Each window is normalised by its own mean and std (``data.normalize``), sampled, and
    mapped back to prices: the one path from bars to forecasts. ``reference``: the
    published algorithm instead of the engine, ``graphs`` the engine with CUDA-graph steps
    (``paths.sample_paths``). A path that leaves float32's range is an error naming the window
    (``names[b]``): bars near 3.4e38 (a corrupt value, say) can forecast past it.
    """
    peak = np.abs(bars).max(axis=(-1, -2))
    bars, scale = unit_scale(bars)
    mean, std = scaler_stats(bars)
    x = normalize(bars, mean, std, clip)
    z = sample_paths(
        tokenizer,
        model,
        x,
        stamp,
        future_stamp,
        max_context,
        sample_count,
        temperature,
        top_k,
        top_p,
        uniforms,
        reference=reference,
        progress=progress,
        graphs=graphs,
    )
    y = denormalize(z, mean[:, None], std[:, None])
    with np.errstate(over="ignore"):
        y = (y / scale[:, None]).astype(np.float32)
    bad = ~np.isfinite(y).all(axis=(1, 2, 3))
    if bad.any():
        b = int(np.argmax(bad))
        raise InputError(
            f"{names[b] if names else f'window {b}'}: the forecast leaves float32's range "
            f"(its bars reach {peak[b]:.3g}; float32 ends at 3.4e38): check the bars for a "
            "corrupt value, or quote them in a larger unit"
        )
    return y


class Series:
    """One instrument after the suspension policy: its usable bars, features and stamps.

    By default suspended bars are dropped (a window is the last ``lookback`` traded bars);
    with ``fill_suspended`` they stay, NaN-priced ones as flat bars at the previous close with
    volume 0 (Qlib's own convention). ``dropped`` / ``filled`` count what the policy did.
    """

    def __init__(self, name: str, df: pd.DataFrame, fill_suspended: bool, stacklevel: int = 4):
        traded, has_volume = traded_mask(df, f"instrument {name!r}")
        if not has_volume:
            df = df.drop(columns=[c for c in (VOLUME_COL, AMOUNT_COL) if c in df.columns])
        priced = priced_mask(df, f"instrument {name!r}")
        self.raw_index = df.index
        if fill_suspended:
            first_ok = int(np.argmax(priced)) if priced.any() else len(df)
            keep = np.ones(len(df), bool)
            keep[:first_ok] = False  # nothing to fill from before the first priced bar
            df = df.iloc[first_ok:].copy()
            nan_rows = ~priced[first_ok:]
            close = df["close"].ffill()
            for c in PRICE_COLS:
                df.loc[nan_rows, c] = close[nan_rows]
            for c in (VOLUME_COL, AMOUNT_COL):
                if c in df.columns:
                    df[c] = df[c].fillna(0.0)
            self.filled, self.dropped, self.usable_raw = int(nan_rows.sum()), first_ok, keep
        else:
            df = df[traded]
            self.filled, self.dropped, self.usable_raw = 0, int((~traded).sum()), traded
        self.name = name
        self.index = df.index
        bad = ohlc_inconsistent(df)
        self.inconsistent = warn_inconsistent(
            bad, df.index, f"instrument {name!r}", stacklevel=stacklevel
        )
        self.x = (
            ohlcv_matrix(df, f"instrument {name!r}") if len(df) else np.zeros((0, 6), np.float32)
        )
        self.stamp = time_features(df.index)
        self.close = df["close"].to_numpy(dtype=np.float64)  # returns use the exact close


@dataclass(frozen=True)
class Window:
    """The context of one forecast: ``series``' usable bars up to position ``end``, for
    decision time ``time``."""

    time: pd.Timestamp
    instrument: str
    series: Series
    end: int

    @property
    def close(self) -> float:
        """The close at the decision time: the base of every predicted return."""
        return float(self.series.close[self.end])

    def bars(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(features (length, 6), stamps (length, 5)) of the last ``length`` bars."""
        lo = self.end + 1 - length
        return self.series.x[lo : self.end + 1], self.series.stamp[lo : self.end + 1]


def check_dates(dates, times: pd.DatetimeIndex, tz) -> pd.DatetimeIndex:
    """Requested decision times: unique, sorted, each a bar time of the panel."""
    if isinstance(dates, (str, pd.Timestamp)) or np.isscalar(dates):
        dates = [dates]
    idx = to_datetime_index(list(dates), "dates")
    if not len(idx):
        raise InputError("dates is empty; give decision times, or dates=None for every bar")
    if idx.hasnans:
        raise InputError(f"dates contain NaT at position {int(np.argmax(idx.isna()))}")
    if (idx.tz is None) != (tz is None):
        raise InputError(
            f"dates are timezone-{'naive' if idx.tz is None else 'aware'} but the panel's timestamps are "
            f"timezone-{'naive' if tz is None else 'aware'}; use the same convention"
        )
    idx = idx.unique().sort_values()
    outside = idx[~idx.isin(times)]
    if len(outside):
        t = outside[0]
        if t < times[0] or t > times[-1]:
            where = f"outside the data ({times[0]} .. {times[-1]})"
        else:
            where = f"not a bar time of the panel (previous bar {times[times.searchsorted(t) - 1]})"
        raise InputError(
            f"decision time {t} is {where}; {len(outside)} of {len(idx)} dates are not bar times"
        )
    return idx


def forecast_windows(series: dict[str, Series], dates, min_history: int):
    """(windows sorted by (time, instrument), requested count, skipped counts by reason).

    ``dates`` None asks for every row of the panel; otherwise every (date, instrument) pair.
    """
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    windows = []
    requested = 0
    for s in series.values():
        usable_pos = np.cumsum(s.usable_raw) - 1
        if dates is None:
            pairs = zip(s.raw_index, range(len(s.raw_index)))
        else:
            pairs = zip(dates, s.raw_index.get_indexer(dates))
        for t, r in pairs:
            requested += 1
            if r < 0:
                skipped["no_bar"] += 1
            elif not s.usable_raw[r]:
                skipped["suspended"] += 1
            elif usable_pos[r] + 1 < min_history:
                skipped["short_history"] += 1
            else:
                windows.append(Window(t, s.name, s, int(usable_pos[r])))
    windows.sort(key=lambda w: (w.time, w.instrument))
    return windows, requested, skipped


def check_one_frequency(series: dict) -> None:
    """One forecast call takes one kind of bar: a panel mixing intraday and daily (or longer)
    instruments would get one calendar's future bar times for both, so it is refused."""
    kinds: dict[bool, str] = {}
    for name, s in series.items():
        if len(s.raw_index) > 1:
            step = pd.Series(s.raw_index).diff().median()  # a Timedelta, whatever the unit
            kinds.setdefault(bool(step < pd.Timedelta(days=1)), name)
    if len(kinds) > 1:
        raise InputError(
            f"the panel mixes intraday bars (instrument {kinds[True]!r}) and daily or longer bars "
            f"(instrument {kinds[False]!r}); forecast each frequency in its own call"
        )


def window_index(windows: list[Window]) -> pd.MultiIndex:
    """The (datetime, instrument) index of a list of windows."""
    return pd.MultiIndex.from_arrays(
        [
            pd.DatetimeIndex([w.time for w in windows]),
            pd.Index([w.instrument for w in windows], dtype=object),
        ],
        names=["datetime", "instrument"],
    )


EWMA_DECAY = 0.94  # RiskMetrics' daily decay


def context_returns(w: Window, lookback: int) -> np.ndarray:
    """The close-to-close returns of the window's last ``lookback`` bars (per bar)."""
    c = w.series.close[max(0, w.end + 1 - lookback) : w.end + 1]
    return c[1:] / c[:-1] - 1


def context_vol(r: np.ndarray) -> float:
    """Std of the context's bar returns."""
    return float(np.std(r)) if len(r) else float("nan")


def context_ewma_vol(r: np.ndarray, decay: float = EWMA_DECAY) -> float:
    """RiskMetrics' zero-mean EWMA volatility of the context's bar returns: the root of
    sum w_i r_i^2 / sum w_i with w_i = decay^(age of r_i), so recent bars weigh most and a
    calm spell after a storm shows at once (the plain std keeps the storm for the whole
    window). The weights are normalised over the window, so no start value is assumed."""
    if not len(r):
        return float("nan")
    w = decay ** np.arange(len(r))[::-1]
    return float(np.sqrt(w @ (r * r) / w.sum()))


def summarise(
    windows: list[Window], paths, s, lookback: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the forecast table, the sampled horizon returns) from every window's sampled paths
    (samples, horizon, 6) under settings ``s``: both computed here, once."""
    cols = ["pred_return", "ret_mean", "ret_median", *s.quantile_columns]
    cols += ["ret_std", "prob_up", "pred_vol", "path_mean", "path_min", "path_max"]
    cols += ["hist_vol", "ewma_vol"]
    if s.return_paths:
        cols += [f"close_h{h + 1}" for h in range(s.horizon)]
    index = window_index(windows)
    if not windows:
        empty = pd.DataFrame(np.empty((0, s.sample_count)), index=index)  # one block, any count
        return pd.DataFrame(columns=cols, index=index, dtype=float), empty
    close = np.stack([p[..., 3] for p in paths]).astype(np.float64)  # (N, S, P)
    c0 = np.array([w.close for w in windows])[:, None]
    ret = close[:, :, -1] / c0 - 1  # (N, S)
    prev = np.concatenate(
        [np.broadcast_to(c0[:, :, None], close[:, :, :1].shape), close[:, :, :-1]], axis=2
    )
    bar_ret = close / prev - 1
    path_ret = close / c0[:, :, None] - 1  # every step's return over close[t]
    data = {
        "pred_return": ret.mean(1),
        "ret_mean": ret.mean(1),
        "ret_median": np.median(ret, 1),
    }
    for name, v in zip(s.quantile_columns, np.quantile(ret, s.quantiles, axis=1)):
        data[name] = v
    data["ret_std"] = ret.std(1)
    data["prob_up"] = (ret > 0).mean(1)
    data["pred_vol"] = bar_ret.reshape(len(windows), -1).std(1)
    data["path_mean"] = path_ret.mean((1, 2))
    data["path_min"] = path_ret.min(2).mean(1)
    data["path_max"] = path_ret.max(2).mean(1)
    context = [context_returns(w, lookback or s.lookback) for w in windows]
    data["hist_vol"] = [context_vol(r) for r in context]
    data["ewma_vol"] = [context_ewma_vol(r) for r in context]
    if s.return_paths:
        for h, v in enumerate(close.mean(1).T):
            data[f"close_h{h + 1}"] = v
    table = pd.DataFrame(data, index=index, columns=cols)
    return table, pd.DataFrame(ret, index=index)
