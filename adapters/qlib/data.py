"""Qlib provider folders from CSV/parquet bars, and a checker for existing folders.

Layout written (Qlib's file storage, as ``scripts/dump_bin.py`` writes it):

- ``calendars/<freq>.txt``: every date seen in the input, sorted;
- ``instruments/all.txt`` (and ``instruments/<market>.txt``): ``CODE<TAB>first<TAB>last``;
- ``features/<code lower>/<field>.<freq>.bin``: little-endian float32, the first value is the
  index of the instrument's first date in the calendar, then one value per calendar day up to
  its last date (days it has no row for are NaN).

Fields: open, high, low, close, volume, plus factor when given; ``change`` is recomputed as a
fraction (close / previous close - 1); ``amount`` is written when given or derivable as
vwap * volume, ``vwap`` when given or derivable as amount / volume. Nothing is filled in:
a suspension stays visible (volume 0 or NaN), and the build reports it. Column names go
through the input boundary (``panel.clean_columns``); every file is written by
``kronos_alpha.files.atomic_write``, so a reader never sees half a bin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.files import atomic_write, write_text
from kronos_alpha.inference.panel import (
    PRICE_COLS,
    InputError,
    clean_columns,
    column_name,
    missing_prices,
)

log = logging.getLogger(__name__)

OPTIONAL = ["volume", "amount", "vwap", "factor"]
DATE_NAMES = ["datetime", "date", "timestamp", "timestamps", "time", "trade_date"]
CODE_NAMES = ["instrument", "symbol", "code", "ticker", "stock_code", "ts_code"]
# OHLC may disagree by float rounding in vendor files; beyond this it is an error.
OHLC_TOL = 1e-6


@dataclass
class BuildReport:
    """What a build wrote and what it found on the way."""

    instruments: int = 0
    days: int = 0
    rows: int = 0
    fields: list[str] = field(default_factory=list)
    suspended_rows: int = 0  # volume 0 or NaN, or all prices NaN
    gap_days: int = 0  # calendar days inside an instrument's span with no row
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(vars(self))


def _find_column(df: pd.DataFrame, names: list[str], what: str, source: str) -> str:
    lower = {column_name(c): c for c in df.columns}
    for n in names:
        if n in lower:
            return lower[n]
    raise InputError(f"{source}: no {what} column; looked for {names}, found {list(df.columns)}")


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def read_bars(source: str | Path, instrument_column: str | None = None) -> dict[str, pd.DataFrame]:
    """Bars per instrument from a folder of per-instrument CSV/parquet files (the file name is
    the instrument code), or from one long CSV/parquet file with an instrument column.

    Each frame is indexed by a DatetimeIndex in the file's order (not sorted: validation
    checks the order) and has lower-case column names.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"input {source} does not exist")
    out: dict[str, pd.DataFrame] = {}
    if source.is_dir():
        files = sorted(
            p
            for p in source.iterdir()
            if p.suffix.lower() in (".csv", ".parquet", ".pq") or p.name.endswith(".csv.gz")
        )
        if not files:
            raise InputError(f"{source} holds no .csv/.parquet files")
        for p in files:
            code = p.name.split(".")[0].upper()
            out[code] = _index_by_date(_read_table(p), str(p))
        return out
    df = _read_table(source)
    code_col = instrument_column or _find_column(df, CODE_NAMES, "instrument", str(source))
    if code_col not in df.columns:
        raise InputError(f"{source}: no column {code_col!r}; found {list(df.columns)}")
    for code, part in df.groupby(code_col, sort=True):
        out[str(code).upper()] = _index_by_date(part.drop(columns=[code_col]), f"{source} [{code}]")
    return out


def _index_by_date(df: pd.DataFrame, source: str) -> pd.DataFrame:
    date_col = _find_column(df, DATE_NAMES, "date", source)
    try:
        dates = pd.to_datetime(df[date_col])
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{source}: column {date_col!r} has values that are not dates: {exc}"
        ) from exc
    df = clean_columns(df.drop(columns=[date_col]), source, features_only=False)
    df.index = pd.DatetimeIndex(dates, name="datetime")
    df.attrs["source"] = source  # error messages name the file (and instrument)
    return df


