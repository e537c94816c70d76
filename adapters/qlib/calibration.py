"""KronosModel's calibration on the dataset's ``valid`` segment (see ``Forecaster.calibrate``).

The decision dates are the valid segment's bar times whose realised horizon return lies
inside the valid segment too: close[t + horizon] must be a bar at or before the segment's
end. The panel is the handler's raw bars up to the valid end, so no bar of the test
segment (which follows) enters the fit, and a test-segment forecast is out of sample for
the calibrator (``Forecaster`` warns about decision times before ``realised_end``; none
of the test segment's is). The last ``horizon`` dates of the valid segment, whose outcome
would lie in the test segment, are left out and the log says so.

``every`` thins the dates to every n-th one, counted back from the latest (the fit's
most recent date stays in). Only instruments that are market members during the valid
segment enter the panel (with their whole history, as in ``predict``).
"""

from __future__ import annotations

import time

import pandas as pd
from qlib.log import get_module_logger

from kronos_alpha.files import plain_json
from kronos_alpha.inference.calibration import CalibrationError
from kronos_alpha.inference.panel import PRICE_COLS, InputError
from kronos_alpha.inference.settings import check_flag, check_integer

from .checks import segment_slice
from .handler import raw_bars

log = get_module_logger("kronos_alpha")


def check_calibration_param(name: str, v) -> None:
    """``calibrate`` / ``calibration_tune`` are booleans, ``calibration_every`` an int >= 1
    (ForecastSettings' own checks)."""
    if name == "calibration_every":
        check_integer(name, v, 1)
    else:
        check_flag(name, v)


def fit_calibration(model, dataset):
    """``KronosModel.fit_calibration``: fit on the valid segment when ``model.calibrate``
    and the dataset has one (else log why not); the fit goes to the model's public
    ``calibrator`` / ``calibration_report`` and its forecaster. Returns the model."""
    state = vars(model)
    state["calibrator"] = state["calibration_report"] = None
    if state.get("_forecaster") is not None:
        state["_forecaster"].set_calibrator(None)
    if not model.calibrate:
        log.info("KronosModel.fit: calibrate is false; no calibration was fitted")
        return model
    if "valid" not in dataset.segments:
        log.info(
            "KronosModel.fit: the dataset has no valid segment (segments %s); no calibration "
            "was fitted, forecast() gives the raw sample statistics",
            list(dataset.segments),
        )
        return model
    fit = fit_on_valid(model, dataset, model.calibration_every, model.calibration_tune)
    if fit["settings"] != model.settings:
        model.settings = fit["settings"]  # the tuned T / top_p: a new forecaster
    state["calibrator"], state["calibration_report"] = fit["calibrator"], fit["report"]
    model.forecaster().set_calibrator(fit["calibrator"])
    return model


def valid_panel(dataset, segment="valid") -> tuple[pd.DataFrame, pd.DatetimeIndex, slice]:
    """(raw bars up to the segment's end, the segment's bar times, the segment)."""
    seg = segment_slice(dataset, segment)
    bars = raw_bars(dataset.handler, seg.stop)
    bars = bars[~bars[PRICE_COLS].isna().all(axis=1)]  # Qlib's NaN rows: no bar that day
    times = pd.DatetimeIndex(bars.index.get_level_values("datetime").unique()).sort_values()
    lo = pd.Timestamp(seg.start) if seg.start is not None else times.min()
    hi = pd.Timestamp(seg.stop) if seg.stop is not None else times.max()
    in_seg = times[(times >= lo) & (times <= hi)]
    if len(in_seg) == 0:
        raise InputError(
            f"the {segment} segment {seg.start}..{seg.stop} has no data in the handler; "
            "nothing to calibrate on (calibrate: false skips the calibration)"
        )
    members = members_during(dataset.handler, in_seg[0], in_seg[-1])
    if members is not None:
        bars = bars[bars.index.get_level_values("instrument").isin(members)]
    return bars, in_seg, seg


def members_during(handler, start, end) -> list[str] | None:
    spans = getattr(handler, "membership", None)
    if not spans:
        return None
    return sorted(
        code for code, pairs in spans.items() if any(s <= end and e >= start for s, e in pairs)
    )


def calibration_dates(
    times: pd.DatetimeIndex, in_seg: pd.DatetimeIndex, horizon: int, every: int
) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    """(the decision dates to calibrate on, the segment's dates left out for lack of a
    realised outcome inside the panel ``times``)."""
    pos = times.get_indexer(in_seg)
    realised = pos + horizon <= len(times) - 1
    usable, late = in_seg[realised], in_seg[~realised]
    return usable[::-1][::every][::-1], late


def fit_on_valid(model, dataset, every: int = 1, tune: bool = False) -> dict:
    """Calibrate ``model``'s forecaster on the valid segment. Returns what ``KronosModel``
    keeps: {"calibrator": plain dict, "report": dict, "settings": the (tuned) settings}."""
    from .model import auto_calendar

    start = time.perf_counter()
    bars, in_seg, seg = valid_panel(dataset)
    h = model.settings.horizon
    times = pd.DatetimeIndex(bars.index.get_level_values("datetime").unique()).sort_values()
    dates, late = calibration_dates(times, in_seg, h, every)
    if len(late):
        used = in_seg[: len(in_seg) - len(late)]
        span = f"{used[0].date()} .. {used[-1].date()}" if len(used) else "none"
        log.info(
            "KronosModel.fit: the valid segment's last %d date(s) (%s .. %s) have their %d-bar "
            "outcome after the valid end %s; calibrating on the %d date(s) whose outcome is "
            "realised inside the segment (%s), so that no test-segment bar enters the fit",
            len(late), late[0].date(), late[-1].date(), h, in_seg[-1].date(), len(used), span,
        )  # fmt: skip
    if len(dates) < 2:
        raise CalibrationError(
            f"the valid segment {seg.start}..{seg.stop} has {len(dates)} decision date(s) with a "
            f"realised {h}-bar return inside it (every={every}); calibration needs at least two: "
            "lengthen the valid segment, lower calibration_every, or set calibrate: false"
        )
    fc = model.forecaster()
    settings = auto_calendar(fc.settings, bars.index.get_level_values("instrument").unique())
    fc = fc.with_settings(settings)
    try:
        fc.calibrate(bars, dates, tune=tune)
    except CalibrationError as exc:
        raise CalibrationError(
            f"KronosModel.fit could not calibrate on the valid segment {seg.start}..{seg.stop} "
            f"({len(dates)} dates, every={every}): {exc}. Lengthen the valid segment, lower "
            "calibration_every, or set calibrate: false"
        ) from None
    report = dict(fc.calibration_report_)
    report.update(
        segment=[str(seg.start), str(seg.stop)],
        every=int(every),
        left_out_late=int(len(late)),
        instruments=int(bars.index.get_level_values("instrument").nunique()),
        seconds=round(time.perf_counter() - start, 1),
    )
    cal = fc.calibrator_
    log.info(
        "KronosModel.fit: calibrated on %d valid dates (%s .. %s, every %d), %d pairs, scale %s, "
        "slope %.3f, T=%s top_p=%s; %.1f s",
        report["dates"], report["first_date"][:10], report["last_date"][:10], every,
        cal.pairs, cal.scale, cal.slope, report["T"], report["top_p"], report["seconds"],
    )  # fmt: skip
    tuned = model.settings.replace(T=fc.settings.T, top_p=fc.settings.top_p)
    return {"calibrator": cal.to_dict(), "report": plain_json(report), "settings": tuned}
