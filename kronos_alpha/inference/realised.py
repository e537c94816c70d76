"""Realised horizon returns of past decision dates, read from a panel cut at what they need.

Calibration compares forecasts at past decision times t with what happened next: the close
``horizon`` bar times of the panel after t over the close at t (Qlib's ``Ref($close, -h) /
$close - 1``; a suspended bar's carried close counts, a missing or unpriced one leaves the
pair unrealised). The panel is cut at the last bar time the latest date's outcome needs, so
nothing after it can enter a fit (tested by planting garbage after the cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .calibration import CalibrationError, check_choices, fit
from .data import check_dates
from .frames import split_panel


@dataclass(frozen=True)
class CalibrationPanel:
    """The panel cut for a calibration, its dates and the last bar time it reads."""

    panel: object
    dates: pd.DatetimeIndex
    realised_end: pd.Timestamp


def bar_times(frames: dict) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(
        pd.concat([f.index.to_series() for f in frames.values()]).unique()
    ).sort_values()


def cut_for_calibration(panel, dates, horizon: int) -> CalibrationPanel:
    """Refuse dates whose outcome is not in the panel (naming the first), then cut the panel
    after the latest date's outcome bar."""
    if dates is None or (not isinstance(dates, str) and np.ndim(dates) and len(dates) == 0):
        raise CalibrationError(
            "calibrate needs past decision dates (a list or DatetimeIndex of bar times whose "
            f"{horizon}-bar outcome is in the panel), got {dates!r}"
        )
    frames = split_panel(panel)
    times = bar_times(frames)
    dates = check_dates(dates, times, times.tz)
    pos = times.get_indexer(dates)
    late = pos + horizon > len(times) - 1
    if late.any():
        first = dates[int(np.argmax(late))]
        raise CalibrationError(
            f"decision date {first} has no realised {horizon}-bar return in the panel (its last "
            f"bar is {times[-1]}); {int(late.sum())} of {len(dates)} dates are too late to calibrate on"
        )
    end = times[int(pos.max()) + horizon]
    cut = {name: f[f.index <= end] for name, f in frames.items()}
    return CalibrationPanel({k: f for k, f in cut.items() if len(f)}, dates, end)


def realised_returns(panel, index: pd.MultiIndex, horizon: int) -> np.ndarray:
    """close[t + horizon bar times] / close[t] - 1 for every (t, instrument) of ``index``
    (NaN where either close is missing or not positive)."""
    frames = split_panel(panel)
    times = bar_times(frames)
    out = np.full(len(index), np.nan)
    t = index.get_level_values("datetime")
    inst = index.get_level_values("instrument")
    pos = times.get_indexer(t)
    ahead = np.where((pos >= 0) & (pos + horizon < len(times)), pos + horizon, -1)
    for name in pd.unique(inst):
        rows = np.flatnonzero(inst == name)
        close = frames[name]["close"].astype(np.float64).reindex(times).to_numpy()
        c0 = close[pos[rows]]
        c1 = np.where(ahead[rows] >= 0, close[np.maximum(ahead[rows], 0)], np.nan)
        ok = (c0 > 0) & (c1 > 0)
        out[rows[ok]] = c1[ok] / c0[ok] - 1
    return out


TUNE_GRID = ((0.7, 0.9), (1.0, 0.9), (1.0, 1.0), (1.3, 1.0))  # (T, top_p)
FIT_SETTINGS = ("T", "top_p", "top_k", "sample_count", "lookback", "clip")


def fit_calibration(fc, panel, dates, tune: bool, grid, scales, drift: str = "zero"):
    """The steps of ``Forecaster.calibrate``: (calibrator, report, settings to keep)."""
    import warnings

    s = fc.settings
    check_choices(scales, drift)  # before any forecast: they are cheap to check
    grid = [(s.T, s.top_p)] if not tune else list(grid or TUNE_GRID)
    for T, top_p in grid:
        s.replace(T=T, top_p=top_p)  # a SettingsError naming T or top_p
    cut = cut_for_calibration(panel, dates, s.horizon)
    fits = {}
    for T, top_p in grid:
        trial = fc.with_settings(s.replace(T=T, top_p=top_p))
        vars(trial)["calibrator_"] = None  # the raw sample statistics
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the calendar note: said by forecast
            table = trial.forecast(cut.panel, cut.dates)
        y = realised_returns(cut.panel, table.index, s.horizon)
        settings = trial.settings
        cal = fit(table, y, s.horizon, {k: getattr(settings, k) for k in FIT_SETTINGS},
                  cut.realised_end, scales, drift)  # fmt: skip
        fits[(T, top_p)] = (cal, settings, trial.report, y)

    def held_out(key):  # the best scale's CRPS on the later half of the dates
        return min(fits[key][0].scores.values()) if fits[key][0].scores else 0.0

    best = min(fits, key=held_out)
    cal, settings, report, y = fits[best]
    realised = y[np.isfinite(y)]
    out = {
        "dates": len(cut.dates),
        "first_date": str(cut.dates[0]),
        "last_date": str(cut.dates[-1]),
        "realised_end": str(cut.realised_end),
        "forecasts": len(y),
        "unrealised": int(len(y) - len(realised)),
        "up_rate": float((realised > 0).mean()),  # the base rate known after the fit
        "pairs": cal.pairs,
        "skipped": report.get("skipped", {}),
        "scale": cal.scale,
        "slope": cal.slope,
        "coef": list(cal.coef),  # the fitted scale's (b0, elasticities); empty otherwise
        "drift": cal.drift,
        "heldout_crps_by_scale": cal.scores,
        "T": settings.T,
        "top_p": settings.top_p,
    }
    if tune:
        out["heldout_crps_by_T_top_p"] = {f"T={k[0]}, top_p={k[1]}": held_out(k) for k in fits}
    return cal, out, settings