def validate_bars(df: pd.DataFrame, source: str, report: BuildReport) -> pd.DataFrame:
    """Check one instrument's bars; return them as floats. Errors name the file and the row."""
    missing = missing_prices(df.columns)
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
    if df.index.hasnans:
        raise InputError(f"{source}: empty date at row {int(np.argmax(df.index.isna()))}")
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise InputError(f"{source}: duplicate date {dup}")
    if not df.index.is_monotonic_increasing:
        pos = int(np.argmax(np.diff(df.index.asi8) < 0)) + 1
        raise InputError(
            f"{source}: dates out of order at row {pos} ({df.index[pos - 1]} then {df.index[pos]})"
        )
    cols = [c for c in PRICE_COLS + OPTIONAL if c in df.columns]
    try:
        df = df[cols].astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: a price/volume column is not numeric: {exc}") from exc
    prices = df[PRICE_COLS]
    all_nan = prices.isna().all(axis=1)
    partial = prices.isna().any(axis=1) & ~all_nan
    if partial.any():
        row = prices.index[partial.to_numpy()][0]
        raise InputError(f"{source}: some but not all of open/high/low/close are empty on {row}")
    p = prices[~all_nan]
    if (p <= 0).any().any():
        row = p.index[(p <= 0).any(axis=1).to_numpy()][0]
        raise InputError(f"{source}: a non-positive price on {row}")
    tol = OHLC_TOL * p["close"].abs()
    high_bad = p["high"] < p[["open", "close", "low"]].max(axis=1) - tol
    low_bad = p["low"] > p[["open", "close", "high"]].min(axis=1) + tol
    bad = high_bad | low_bad
    if bad.any():
        row = p.index[bad.to_numpy()][0]
        r = p.loc[row]
        raise InputError(
            f"{source}: inconsistent OHLC on {row} (open {r['open']}, high {r['high']}, low {r['low']}, "
            f"close {r['close']}); {int(bad.sum())} row(s) have high below open/close/low or low above them"
        )
    suspended = all_nan.copy()
    if "volume" in df.columns:
        suspended |= df["volume"].isna() | (df["volume"] <= 0)
    if suspended.any():
        report.suspended_rows += int(suspended.sum())
        report.warnings.append(
            f"{source}: {int(suspended.sum())} suspended row(s) (volume 0/empty or no prices), "
            f"first on {df.index[suspended.to_numpy()][0].date()}; written as they are"
        )
    return df


def derive_fields(df: pd.DataFrame) -> pd.DataFrame:
    """amount, vwap (when derivable) and change, without filling anything in."""
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
    fmt = "%Y-%m-%d" if freq == "day" else "%Y-%m-%d %H:%M:%S"
    return [d.strftime(fmt) for d in idx]


def write_bin(path: Path, start_index: int, values: np.ndarray) -> None:
    """One field of one instrument: its first calendar index, then the values, as float32."""
    atomic_write(path, np.hstack([[start_index], values]).astype("<f4").tobytes())


