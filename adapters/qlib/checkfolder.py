"""``qlib-data check``: verify an existing Qlib provider folder (layout: ``data``).

Errors are what makes Qlib read wrong data without a word (a missing field file, a bin that
does not fit the calendar, a percentage ``change``, a benchmark without data); warnings are
what it reads as it is. Bars whose high is below their open/close/low or low above them
follow the project-wide policy (``panel.ohlc_inconsistent``, the same definition ``build``
counts): used as they are, counted (``ohlc_inconsistent_rows``) and warned about. A progress
bar runs over the instruments on a terminal (tqdm); the start and the end are logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.inference.panel import PRICE_COLS, ohlc_inconsistent

from .build import freq_problem
from .sources import code_problem, progress

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    instruments: int = 0
    days: int = 0
    fields: list[str] = field(default_factory=list)
    ohlc_inconsistent_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {**vars(self), "ok": self.ok}


def _read_lines(path: Path, report: CheckReport) -> list[str] | None:
    try:
        return [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    except UnicodeDecodeError as exc:
        report.errors.append(f"{path}: not UTF-8 text (offset {exc.start})")
    except OSError as exc:
        report.errors.append(f"{path}: cannot be read: {exc}")
    return None


def _read_calendar(path: Path, report: CheckReport) -> pd.DatetimeIndex | None:
    if not path.exists():
        report.errors.append(f"calendar {path} is missing")
        return None
    lines = _read_lines(path, report)
    if lines is None:
        return None
    try:
        cal = pd.DatetimeIndex(pd.to_datetime(lines))
    except (TypeError, ValueError) as exc:
        report.errors.append(f"calendar {path} has a line that is not a date: {exc}")
        return None
    if cal.has_duplicates:
        report.errors.append(f"calendar {path} repeats {cal[cal.duplicated()][0]}")
    if not cal.is_monotonic_increasing:
        pos = int(np.argmax(np.diff(cal.asi8) < 0)) + 1
        report.errors.append(f"calendar {path} is out of order at line {pos + 1}")
    return cal


def _read_instruments(path: Path, report: CheckReport) -> pd.DataFrame | None:
    lines = _read_lines(path, report)
    if lines is None:
        return None
    parts = [x.split("\t") for x in lines]
    short = [i for i, p in enumerate(parts) if len(p) < 3]
    if short:
        report.errors.append(
            f"{path}: line {short[0] + 1} is incomplete (not CODE<TAB>start<TAB>end)"
        )
    df = pd.DataFrame([p[:3] for p in parts if len(p) >= 3], columns=["code", "start", "end"])
    try:
        df["start"], df["end"] = pd.to_datetime(df["start"]), pd.to_datetime(df["end"])
    except (TypeError, ValueError) as exc:
        report.errors.append(f"{path}: not CODE<TAB>start<TAB>end lines: {exc}")
        return None
    bad = df["start"] > df["end"]
    if bad.any():
        report.errors.append(f"{path}: {df.loc[bad, 'code'].iloc[0]} starts after it ends")
    unsafe = [why for c in df["code"] if (why := code_problem(c, f"{path}: instrument code"))]
    if unsafe:
        report.errors.append(
            unsafe[0] + (f" ({len(unsafe)} such code(s))" if len(unsafe) > 1 else "")
        )
        df = df[[code_problem(c) is None for c in df["code"]]]
    return df


def read_bin(path: Path) -> tuple[int, np.ndarray]:
    raw = np.fromfile(path, dtype="<f4")
    return int(raw[0]), raw[1:]


def _bin_problem(path: Path, ndays: int) -> tuple[str | None, int, np.ndarray | None]:
    size = path.stat().st_size
    if size % 4 or size < 4:
        return f"{path}: size {size} is not a whole number of float32", 0, None
    raw = np.fromfile(path, dtype="<f4")
    if not np.isfinite(raw[0]) or raw[0] != int(raw[0]):
        return f"{path}: its first value {raw[0]} is not a calendar index", 0, None
    start, values = int(raw[0]), raw[1:]
    if start < 0 or start + len(values) > ndays:
        return (
            f"{path}: covers calendar rows {start}..{start + len(values) - 1}, calendar has {ndays}",
            start,
            None,
        )
    return None, start, values


def check(
    folder: str | Path,
    freq: str = "day",
    fields: tuple[str, ...] = ("open", "high", "low", "close", "volume"),
    market: str | None = None,
    benchmark: str | None = None,
    deep: bool = True,
) -> CheckReport:
    """Verify a provider folder. ``deep`` reads every bin to check OHLC and ``change``."""
    root = Path(folder)
    report = CheckReport()
    bad_names = [freq_problem(freq)] + [
        code_problem(v, what) for v, what in ((market, "market"), (benchmark, "benchmark")) if v
    ]
    report.errors += [p for p in bad_names if p]
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
    if report.errors:
        return report
    cal = _read_calendar(root / "calendars" / f"{freq}.txt", report)
    inst_path = root / "instruments" / "all.txt"
    if not inst_path.exists():
        report.errors.append(f"{inst_path} is missing")
        return report
    inst = _read_instruments(inst_path, report)
    if market and not (root / "instruments" / f"{market}.txt").exists():
        have = sorted(p.stem for p in (root / "instruments").glob("*.txt"))
        report.errors.append(f"market {market!r} has no instruments/{market}.txt; markets: {have}")
    members = None
    if market and (root / "instruments" / f"{market}.txt").exists():
        mk = _read_instruments(root / "instruments" / f"{market}.txt", report)
        members = set(mk["code"].str.upper()) if mk is not None else None
    if cal is None or inst is None:
        return report
    report.days, report.instruments = len(cal), len(inst)
    codes = set(inst["code"].str.upper())
    if benchmark and benchmark.upper() not in codes:
        report.errors.append(f"benchmark {benchmark!r} is not in instruments/all.txt")
    if benchmark and not (root / "features" / benchmark.lower()).is_dir():
        report.errors.append(f"benchmark {benchmark!r} has no features/{benchmark.lower()} folder")
    seen_fields: set[str] = set()
    missing: dict[str, list[str]] = {}
    change_pct = 0
    no_data: list[str] = []
    log.info("checking %d instrument(s) in %s", len(inst), root)
    for row in progress(inst.itertuples(), len(inst), f"checking {root.name}", "instrument"):
        folder_i = root / "features" / str(row.code).lower()
        if not folder_i.is_dir():
            no_data.append(str(row.code).upper())
            continue
        present = {p.name[: -len(f".{freq}.bin")] for p in folder_i.glob(f"*.{freq}.bin")}
        seen_fields |= present
        for f in fields:
            if f not in present:
                missing.setdefault(f, []).append(row.code)
        data = {}
        for f in sorted(present):
            problem, start, values = _bin_problem(folder_i / f"{f}.{freq}.bin", len(cal))
            if problem:
                report.errors.append(problem)
            elif deep:
                data[f] = pd.Series(
                    values, index=cal[start : start + len(values)], dtype=np.float64
                )
        if deep and all(f in data for f in PRICE_COLS):
            p = pd.DataFrame({f: data[f] for f in PRICE_COLS}).dropna()
            bad = ohlc_inconsistent(p)
            if bad.any():
                report.ohlc_inconsistent_rows += int(bad.sum())
                report.warnings.append(
                    f"{row.code}: {int(bad.sum())} bar(s) with high below open/close/low or low "
                    f"above them, first on {p.index[int(np.argmax(bad))].date()}; Qlib uses them "
                    "as they are"
                )
            if "change" in data:
                ch = data["change"].dropna()
                if len(ch) > 5 and ch.abs().median() > 0.5:
                    change_pct += 1
    log.info("checked %d instrument(s) in %s", len(inst), root)
    if no_data:
        msg = f"{len(no_data)} instrument(s) in all.txt have no features folder, e.g. {no_data[:5]}"
        report.warnings.append(msg + "; Qlib returns no rows for them")
        in_market = sorted(set(no_data) & members) if members else []
        if in_market:
            report.errors.append(
                f"{len(in_market)} member(s) of {market!r} have no data, e.g. {in_market[:5]}"
            )
    for f, codes_missing in missing.items():
        report.errors.append(
            f"field {f!r} is missing for {len(codes_missing)} instrument(s), e.g. {codes_missing[:5]}; "
            "Qlib would read it as all-NaN without an error"
        )
    if change_pct:
        report.errors.append(
            f"change looks like a percentage (median |change| > 0.5) for {change_pct} instrument(s)"
        )
    if "factor" not in seen_fields:
        report.warnings.append("no factor field: Qlib's backtest disables trading-unit rounding")
    if "vwap" not in seen_fields:
        report.warnings.append(
            "no vwap field: Alpha158's VWAP0 feature is all-NaN on this folder (see examples/qlib/README.md)"
        )
    report.fields = sorted(seen_fields)
    return report
