"""``qlib-data build``: a Qlib provider folder from CSV/parquet bars (layout: ``data``).

Validate everything, then write. Every file and instrument is read and checked first and
every problem of every file is collected (``BuildReport.errors``); a build with any problem
raises one ``BuildError`` listing them and writes nothing. A valid build into a new or empty
folder is written into a temporary folder next to it, which is renamed into place at the end,
so a build that fails half-way (a full disk, say) leaves no partial folder. With
``overwrite`` into a non-empty folder, the files are replaced one by one after everything is
validated (each whole, by ``files.atomic_write``); files of an earlier build that this one
does not write stay. ``dry_run`` validates and reports what would be written, writing
nothing.

Every path goes through one ``ConfinedWriter``: it is resolved (links followed) and refused
unless it lies inside the output folder. Instrument codes (see ``sources``), the market name
and ``freq`` (Qlib's own grammar: ``day``, ``1min``, ``5min``, ``week``, ...) are checked
before that, so a bad one is a problem in the report, not a file elsewhere.

Bars are used as they are, never filled in or repaired. Refused: missing price columns, empty
or duplicate or out-of-order dates, two bars on one date of a daily calendar, a time zone,
text in a numeric column, some but not all of the four prices empty, a non-positive or
infinite price, a value beyond float32, a negative volume. Counted and warned about, and
written: suspended bars (volume 0/empty or no prices), calendar days without a row, and bars
whose high is below their open/close/low or low above them (``panel.ohlc_inconsistent``, the
project-wide policy; ``ohlc_inconsistent_rows``).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.files import atomic_write
from kronos_alpha.inference.panel import (
    FLOAT32_MAX,
    FLOAT32_TINY,
    PRICE_COLS,
    InputError,
    missing_prices,
    numeric_values,
    ohlc_inconsistent,
)

from .sources import code_problem, read_bars

log = logging.getLogger(__name__)

OPTIONAL = ["volume", "amount", "vwap", "factor"]
FREQ_RE = re.compile(r"([0-9]*)(month|mon|week|w|day|d|minute|min)")  # qlib.utils.time.Freq
DATE_UNITS = {"month", "mon", "week", "w", "day", "d"}
SHOWN = 20  # problems a BuildError's message lists; the report holds them all


def freq_problem(freq: str) -> str | None:
    """Why ``freq`` is not a Qlib frequency name (None: it is one)."""
    if not isinstance(freq, str) or not FREQ_RE.fullmatch(freq):
        return (
            f"freq {freq!r} is not a Qlib frequency: use day, week, month or a count of "
            "minutes such as 1min or 5min (it names the calendar and bin files)"
        )
    return None


def date_only(freq: str) -> bool:
    m = FREQ_RE.fullmatch(freq) if isinstance(freq, str) else None
    return bool(m) and m.group(2) in DATE_UNITS


@dataclass
class BuildReport:
    """What a build wrote (or, with dry_run, would write) and what it found on the way."""

    out: str = ""
    dry_run: bool = False
    instruments: int = 0
    codes: list[str] = field(default_factory=list)
    days: int = 0
    first_day: str | None = None
    last_day: str | None = None
    rows: int = 0
    files: int = 0
    fields: list[str] = field(default_factory=list)
    suspended_rows: int = 0  # volume 0 or NaN, or all prices NaN
    gap_days: int = 0  # calendar days inside an instrument's span with no row
    ohlc_inconsistent_rows: int = 0  # written as they are (panel.ohlc_inconsistent)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(vars(self))


class BuildError(InputError):
    """A build refused: the message lists the first problems, ``report.errors`` all."""

    def __init__(self, report: BuildReport, source):
        n = len(report.errors)
        head = "\n  ".join(report.errors[:SHOWN])
        more = f"\n  ... and {n - SHOWN} more (BuildReport.errors has all)" if n > SHOWN else ""
        super().__init__(
            f"qlib-data build from {source} refused, nothing written: {n} problem(s):\n"
            f"  {head}{more}"
        )
        self.report = report


class ConfinedWriter:
    """The builder's one way to write: every path is resolved and must lie inside ``root``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, rel: str | Path) -> Path:
        target = (self.root / rel).resolve()
        if target == self.root or not target.is_relative_to(self.root):
            raise InputError(
                f"refusing to write {str(rel)!r}: it resolves to {target}, outside the output "
                f"folder {self.root}"
            )
        return target

    def write(self, rel: str | Path, data: bytes | str) -> Path:
        return atomic_write(self.path(rel), data)


def _when(ts) -> str:
    """A bar's time for a message: its date alone when it has no time of day."""
    return str(ts.date()) if not pd.isna(ts) and ts == ts.normalize() else str(ts)


