"""The input of ``qlib-data build``: which files, which instrument codes, which dates.

Nothing here writes a file, and nothing stops at the first problem: each one found is added
to a list of problems, named by file, instrument and line, so that one pass reports them all.

Instrument codes. A folder holds one file per instrument: its code is the file name without
one of the known suffixes (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``, any case), upper-cased,
and nothing else is dropped (``SH.600000.csv`` is ``SH.600000``, ``SH600000.csv`` is
``SH600000``). A long file has an instrument column (see CODE_NAMES; read as text, so
``000001`` keeps its zeros); a long file without one is one instrument named after the file,
as ``kronos-alpha forecast`` reads it. A code is ASCII letters, digits and ``_ - . ^``, does
not start with ``.`` or ``-`` and holds no ``..``: it names a folder of the output. Codes
are case-insensitive (Qlib lower-cases the ``features`` folders), so two sources that give
the same code are a problem naming both.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.inference.panel import (
    TIME_COLUMNS,
    InputError,
    clean_columns,
    column_name,
    to_datetime_index,
)

SUFFIXES = (".csv.gz", ".csv", ".parquet", ".pq")  # longest first: x.csv.gz is X
PARQUET = (".parquet", ".pq")
DATE_NAMES = list(TIME_COLUMNS)
CODE_NAMES = ["instrument", "symbol", "code", "ticker", "stock_code", "ts_code"]
CODE_RE = re.compile(r"[A-Za-z0-9_^][A-Za-z0-9_.^-]*")


def code_problem(code: str, what: str = "instrument code") -> str | None:
    """Why ``code`` cannot name a folder of the output (None: it can)."""
    if not code:
        return f"{what} is empty"
    if ".." in code or not CODE_RE.fullmatch(code):
        return (
            f"{what} {code!r} is not allowed: use ASCII letters, digits and _ - . ^, not "
            "starting with . or - and without '..' (it names a folder of the output)"
        )
    return None


def code_from_filename(name: str) -> str:
    """The instrument code of a per-instrument file: its name without a known suffix."""
    lower = name.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)].upper()
    return name.upper()


def input_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The bar files of a folder (sorted) and the names of the other entries, ignored."""
    files, ignored = [], []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(SUFFIXES):
            files.append(p)
        else:
            ignored.append(p.name)
    return files, ignored