def build(
    source: str | Path,
    out_dir: str | Path,
    market: str | None = None,
    freq: str = "day",
    instrument_column: str | None = None,
    overwrite: bool = False,
) -> BuildReport:
    """Write a Qlib provider folder at ``out_dir`` from ``source`` (see module docstring)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace its files"
        )
    bars = read_bars(source, instrument_column)
    report = BuildReport()
    frames = {}
    for code, df in bars.items():
        frames[code] = derive_fields(validate_bars(df, df.attrs.get("source", code), report))
    calendar = pd.DatetimeIndex(sorted(set().union(*[set(f.index) for f in frames.values()])))
    pos = pd.Series(np.arange(len(calendar)), index=calendar)
    fields = sorted(set().union(*[set(f.columns) for f in frames.values()]) | {"change"})
    write_text(out / "calendars" / f"{freq}.txt", "\n".join(_fmt_dates(calendar, freq)) + "\n")
    lines = []
    for code, df in frames.items():
        first, last = int(pos[df.index[0]]), int(pos[df.index[-1]])
        aligned = df.reindex(calendar[first : last + 1])
        report.gap_days += len(aligned) - len(df)
        aligned["change"] = _change(aligned["close"])
        folder = out / "features" / code.lower()
        for name in aligned.columns:
            write_bin(folder / f"{name}.{freq}.bin", first, aligned[name].to_numpy())
        lines.append(
            f"{code}\t{_fmt_dates(calendar[[first]], freq)[0]}\t{_fmt_dates(calendar[[last]], freq)[0]}"
        )
        report.rows += len(df)
    text = "\n".join(lines) + "\n"
    write_text(out / "instruments" / "all.txt", text)
    if market and market != "all":
        write_text(out / "instruments" / f"{market}.txt", text)
    if report.gap_days:
        report.warnings.append(
            f"{report.gap_days} calendar day(s) fall inside an instrument's span without a row; "
            "they read back as NaN (Qlib's convention for suspensions)"
        )
    report.instruments, report.days, report.fields = len(frames), len(calendar), fields
    for w in report.warnings:
        log.warning(w)
    return report


@dataclass
class CheckReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    instruments: int = 0
    days: int = 0
    fields: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {**vars(self), "ok": self.ok}


def _read_calendar(path: Path, report: CheckReport) -> pd.DatetimeIndex | None:
    if not path.exists():
        report.errors.append(f"calendar {path} is missing")
        return None
    lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
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
    try:
        df = pd.read_csv(path, sep="\t", header=None, names=["code", "start", "end"], dtype=str)
        df["start"], df["end"] = pd.to_datetime(df["start"]), pd.to_datetime(df["end"])
    except (TypeError, ValueError) as exc:
        report.errors.append(f"{path}: not CODE<TAB>start<TAB>end lines: {exc}")
        return None
    if df.isna().any().any():
        report.errors.append(
            f"{path}: line {int(np.argmax(df.isna().any(axis=1))) + 1} is incomplete"
        )
    bad = df["start"] > df["end"]
    if bad.any():
        report.errors.append(f"{path}: {df.loc[bad, 'code'].iloc[0]} starts after it ends")
    return df


def read_bin(path: Path) -> tuple[int, np.ndarray]:
    raw = np.fromfile(path, dtype="<f4")
    return int(raw[0]), raw[1:]


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
    if not root.is_dir():
        report.errors.append(f"{root} is not a folder")
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
    ohlc_bad = change_pct = 0
    no_data: list[str] = []
    for row in inst.itertuples():
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
            path = folder_i / f"{f}.{freq}.bin"
            if path.stat().st_size % 4 or path.stat().st_size < 4:
                report.errors.append(
                    f"{path}: size {path.stat().st_size} is not a whole number of float32"
                )
                continue
            start, values = read_bin(path)
            if start < 0 or start + len(values) > len(cal):
                report.errors.append(
                    f"{path}: covers calendar rows {start}..{start + len(values) - 1}, calendar has {len(cal)}"
                )
                continue
            if deep:
                data[f] = pd.Series(
                    values, index=cal[start : start + len(values)], dtype=np.float64
                )
        if deep and all(f in data for f in PRICE_COLS):
            p = pd.DataFrame({f: data[f] for f in PRICE_COLS}).dropna()
            tol = 1e-4 * p["close"].abs()
            bad = (p["high"] < p[["open", "close", "low"]].max(axis=1) - tol) | (
                p["low"] > p[["open", "close", "high"]].min(axis=1) + tol
            )
            if bad.any():
                ohlc_bad += 1
                report.warnings.append(
                    f"{row.code}: {int(bad.sum())} bar(s) with inconsistent OHLC, first on {p.index[bad.to_numpy()][0].date()}"
                )
            if "change" in data:
                ch = data["change"].dropna()
                if len(ch) > 5 and ch.abs().median() > 0.5:
                    change_pct += 1
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
