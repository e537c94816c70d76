"""Rolling calibration of Kronos's forecast distribution: each window on its past only.

For a window whose test starts at bar T0, the calibration dates are the decision-grid dates
(``windows.grid_dates``: the test grid extended backwards) within the last
``kronos.calibration.days`` bars ending at T0 - (h + 1): every outcome close[t + h] is a bar
before T0 (a purge gap of the horizon). The panel handed to ``Forecaster.calibrate`` is cut at
T0 - 1 (the bar before the test), and ``calibrate`` cuts it again at the last outcome bar;
both cuts are checked (``LookAheadError``). The first windows may calibrate on dates before
``data.start``: the panel holds their history from ``data.history_start``.

The fine-tuned model calibrates only on dates after the last bar its fine-tune trained on
(its train segment's end), so its residuals are out of its training sample; its valid
segment (used to pick the best checkpoint) is inside the span.

Forecasts of the calibration dates are the forecaster's own, read from its disk cache when a
window before already made them (same weights, settings, bars and seed: identical numbers).
"""

from __future__ import annotations

import copy

import pandas as pd

from .config import LookAheadError
from .windows import calibration_dates


def calibration_panel(cfg: dict, data, win: dict, dates: list) -> pd.DataFrame:
    """Bars of the names that are members at some calibration date, from ``history_bars``
    before the first date up to the bar before the window's test start."""
    k = cfg["kronos"]
    extra = k["history_bars"] or 3 * k["lookback"] + 60
    cal = data.calendar
    t0 = cal.get_loc(win["test"][0])
    if t0 == 0:
        raise LookAheadError(f"window {win['index']}: no bar before its test start to calibrate on")
    first = cal.get_loc(dates[0])
    members = data.members.reindex(pd.DatetimeIndex(dates))
    names = members.columns[members.any()]
    panel = data.cut(cal[t0 - 1], cal[max(0, first - extra)], names)
    last = panel.index.get_level_values("datetime").max()
    if last >= win["test"][0]:  # a real check, not an assert that python -O removes
        raise LookAheadError(
            f"window {win['index']}: the calibration panel reaches {last}, at or after the test "
            f"start {win['test'][0]}"
        )
    return panel


def calibrate_window(cfg: dict, data, forecaster, win: dict, after=None):
    """(a calibrated copy of ``forecaster``, a summary) for the window, or (None, reason) when
    its past holds no calibration date. The copy shares the loaded model; ``forecaster``
    itself stays raw."""
    c = cfg["kronos"]["calibration"]
    dates = calibration_dates(cfg, data.calendar, win, after)
    if not dates:
        return None, {"skipped": "no calibration date before the test start"}
    panel = calibration_panel(cfg, data, win, dates)
    fc = copy.copy(forecaster)
    vars(fc)["calibrator_"] = None
    fc.calibrate(panel, dates, tune=c["tune"])
    cal = fc.calibrator_
    if pd.Timestamp(cal.realised_end) >= win["test"][0]:
        raise LookAheadError(
            f"window {win['index']}: the calibration read an outcome at {cal.realised_end}, at "
            f"or after the test start {win['test'][0]}"
        )
    rep = fc.calibration_report_
    info = {
        "calibrator": cal.to_dict(),
        "dates": len(dates),
        "first_date": str(dates[0].date()),
        "last_date": str(dates[-1].date()),
        "realised_end": str(pd.Timestamp(cal.realised_end).date()),
        "pairs": int(cal.pairs),
        "scale": cal.scale,
        "slope": float(cal.slope),
        "T": rep.get("T"),
        "top_p": rep.get("top_p"),
        "heldout_crps_by_scale": rep.get("heldout_crps_by_scale"),
    }
    if after is not None:
        info["after"] = str(pd.Timestamp(after).date())
    return fc, info