def validate_bars(
    df: pd.DataFrame, source: str, report: BuildReport, freq: str = "day"
) -> pd.DataFrame | None:
    """One instrument's bars as floats, or None with every problem (naming the file, the
    line and the date) added to ``report.errors``. Warnings and counts go to the report."""
    errors, n0 = report.errors, len(report.errors)
    lines, word = df.attrs.get("lines"), df.attrs.get("line_word", "row")

    def at(pos: int) -> str:
        return f"{word} {lines[pos]}" if lines is not None else f"row {pos}"

    missing = missing_prices(df.columns)
    if missing:
        errors.append(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
        return None
    idx = df.index
    nat = idx.isna()
    if nat.any():
        errors.append(f"{source}: {int(nat.sum())} empty date(s), first at {at(np.argmax(nat))}")
    if idx.tz is not None:
        errors.append(
            f"{source}: dates carry a time zone ({idx.tz}); a Qlib calendar holds local times "
            "without one: give them without the offset"
        )
    dup = idx.duplicated() & ~nat
    if dup.any():
        pos = int(np.argmax(dup))
        errors.append(
            f"{source}: duplicate date {_when(idx[pos])} at {at(pos)} ({int(dup.sum())} repeated row(s))"
        )
    valid = np.flatnonzero(~nat)
    back = np.diff(idx.asi8[valid]) < 0
    if back.any():
        k = int(np.argmax(back)) + 1
        errors.append(
            f"{source}: dates out of order at {at(valid[k])} "
            f"({_when(idx[valid[k - 1]])} then {_when(idx[valid[k]])})"
        )
    if date_only(freq) and not back.any() and not dup.any():
        days = idx[valid].normalize()
        same = days.duplicated()
        if same.any():
            pos = valid[int(np.argmax(same))]
            errors.append(
                f"{source}: two bars on {days[same][0].date()} (at {at(pos)}) but freq {freq!r} "
                "has one bar a day; pass an intraday freq such as 1min or 5min"
            )
        elif (days != idx[valid]).any():
            report.warnings.append(
                f"{source}: times of day dropped for the {freq!r} calendar (dates kept)"
            )
    cols = [c for c in PRICE_COLS + OPTIONAL if c in df.columns]
    num = {}
    for c in cols:
        try:  # the boundary's reading of a column: text, bool, datetime, ... named
            num[c], text = numeric_values(df[c], c, source)
        except InputError as exc:
            errors.append(str(exc))
            num[c], text = np.full(len(df), np.nan), np.zeros(len(df), bool)
        if text.any():
            pos = int(np.argmax(text))
            errors.append(
                f"{source}: column {c!r} is not numeric at {at(pos)} ({df[c].iloc[pos]!r}; "
                f"{int(text.sum())} such value(s))"
            )
    out = pd.DataFrame(num, index=idx)
    prices = out[PRICE_COLS].to_numpy()
    empty = np.isnan(prices)
    partial = empty.any(axis=1) & ~empty.all(axis=1)
    with np.errstate(invalid="ignore"):
        checks = [
            (partial, None, "some but not all of open/high/low/close are empty"),
            (prices <= 0, PRICE_COLS, "a non-positive price"),
            (
                (prices > 0) & (prices < FLOAT32_TINY),
                PRICE_COLS,
                "a price below float32's normal range",
            ),
            (np.isinf(out.to_numpy()), cols, "an infinite value"),
            (np.abs(out.to_numpy()) > FLOAT32_MAX, cols, "a value beyond float32's range"),
        ]
        if "volume" in out.columns:
            checks.append((out["volume"].to_numpy() < 0, ["volume"], "a negative volume"))
    for bad, names, what in checks:
        rows = bad if bad.ndim == 1 else bad.any(axis=1)
        if rows.any():
            pos = int(np.argmax(rows))
            col = f" in column {names[int(np.argmax(bad[pos]))]!r}" if names else ""
            errors.append(
                f"{source}: {what}{col} on {_when(idx[pos])} (at {at(pos)}; {int(rows.sum())} such row(s))"
            )
    if len(errors) > n0:
        return None
    if date_only(freq):
        out.index = idx.normalize()
    odd = ohlc_inconsistent(prices)
    if odd.any():
        report.ohlc_inconsistent_rows += int(odd.sum())
        report.warnings.append(
            f"{source}: {int(odd.sum())} bar(s) with high below open/close/low or low above "
            f"them, first on {_when(idx[int(np.argmax(odd))])}; written as they are and counted"
        )
    suspended = empty.all(axis=1)
    if "volume" in out.columns:
        suspended |= ~(out["volume"].to_numpy() > 0)
    if suspended.any():
        report.suspended_rows += int(suspended.sum())
        report.warnings.append(
            f"{source}: {int(suspended.sum())} suspended row(s) (volume 0/empty or no prices), "
            f"first on {_when(idx[int(np.argmax(suspended))])}; written as they are"
        )
    return out


def derive_fields(df: pd.DataFrame) -> pd.DataFrame:
    """amount, vwap (when derivable), without filling anything in."""
    out = df.copy()
    if "volume" in out.columns:
        vol = out["volume"]
        if "amount" not in out.columns and "vwap" in out.columns:
            out["amount"] = out["vwap"] * vol
        if "vwap" not in out.columns and "amount" in out.columns:
            out["vwap"] = (out["amount"] / vol).where(vol > 0)
    return out


def _change(close: pd.Series) -> pd.Series:
    """close over the previous known close, minus 1, on the calendar-aligned series."""
    prev = close.ffill().shift(1)
    return close / prev - 1.0


def _fmt_dates(idx: pd.DatetimeIndex, freq: str) -> list[str]:
    fmt = "%Y-%m-%d" if date_only(freq) else "%Y-%m-%d %H:%M:%S"
    return [d.strftime(fmt) for d in idx]


def bin_bytes(start_index: int, values: np.ndarray) -> bytes:
    """One field of one instrument: its first calendar index, then the values, as float32."""
    return np.hstack([[start_index], values]).astype("<f4").tobytes()


def _fields(df: pd.DataFrame) -> list[str]:
    return [*df.columns, "change"]


def _paths(frames: dict, freq: str, market: str | None) -> list[str]:
    """Every file a build writes, relative to the output folder (``_write`` writes these)."""
    paths = [f"calendars/{freq}.txt", "instruments/all.txt"]
    if market and market != "all":
        paths.append(f"instruments/{market}.txt")
    for code, df in frames.items():
        paths += [f"features/{code.lower()}/{f}.{freq}.bin" for f in _fields(df)]
    return paths


def _write(writer: ConfinedWriter, frames: dict, calendar, freq: str, market) -> None:
    pos = pd.Series(np.arange(len(calendar)), index=calendar)
    writer.write(f"calendars/{freq}.txt", "\n".join(_fmt_dates(calendar, freq)) + "\n")
    lines = []
    for code, df in frames.items():
        first, last = int(pos[df.index[0]]), int(pos[df.index[-1]])
        aligned = df.reindex(calendar[first : last + 1])
        aligned["change"] = _change(aligned["close"])
        for name in _fields(df):
            data = bin_bytes(first, aligned[name].to_numpy())
            writer.write(f"features/{code.lower()}/{name}.{freq}.bin", data)
        span = _fmt_dates(calendar[[first, last]], freq)
        lines.append(f"{code}\t{span[0]}\t{span[1]}")
    text = "\n".join(lines) + "\n"
    writer.write("instruments/all.txt", text)  # last: an overwrite lists the new instruments
    if market and market != "all":
        writer.write(f"instruments/{market}.txt", text)


def _fresh(out: Path) -> bool:
    return not out.is_symlink() and (not out.exists() or (out.is_dir() and not any(out.iterdir())))


def build(
    source: str | Path,
    out_dir: str | Path,
    market: str | None = None,
    freq: str = "day",
    instrument_column: str | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> BuildReport:
    """Write a Qlib provider folder at ``out_dir`` from ``source`` (module docstring)."""
    out = Path(out_dir)
    report = BuildReport(out=str(out), dry_run=dry_run)
    errors = report.errors
    errors += [p for p in (freq_problem(freq), market and code_problem(market, "market")) if p]
    if (out.exists() or out.is_symlink()) and not out.is_dir():
        errors.append(f"{out} exists and is not a folder")
    elif not _fresh(out) and not overwrite:
        errors.append(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace its files"
        )
    bars = read_bars(source, instrument_column, errors)
    frames = {}
    for code, df in bars.items():
        checked = validate_bars(df, df.attrs.get("source", code), report, freq)
        if checked is not None:
            frames[code] = derive_fields(checked)
    if not bars and not errors:
        errors.append(f"{source}: no bars to build from")
    calendar = pd.DatetimeIndex(sorted(set().union(*[set(f.index) for f in frames.values()])))
    pos = pd.Series(np.arange(len(calendar)), index=calendar)
    for df in frames.values():
        report.gap_days += int(pos[df.index[-1]] - pos[df.index[0]] + 1) - len(df)
    paths = _paths(frames, freq, market) if frames else []
    if not errors and not _fresh(out):  # in place: a link inside it must not lead out
        writer = ConfinedWriter(out)
        for rel in paths:
            try:
                writer.path(rel)
            except InputError as exc:
                errors.append(str(exc))
    if report.gap_days:
        report.warnings.append(
            f"{report.gap_days} calendar day(s) fall inside an instrument's span without a row; "
            "they read back as NaN (Qlib's convention for suspensions)"
        )
    report.instruments, report.codes, report.days = len(frames), list(frames), len(calendar)
    report.rows, report.files = sum(len(f) for f in frames.values()), len(paths)
    report.fields = sorted(set().union(*[set(_fields(f)) for f in frames.values()]))
    if len(calendar):
        report.first_day, report.last_day = _fmt_dates(calendar[[0, -1]], freq)
    for w in report.warnings:
        log.warning(w)
    if dry_run:
        return report
    if errors:
        raise BuildError(report, source)
    if not _fresh(out):
        _write(ConfinedWriter(out), frames, calendar, freq, market)
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write(ConfinedWriter(tmp), frames, calendar, freq, market)
        os.replace(tmp, out)  # onto a missing or empty folder: all of it appears at once
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
