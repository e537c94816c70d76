"""Walk-forward windows: Qlib's RollingGen over the LightGBM task template, purge checked."""

from __future__ import annotations

import pandas as pd

from .baselines import LGB_PARAMS
from .config import LookAheadError, WalkForwardConfigError


def lgb_task_template(cfg: dict, segments: dict) -> dict:
    """The Qlib task of the LightGBM baseline, whose segments RollingGen rolls."""
    lg = cfg["lightgbm"]
    return {
        "model": {
            "class": "LGBModel",
            "module_path": "qlib.contrib.model.gbdt",
            "kwargs": {**LGB_PARAMS, **lg["params"]},
        },
        "dataset": {
            "class": "DatasetH",
            "module_path": "qlib.data.dataset",
            "kwargs": {
                "handler": {
                    "class": "Alpha158Horizon",
                    "module_path": "kronos_alpha.strategies.walk_forward.baselines",
                },
                "segments": segments,
            },
        },
    }


def rolling_windows(cfg: dict, calendar: pd.DatetimeIndex) -> list[dict]:
    """Windows from Qlib's RollingGen: dicts of train/valid/test (start, end) and decision dates."""
    from qlib.workflow.task.gen import RollingGen

    w, d = cfg["windows"], cfg["data"]
    h = w["horizon"]
    ts = int(calendar.searchsorted(pd.Timestamp(d["start"])))
    te = int(calendar.searchsorted(pd.Timestamp(d["end"]), side="right")) - 1
    if ts > te:
        raise WalkForwardConfigError(f"no trading day between {d['start']} and {d['end']}")
    valid_start = ts - w["valid_days"]
    train_end = valid_start - (h + 1)
    train_start = train_end - w["train_days"] + 1
    if train_start < 0:
        raise WalkForwardConfigError(
            f"data.history_start {d['history_start']} leaves {ts} trading days before "
            f"data.start; windows.train_days + valid_days + horizon + 1 needs "
            f"{w['train_days'] + w['valid_days'] + h + 1}"
        )
    segments = {
        "train": (calendar[train_start], calendar[train_end]),
        "valid": (calendar[valid_start], calendar[ts - 1]),
        "test": (calendar[ts], calendar[te]),  # the whole out-of-sample span
    }
    gen = RollingGen(
        step=w["step"], rtype=RollingGen.ROLL_SD, ds_extra_mod_func=None, trunc_days=h + 1
    )
    tasks = gen.generate(lgb_task_template(cfg, segments))
    grid = calendar[ts : te + 1 : w["decision_every"]]
    out = []
    for i, task in enumerate(tasks):
        seg = task["dataset"]["kwargs"]["segments"]
        test_end = min(pd.Timestamp(seg["test"][1] or calendar[te]), calendar[te])
        win = {
            "index": i,
            "train": (pd.Timestamp(seg["train"][0]), pd.Timestamp(seg["train"][1])),
            "valid": (pd.Timestamp(seg["valid"][0]), pd.Timestamp(seg["valid"][1])),
            "test": (pd.Timestamp(seg["test"][0]), test_end),
        }
        win["dates"] = [t for t in grid if win["test"][0] <= t <= win["test"][1]]
        check_purged(win, calendar, h)
        if win["dates"]:
            out.append(win)
    return out


def check_purged(win: dict, calendar: pd.DatetimeIndex, horizon: int) -> None:
    """Labels t -> t + h of a segment must end before the next segment starts."""
    pos = {k: [calendar.get_loc(t) for t in win[k]] for k in ("train", "valid", "test")}
    for a, b in (("train", "valid"), ("valid", "test")):
        gap = pos[b][0] - pos[a][1]
        if gap < horizon + 1:
            raise LookAheadError(
                f"window {win['index']}: {a} ends {win[a][1]:%Y-%m-%d}, only {gap} bars before "
                f"{b} starts {win[b][0]:%Y-%m-%d}; the label horizon {horizon} needs {horizon + 1}"
            )


def grid_dates(cfg: dict, calendar: pd.DatetimeIndex, first, last, every: int | None = None):
    """Trading days in [first, last] on the decision grid's phase, every ``every`` bars (None:
    windows.decision_every): the grid of the test dates, extended backwards before data.start
    so that calibration and training dates fall on one grid (and share forecast cache entries)."""
    every = int(every or cfg["windows"]["decision_every"])
    ts = int(calendar.searchsorted(pd.Timestamp(cfg["data"]["start"])))
    a = int(calendar.searchsorted(pd.Timestamp(first)))
    b = int(calendar.searchsorted(pd.Timestamp(last), side="right")) - 1
    if b < a:
        return []
    a += (ts - a) % every  # the first position on the grid: (p - ts) % every == 0
    return list(calendar[a : b + 1 : every])


def calibration_dates(cfg: dict, calendar: pd.DatetimeIndex, win: dict, after=None) -> list:
    """The decision-grid dates a window calibrates on: within the last ``kronos.calibration.days``
    bars that end horizon + 1 bars before the window's first test date, so every outcome
    close[t + h] is a bar before the test starts; with ``after`` (the last bar a fine-tune
    trained on), only dates after it. Raises LookAheadError if a date's outcome would not be
    realised before the test start."""
    h, days = cfg["windows"]["horizon"], cfg["kronos"]["calibration"]["days"]
    t0 = calendar.get_loc(win["test"][0])
    end = t0 - (h + 1)  # pos(t) + h <= t0 - 1
    start = max(0, end - days + 1)
    if after is not None:
        start = max(start, int(calendar.searchsorted(pd.Timestamp(after), side="right")))
    if end < start:
        return []
    dates = grid_dates(cfg, calendar, calendar[start], calendar[end])
    late = [t for t in dates if calendar.get_loc(t) + h >= t0]
    if late:  # a real check, not an assert that python -O removes
        raise LookAheadError(
            f"window {win['index']}: calibration date {late[0]:%Y-%m-%d} has its {h}-bar outcome "
            f"at or after the test start {win['test'][0]:%Y-%m-%d}"
        )
    return dates