def progress(items, total: int, desc: str, unit: str):
    """A progress bar on a terminal (tqdm; none when output is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, disable=None, leave=False)


def _code_column(columns, given: str | None) -> str | None:
    if given is not None:
        return given if given in columns else None
    lower = {column_name(c): c for c in columns}
    return next((lower[n] for n in CODE_NAMES if n in lower), None)


def read_table(path: Path, problems: list[str], code_names=()) -> pd.DataFrame | None:
    """One CSV/parquet file, or None with the reason in ``problems`` (naming the file).

    The columns named in ``code_names`` (found case-insensitively) are read as text.
    """
    kind = "parquet" if path.name.lower().endswith(PARQUET) else "CSV"
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        gz = "gzip" if path.name.lower().endswith(".gz") else None
        sep = ","
        header = pd.read_csv(path, nrows=0, compression=gz).columns
        if len(header) == 1:  # one column: a tab-, semicolon- or bar-separated file
            sep = next((c for c in "\t;|" if c in str(header[0])), ",")
            header = pd.read_csv(path, nrows=0, sep=sep, compression=gz).columns
        wanted = {column_name(n) for n in code_names}
        text = {c: str for c in header if column_name(c) in wanted}
        return pd.read_csv(path, sep=sep, compression=gz, dtype=text or None)
    except UnicodeDecodeError as exc:
        problems.append(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at "
            f"offset {exc.start}); save the file as UTF-8"
        )
    except pd.errors.EmptyDataError:
        problems.append(f"{path}: the file is empty (not even a header)")
    except (ValueError, OSError) as exc:  # parser, pyarrow and gzip errors
        problems.append(f"{path}: cannot be read as {kind}: {str(exc).strip()}")
    return None


def read_bars(
    source: str | Path, instrument_column: str | None = None, problems: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Bars per instrument code from a folder of per-instrument files or one long file.

    Each frame is indexed by a DatetimeIndex in the file's order (validation checks the
    order), has canonical column names and carries ``attrs["source"]`` (the file, and the
    instrument of a long file) and ``attrs["lines"]`` (where each row is in its file). The
    problems found go to ``problems``; without that list the first problems are raised.
    """
    raise_at_end = problems is None
    problems = [] if problems is None else problems
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"input {source} does not exist")
    out: dict[str, pd.DataFrame] = {}
    owners: dict[str, str] = {}

    def add(code: str, df: pd.DataFrame | None, label: str) -> None:
        why = code_problem(code, f"{label}: instrument code")
        if why:
            problems.append(why)
            return
        if code in owners:
            problems.append(
                f"instrument {code!r} comes from both {owners[code]} and {label} (codes are "
                f"case-insensitive: both would be features/{code.lower()}); rename one"
            )
            return
        owners[code] = label
        if df is not None:
            out[code] = df

    if source.is_dir():
        files, _ = input_files(source)
        if not files:
            problems.append(f"{source} holds no {'/'.join(SUFFIXES)} files")
        for p in progress(files, len(files), f"reading {source.name}", "file"):
            df = read_table(p, problems)
            add(
                code_from_filename(p.name),
                None if df is None else _by_date(df, str(p), problems),
                str(p),
            )
    else:
        df = read_table(source, problems, CODE_NAMES if instrument_column is None else ())
        if df is not None:
            _split_long(df, source, instrument_column, problems, add)
    if raise_at_end and problems:
        raise InputError("; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
    return out


def _split_long(df, source: Path, instrument_column, problems, add) -> None:
    code_col = _code_column(df.columns, instrument_column)
    if code_col is None and instrument_column is not None:
        problems.append(f"{source}: no column {instrument_column!r}; found {list(df.columns)}")
        return
    if not {column_name(c) for c in df.columns} & set(DATE_NAMES):  # once, not per instrument
        problems.append(
            f"{source}: no date column; looked for {DATE_NAMES}, found {list(df.columns)}"
        )
        return
    if code_col is None:  # one instrument, named after the file (as forecast reads it)
        add(code_from_filename(source.name), _by_date(df, str(source), problems), str(source))
        return
    empty = empty_codes(df[code_col])
    if empty.any():
        first = int(np.argmax(empty))
        problems.append(
            f"{source}: {int(empty.sum())} row(s) have an empty {code_col!r}, first at "
            f"{_line_word(source)} {_lines(df.index, source)[first]}"
        )
    body = df.loc[~empty]
    for code, part in body.groupby(body[code_col].astype(str), sort=True):
        label = f"{source} [{code}]"
        add(code.upper(), _by_date(part.drop(columns=[code_col]), label, problems, source), label)


def empty_codes(codes: pd.Series) -> np.ndarray:
    """Rows whose instrument code is missing or blank (``read_csv`` reads "" as NaN): a
    groupby would drop them unseen."""
    text = codes.fillna("").astype(str).str.strip()
    return codes.isna().to_numpy(dtype=bool) | text.eq("").to_numpy(dtype=bool)


def refuse_empty_codes(codes: pd.Series, where: str) -> None:
    """An InputError naming the first row of ``codes`` (a file's instrument column) that
    names no instrument; a table reader's groupby would drop such rows unseen."""
    blank = empty_codes(codes)
    if blank.any():
        raise InputError(
            f"{where}: column {codes.name!r} names no instrument at data row "
            f"{int(np.argmax(blank))} ({int(blank.sum())} such row(s))"
        )


def _line_word(path: Path) -> str:
    return "row" if path.name.lower().endswith(PARQUET) else "line"


def _lines(index, path: Path) -> np.ndarray:
    """Where rows are in their file, from the integer index ``read_csv`` gives (kept through
    a long file's groups): a CSV's header is line 1; parquet rows count from 0."""
    offset = 0 if path.name.lower().endswith(PARQUET) else 2
    if pd.api.types.is_integer_dtype(index):
        return np.asarray(index, dtype=np.int64) + offset
    return np.arange(len(index)) + offset


def _by_date(df: pd.DataFrame, source: str, problems: list[str], path: Path | None = None):
    """The frame indexed by its date column (or a parquet file's DatetimeIndex), or None with
    the reason in ``problems``."""
    path = Path(source) if path is None else path
    try:
        df = clean_columns(df, source, features_only=False)
        date_col = next((c for c in DATE_NAMES if c in df.columns), None)
        if date_col is None and isinstance(df.index, pd.DatetimeIndex):
            lines, dates = _lines(pd.RangeIndex(len(df)), path), df.index
        elif date_col is None:
            raise InputError(
                f"{source}: no date column; looked for {DATE_NAMES}, found {list(df.columns)}"
            )
        elif len(df) == 0:
            raise InputError(f"{source}: no rows (a header only)")
        else:
            lines = _lines(df.index, path)
            dates = to_datetime_index(df[date_col].to_numpy(), f"{source}: column {date_col!r}")
            df = df.drop(columns=[date_col])
    except InputError as exc:
        problems.append(str(exc))
        return None
    df = df.set_axis(pd.DatetimeIndex(dates, name="datetime"), axis=0)
    df.attrs.update(source=source, lines=lines, line_word=_line_word(path))
    return df
