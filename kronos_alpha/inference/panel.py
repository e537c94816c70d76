"""The one input boundary: every door hands its bars to these functions.

Column names (``clean_columns``), the bar index and timestamps (``as_timestamps``,
``to_datetime_index``), instrument identity (``instrument_name``), the price and volume
checks (``numeric_values``, ``ohlcv_matrix``, ``missing_prices``), the suspension policy
(``traded_mask``, ``Series``) and the windows of a forecast (``Window``, ``forecast_windows``)
are written once, here (a panel's split into one frame per instrument, ``frames.split_panel``,
and an adapter feed's listed span, ``feeds.check_feed_bars``, build on them). The predictor,
the Forecaster, the Qlib, backtrader and vectorbt adapters, the fine-tuning datasets,
``qlib-data build`` and the CLI all call them.

Suspension policy. A bar is *traded* when its four prices are finite and, for a series that
has volume data at all, its volume is finite and > 0. A series whose volume is never > 0 (an
index, say) has no volume data: its prices alone decide, and its volume and amount are
treated as absent. An untraded bar is *suspended*.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd

PRICE_COLS = ["open", "high", "low", "close"]
VOLUME_COL = "volume"
AMOUNT_COL = "amount"
FEATURE_COLS = PRICE_COLS + [VOLUME_COL, AMOUNT_COL]
SKIP_REASONS = ("no_bar", "suspended", "short_history")
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32: 1.2e-38


class InputError(ValueError):
    """Bad market data: the message names the column, row, instrument or argument at fault."""


# -- column names, instruments, timestamps -----------------------------------------------------
def column_name(c) -> str:
    """The canonical name of a bar column: lower case, without Qlib's ``$`` prefix."""
    return str(c).lstrip("$").lower()


def clean_columns(
    df: pd.DataFrame, where: str = "bars", features_only: bool = True
) -> pd.DataFrame:
    """Canonical column names (see ``column_name``); with ``features_only`` keep only the
    model's features. Two columns that collide after cleaning are an error naming both."""
    names = [column_name(c) for c in df.columns]
    canonical = names == list(df.columns) and len(set(names)) == len(names)
    if canonical and (not features_only or all(c in FEATURE_COLS for c in names)):
        return df
    seen: dict[str, object] = {}
    for orig, name in zip(df.columns, names):
        if name in seen:
            raise InputError(
                f"{where}: columns {seen[name]!r} and {orig!r} are both {name!r} once "
                "lower-cased and without '$'"
            )
        seen[name] = orig
    out = df.set_axis(names, axis=1)
    if features_only:
        out = out[[c for c in FEATURE_COLS if c in out.columns]]
    return out


def missing_prices(columns) -> list[str]:
    return [c for c in PRICE_COLS if c not in set(columns)]


def instrument_name(key) -> str:
    """The instrument identity every table uses: its name as a string, never missing."""
    missing = False
    with contextlib.suppress(TypeError, ValueError):  # a tuple key: not a missing label
        missing = bool(pd.isna(key))
    if missing or not str(key).strip():
        raise InputError(f"an instrument name is missing ({key!r}); give every instrument a name")
    return str(key)


TIME_COLUMNS = ("datetime", "date", "timestamp", "timestamps", "time", "trade_date")


def to_datetime_index(values, what: str) -> pd.DatetimeIndex:
    """Parse timestamps; an error names ``what`` and the reason (mixed time zones included).

    Numbers are never taken as nanoseconds since 1970: 8-digit integers are YYYYMMDD dates,
    any other number is an error (a RangeIndex from ``read_csv``, say). Periods are stamped
    at their start (``PeriodIndex.to_timestamp``).
    """
    if isinstance(values, pd.DatetimeIndex):
        return values
    if isinstance(getattr(values, "dtype", None), pd.PeriodDtype):  # a period's bar: its start
        return pd.PeriodIndex(values).to_timestamp()
    arr = np.asarray(values)
    if not len(arr):  # no timestamps, not "numbers"
        return pd.DatetimeIndex([])
    if arr.dtype.kind in "iufb" or (
        arr.dtype == object
        and len(arr)
        and all(isinstance(v, (int, float, np.number)) for v in arr)
    ):
        nums = arr.astype(np.float64)
        ymd = np.isfinite(nums).all() and (nums == np.round(nums)).all()
        ymd = ymd and len(nums) and ((nums >= 19000101) & (nums <= 21001231)).all()
        if not ymd:
            raise InputError(
                f"{what} are numbers ({arr[:3].tolist()} ...), not timestamps; give a "
                f"DatetimeIndex or a date column ({', '.join(TIME_COLUMNS)})"
            )
        try:
            return pd.DatetimeIndex(
                pd.to_datetime(nums.astype(np.int64).astype(str), format="%Y%m%d")
            )
        except ValueError as exc:
            raise InputError(
                f"{what} look like YYYYMMDD integers but are not dates ({exc})"
            ) from exc
    try:
        return pd.DatetimeIndex(pd.to_datetime(values))
    except (TypeError, ValueError) as exc:
        if "tz" in str(exc).lower() or "timezone" in str(exc).lower():
            raise InputError(
                f"{what} mixes time zones: naive and aware timestamps, or several zones or "
                "UTC offsets (an offset that changes with daylight saving, say); give local "
                "times without offsets, or times in one zone"
            ) from exc
        raise InputError(f"{what} are not timestamps ({_first_unparsed(values) or exc})") from exc


