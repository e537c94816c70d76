"""``kronos-alpha forecast``'s calibration options: which past decision dates to fit
``Forecaster.calibrate`` on, or which saved calibrator to load, and what the report says.

``--calibrate-dates START:END`` (either side may be empty) and/or ``--calibrate-every N``
choose the dates: bar times of the input, every N-th. An empty END ends at the last bar whose
outcome (``--horizon`` bars later) is at or before the first forecast date, so the fit reads
nothing after what the forecast may know. ``--save-calibrator PATH`` writes the fit as JSON
(``Calibrator.save``); ``--calibrator PATH`` loads one instead of fitting.
"""

from __future__ import annotations

import sys


def add_calibration_args(p) -> None:
    cal = p.add_argument_group(
        "calibration",
        "Calibrate the forecast distribution on past decision dates of the input (each is "
        "forecast and compared with its realised --horizon return: one forecast per date "
        "and instrument, per (T, top_p) tried with --tune), or load a saved calibrator. The table's "
        "ret_qNN, ret_median, ret_std and prob_up are then calibrated, the sample statistics "
        "stay as raw_* columns, and the JSON report's 'calibration' gives the scale and span.",
    )
    cal.add_argument(
        "--calibrate-dates", metavar="START:END",
        help="calibrate on the input's bar times from START to END, both included; either "
        "side may be empty (START: or :END). An empty END (or --calibrate-every alone) ends "
        "at the last bar whose outcome, --horizon bars later, is at or before the first "
        "forecast date, so the fit reads nothing after it. A date whose outcome is not in "
        "the input is refused (default: no calibration)",
    )  # fmt: skip
    cal.add_argument(
        "--calibrate-every", metavar="N", type=int,
        help="calibrate on every N-th bar time of that span (e.g. the horizon, for "
        "outcomes that do not overlap); alone, the span is the whole input up to the first "
        "forecast date (default: 1 with --calibrate-dates, else no calibration)",
    )  # fmt: skip
    cal.add_argument(
        "--tune", action="store_true",
        help="also choose T and top_p on the calibration dates by held-out CRPS (over "
        "kronos_alpha.inference.realised.TUNE_GRID); the choice is in the report",
    )  # fmt: skip
    cal.add_argument(
        "--save-calibrator", metavar="PATH",
        help="write the fitted calibrator there (JSON, Calibrator.save) for --calibrator "
        "or Forecaster.set_calibrator (default: not saved)",
    )  # fmt: skip
    cal.add_argument(
        "--calibrator", metavar="PATH",
        help="forecast with a saved calibrator (JSON) instead of fitting one; its horizon "
        "must be --horizon (default: none)",
    )  # fmt: skip


def check_calibration_args(args) -> None:
    """The calibration options that go together (before any data is read)."""
    fit = args.calibrate_dates is not None or args.calibrate_every is not None
    if args.calibrator and (fit or args.tune):
        raise ValueError(
            "--calibrator loads a fitted calibrator; --calibrate-dates, --calibrate-every and "
            "--tune fit one: give one or the other"
        )
    if not fit and (args.tune or args.save_calibrator):
        which = "--tune" if args.tune else "--save-calibrator"
        raise ValueError(f"{which} needs a calibration: --calibrate-dates and/or --calibrate-every")
    if args.calibrate_every is not None and args.calibrate_every < 1:
        raise ValueError(f"--calibrate-every must be at least 1, got {args.calibrate_every}")
    if args.calibrate_dates is not None:
        parse_span(args.calibrate_dates)


def parse_span(spec: str, tz=None) -> tuple:
    """``START:END`` -> (start, end) Timestamps, None for an empty side. Times may hold colons
    themselves (``2024-01-02 09:30:2024-01-05``): the split is the one colon where both sides
    are empty or times."""
    from kronos_alpha.inference.panel import to_datetime_index

    def side(text: str):
        text = text.strip()
        if not text:
            return None
        t = to_datetime_index([text], "--calibrate-dates")[0]
        return t.tz_localize(tz) if tz is not None and t.tz is None else t

    splits = []
    for i, ch in enumerate(spec):
        if ch == ":":
            try:
                splits.append((side(spec[:i]), side(spec[i + 1 :])))
            except (ValueError, TypeError):
                continue
    if len(splits) != 1:
        raise ValueError(
            f"--calibrate-dates must be START:END (dates; either side may be empty), got {spec!r}"
        )
    start, end = splits[0]
    if start is not None and end is not None and start > end:
        raise ValueError(f"--calibrate-dates: START {start} is after END {end}")
    return start, end


def calibration_dates(args, times, first_forecast, horizon: int):
    """The decision dates to calibrate on: bar times of the span, every N-th."""
    from kronos_alpha.inference.calibration import CalibrationError

    start, end = (None, None)
    if args.calibrate_dates is not None:
        start, end = parse_span(args.calibrate_dates, times.tz)
    if end is None:  # the last outcome bar is the first forecast date at the latest
        last = times.searchsorted(first_forecast, side="right") - 1 - horizon
        if last < 0:
            raise CalibrationError(
                f"no bar before the first forecast date {first_forecast} has its {horizon}-bar "
                "outcome by then: nothing to calibrate on (give --calibrate-dates START:END)"
            )
        end = times[last]
    span = times[((times >= start) if start is not None else True) & (times <= end)]
    if len(span) == 0:
        raise CalibrationError(
            f"--calibrate-dates {args.calibrate_dates} holds no bar time of the input "
            f"({times[0]} .. {times[-1]}, calibration span ending {end})"
        )
    return span[:: args.calibrate_every or 1]


def calibration_summary(fc, source: str | None) -> dict:
    """What the report says about calibration: whether, how it was obtained, scale, span."""
    cal = fc.calibrator_
    if cal is None:
        return {"calibrated": False}
    out = {
        "calibrated": True,
        "source": source,
        "scale": cal.scale,
        "coef": list(cal.coef),  # the fitted scale's (b0, elasticities); empty otherwise
        "horizon": cal.horizon,
        "first_date": cal.first_date,
        "last_date": cal.last_date,
        "realised_end": cal.realised_end,
        "pairs": cal.pairs,
    }
    if source == "fitted":
        rep = fc.calibration_report_
        keys = ("dates", "unrealised", "skipped", "slope", "heldout_crps_by_scale", "T", "top_p",
                "heldout_crps_by_T_top_p")  # fmt: skip
        out.update({k: rep[k] for k in keys if k in rep})
    return out


def calibrate_from_args(args, fc, frames, times, dates) -> dict:
    """Fit or load the calibrator the options ask for (none: raw); the report's summary."""
    from kronos_alpha.inference import distributed

    source = None
    if args.calibrator:
        fc.set_calibrator(args.calibrator)
        source = str(args.calibrator)
    elif args.calibrate_dates is not None or args.calibrate_every is not None:
        from kronos_alpha.inference.data import check_dates

        first = check_dates(dates, times, times.tz)[0]
        fc.calibrate(frames, calibration_dates(args, times, first, fc.horizon), args.tune)
        source = "fitted"
        if args.save_calibrator and distributed.rank() == 0:
            fc.calibrator_.save(args.save_calibrator)
    summary = calibration_summary(fc, source)
    if summary["calibrated"]:
        line = (
            f"calibration: {source}, scale {summary['scale']}, decision dates "
            f"{summary['first_date']} .. {summary['last_date']} ({summary['pairs']} pairs, "
            f"outcomes up to {summary['realised_end']})"
        )
        print(line.replace(" 00:00:00", ""), file=sys.stderr)  # daily bars: dates
    return summary