def _first_unparsed(values) -> str:
    """'<value> at position <i>; <n> such value(s)' of entries that do not parse, or ''."""
    s = pd.Series(list(values))
    with contextlib.suppress(TypeError, ValueError):
        bad = (pd.to_datetime(s, errors="coerce").isna() & s.notna()).to_numpy()
        pos = int(np.argmax(bad))
        return f"{s[pos]!r} at position {pos}; {int(bad.sum())} such value(s)" if bad.any() else ""
    return ""


def as_timestamps(ts, name: str = "timestamps") -> pd.DatetimeIndex:
    """A DatetimeIndex from a Series, Index or list; strictly increasing, no duplicates."""
    values = ts if isinstance(ts, pd.Index) else pd.Series(ts).to_numpy()
    idx = to_datetime_index(values, name)
    if idx.hasnans:
        raise InputError(f"{name} contain NaT at position {int(np.argmax(idx.isna()))}")
    if idx.has_duplicates:
        raise InputError(f"{name} contain a duplicated timestamp {idx[idx.duplicated()][0]}")
    if not idx.is_monotonic_increasing:
        pos = int(np.argmax(np.diff(idx.asi8) < 0)) + 1
        raise InputError(
            f"{name} are out of order at position {pos} ({idx[pos - 1]} then {idx[pos]})"
        )
    return idx


# -- prices and volume ------------------------------------------------------------------------
def numeric_values(s, column: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(a bar column as float64, its rows of text that is not a number). Bool, datetime,
    timedelta and complex columns are refused by name: as numbers they mean nothing here."""
    if isinstance(s, pd.DataFrame):
        raise InputError(f"{where} has {s.shape[1]} columns named {column!r}")
    s = s.astype(object) if isinstance(s.dtype, pd.CategoricalDtype) else s
    t = pd.api.types
    if t.is_bool_dtype(s.dtype) or t.is_complex_dtype(s.dtype) or s.dtype.kind in "mM":
        raise InputError(f"{where}: column {column!r} holds {s.dtype} values, not numbers")
    if t.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(s), bool)
    try:
        conv = pd.to_numeric(s, errors="coerce")
    except (TypeError, ValueError) as exc:  # e.g. complex or list entries
        raise InputError(f"{where}: column {column!r} is not numeric ({exc})") from None
    text = (conv.isna() & s.notna()).to_numpy(dtype=bool)
    if s.dtype == object:  # to_numeric reads a True among numbers as 1.0
        text = text | s.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    return conv.to_numpy(dtype=np.float64, na_value=np.nan), text


def numeric_matrix(df: pd.DataFrame, columns, name: str) -> np.ndarray:
    """Columns as a float64 matrix; text that is not a number is an error naming the row."""
    out = []
    for c in columns:
        values, text = numeric_values(df[c], c, name)
        if text.any():
            pos = int(np.argmax(text))
            raise InputError(
                f"{name}: column {c!r} is not numeric at row {df.index[pos]!r} "
                f"({df[c].iloc[pos]!r}; {int(text.sum())} such value(s))"
            )
        out.append(values)
    return np.column_stack(out)


def ohlcv_matrix(df: pd.DataFrame, name: str = "df") -> np.ndarray:
    """Validate bars and return the six model features as float32, shape (n, 6).

    Missing volume -> volume and amount are 0; missing amount -> volume * mean(OHLC), as the
    published predictor does. NaN/inf values and negative prices are errors.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InputError(f"{name} is empty")
    missing = missing_prices(df.columns)
    if missing:
        raise InputError(f"{name} is missing price column(s) {missing}; it has {list(df.columns)}")
    given = [c for c in FEATURE_COLS if c in df.columns]
    values = numeric_matrix(df, given, name)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(
            f"{name} has {int(bad.sum())} NaN/inf value(s); first in column "
            f"{given[col]!r} at row {df.index[row]!r}"
        )
    prices = values[:, :4]
    if VOLUME_COL in df.columns:
        volume = values[:, given.index(VOLUME_COL)]
        if AMOUNT_COL in df.columns:
            amount = values[:, given.index(AMOUNT_COL)]
        else:
            amount = volume * prices.mean(axis=1)
    else:
        volume = np.zeros(len(df))
        amount = np.zeros(len(df))
    x = np.column_stack([prices, volume, amount])
    checks = (
        (prices < 0, "a negative price", ""),
        (prices == 0, "a zero price", "; returns from a zero close are undefined"),
        (prices < FLOAT32_TINY, "a price below float32's smallest normal number (1.2e-38)",
         "; the model computes in float32: quote the prices in a larger unit"),
    )  # fmt: skip
    for bad, what, why in checks:
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InputError(
                f"{name} has {what} in column {PRICE_COLS[col]!r} at row {df.index[row]!r} "
                f"({int(bad.any(axis=1).sum())} such bar(s)){why}"
            )
    huge = ~(np.abs(x) <= FLOAT32_MAX)  # a derived amount may overflow to inf
    if huge.any():
        row, col = np.argwhere(huge)[0]
        what = FEATURE_COLS[col]
        if what == AMOUNT_COL and AMOUNT_COL not in df.columns:
            what += " (volume x mean price: the frame has no amount column)"
        raise InputError(
            f"{name} has a value beyond float32's range ({x[row, col]:.3g}) in column "
            f"{what!r} at row {df.index[row]!r}; the model computes in float32"
        )
    if VOLUME_COL in df.columns:
        check_volume(volume, df.index, name)
    # Column-major like upstream's DataFrame.values: float32 means sum in layout order (bits)
    return np.asfortranarray(x, dtype=np.float32)


def check_volume(volume: np.ndarray, index, name: str) -> None:
    """A negative volume is an error (volume 0 or NaN marks a suspended bar, never < 0)."""
    with np.errstate(invalid="ignore"):
        negative = volume < 0
    if negative.any():
        row = index[int(np.argmax(negative))]
        raise InputError(
            f"{name} has a negative volume at row {row!r} ({int(negative.sum())} such bar(s))"
        )


OHLC_TOL = 1e-6  # relative to the close: vendor files disagree by float rounding


def ohlc_inconsistent(prices) -> np.ndarray:
    """Rows whose high is below their open, close or low, or whose low is above them (by more
    than OHLC_TOL of the close). Policy, in every door: such bars are used as they are, and
    counted (``ohlc_inconsistent_bars``) with a warning naming the first; NaN rows are not."""
    p = np.asarray(prices[PRICE_COLS] if isinstance(prices, pd.DataFrame) else prices)
    o, h, lo, c = (p[:, k].astype(np.float64) for k in range(4))
    tol = OHLC_TOL * np.abs(c)
    with np.errstate(invalid="ignore"):
        high_bad = h < np.maximum(np.maximum(o, c), lo) - tol
        low_bad = lo > np.minimum(np.minimum(o, c), h) + tol
    return high_bad | low_bad


def warn_inconsistent(mask: np.ndarray, index, name: str, stacklevel: int = 3) -> int:
    """Count (and warn about) the inconsistent bars ``mask`` marks; returns the count."""
    n = int(np.count_nonzero(mask))
    if n:
        warnings.warn(
            f"{name}: {n} bar(s) with high below open/close/low or low above them (first at "
            f"{index[int(np.argmax(mask))]!r}); used as they are and counted",
            stacklevel=stacklevel,
        )
    return n


def priced_mask(df: pd.DataFrame, name: str = "bars") -> np.ndarray:
    """Rows whose four prices are all finite."""
    return np.isfinite(numeric_matrix(df, PRICE_COLS, name)).all(axis=1)


def traded_mask(df: pd.DataFrame, name: str = "bars", nan_prices: str = "suspend"):
    """(traded rows, whether the series has volume data): the suspension policy (module doc).

    ``nan_prices="raise"`` makes a NaN price on a bar with volume an error naming the row
    (fine-tuning never learns from a bar it cannot read), instead of a suspended bar.
    """
    finite = np.isfinite(numeric_matrix(df, PRICE_COLS, name))
    priced = finite.all(axis=1)
    has_volume = False
    if VOLUME_COL in df.columns:
        vol = numeric_matrix(df, [VOLUME_COL], name)[:, 0]
        check_volume(vol, df.index, name)
        with np.errstate(invalid="ignore"):
            volume_ok = np.isfinite(vol) & (vol > 0)
        has_volume = bool(volume_ok.any())
    if not has_volume:
        return priced, False
    if nan_prices == "raise" and (volume_ok & ~priced).any():
        r = int(np.argmax(volume_ok & ~priced))
        col = PRICE_COLS[int(np.argmin(finite[r]))]
        raise InputError(
            f"{name} has a NaN/inf price in column {col!r} on a traded bar (volume > 0) "
            f"at row {df.index[r]!r}"
        )
    return volume_ok & priced, True
