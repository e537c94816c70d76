"""Exchange calendars known in advance (``exchange-calendars``), and the ``calendar`` setting.

``check_calendar`` validates ``ForecastSettings.calendar``; ``infer_exchange`` names the
exchange of a panel from its instrument codes (or a Qlib region); ``sessions`` and
``intraday_grid`` give an exchange's session dates and bar-end times, built once per
(exchange, years) and kept. exchange-calendars works in UTC; ``kronos_alpha.inference.calendar``
turns its times into the panel's time zone (or naive local time).
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .panel import InputError, to_datetime_index
from .settings import SettingsError

KEYWORDS = ("panel", "business")  # besides None / "auto" and the exchanges
# The Shenzhen and Beijing exchanges keep the mainland A-share calendar, which
# exchange-calendars has as XSHG.
ALIASES = {"XSHE": "XSHG", "SZSE": "XSHG", "BJSE": "XSHG"}
REGION_EXCHANGES = {"cn": "XSHG", "us": "XNYS", "tw": "XTAI"}  # Qlib regions
# instrument codes: SH600000 / sh.600000 / SHSE.600000 and 600000.SH / .SS / .XSHG
CODE_PREFIX = re.compile(r"^(SH|SZ|BJ)(SE)?\.?\d{6}(?!\d)", re.IGNORECASE)
CODE_SUFFIX = re.compile(r"^\w+\.(SH|SS|SZ|BJ|XSHG|XSHE|HK|T|L|TO|AX)$", re.IGNORECASE)
SUFFIX_EXCHANGES = {"HK": "XHKG", "T": "XTKS", "L": "XLON", "TO": "XTSE", "AX": "XASX"}
NAMES_HELP = (
    'see the names with: python -c "import exchange_calendars as xc; '
    'print(xc.get_calendar_names())"'
)


def _xcals():
    try:
        import exchange_calendars
    except ImportError:  # a core dependency; a broken environment gets a clear message
        raise SettingsError(
            "exchange calendars need the package exchange-calendars: pip install exchange-calendars"
        ) from None
    return exchange_calendars


@lru_cache(maxsize=1)
def exchange_names() -> frozenset:
    return frozenset(_xcals().get_calendar_names(include_aliases=True)) | frozenset(ALIASES)


def exchange_name(name: str) -> str | None:
    """The exchange-calendars name of ``name`` (any case), or None when it names none."""
    names = exchange_names()
    if name in names:
        return name
    upper = {n.upper(): n for n in names}
    return upper.get(name.upper())


def check_calendar(value):
    """``ForecastSettings.calendar``: None (also "auto"), "panel", "business", an exchange
    name, a calendar file (a Qlib ``calendars/day.txt``), or a sequence of timestamps
    (kept as a sorted tuple of unique ``pd.Timestamp``)."""
    if value is None:
        return None
    if isinstance(value, Path):
        return _check_file(value)
    if isinstance(value, str):
        name = value.strip()
        if name.lower() == "auto":
            return None
        if name.lower() in KEYWORDS:
            return name.lower()
        found = exchange_name(name) if name else None
        if found is not None:
            return found
        if name and (Path(name).expanduser().exists() or re.search(r"[/\\]|\.txt$", name)):
            return _check_file(Path(name))
        raise SettingsError(
            f"calendar {value!r} is not an exchange name known to exchange-calendars "
            f"(e.g. XSHG, XSHE, XNYS, XHKG, 24/7; {NAMES_HELP}), nor 'auto', 'panel', "
            "'business', a calendar file or a sequence of timestamps"
        )
    if isinstance(value, (list, tuple, np.ndarray, pd.Index, pd.Series)):
        return _check_times(value)
    raise SettingsError(
        "calendar must be None ('auto'), 'panel', 'business', an exchange name, a calendar "
        f"file path or a sequence of timestamps, got {type(value).__name__}"
    )


def _check_file(path: Path) -> str:
    path = path.expanduser()
    if not path.is_file():
        raise SettingsError(f"calendar file {str(path)!r} does not exist (or is not a file)")
    return str(path)


def _parse_times(values, what: str) -> pd.DatetimeIndex:
    """The input boundary's timestamp parsing (the first bad value named), as a setting."""
    try:
        return to_datetime_index(list(values), what)
    except InputError as exc:
        raise SettingsError(str(exc)) from None


def _check_times(values) -> tuple:
    idx = _parse_times(values, "calendar timestamps")
    if len(idx) == 0 or idx.hasnans:
        raise SettingsError("calendar timestamps must be a non-empty sequence without NaT")
    return tuple(idx.unique().sort_values())


@lru_cache(maxsize=64)
def read_calendar_file(path: str, mtime_ns: int, size: int) -> pd.DatetimeIndex:
    """A calendar file: one timestamp per line (a Qlib ``calendars/<freq>.txt``)."""
    lines = [s.strip() for s in Path(path).read_text().splitlines() if s.strip()]
    idx = _parse_times(lines, f"calendar file {path!r}: its lines")
    if len(idx) == 0:
        raise SettingsError(f"calendar file {path!r} is empty")
    return idx.unique().sort_values()


def code_exchange(code: str) -> str | None:
    """The exchange an instrument code names, or None."""
    code = str(code).strip()
    if CODE_PREFIX.match(code):
        return "XSHG"  # SH, SZ and BJ: the one A-share calendar
    m = CODE_SUFFIX.match(code)
    if m:
        return SUFFIX_EXCHANGES.get(m.group(1).upper(), "XSHG")
    return None


def infer_exchange(instruments, region: str | None = None) -> str | None:
    """The one exchange the instrument codes name (codes that name none do not vote), else
    the Qlib region's (cn: XSHG, us: XNYS, tw: XTAI), else None. Codes of two exchanges with
    different calendars are an error: one forecast call uses one calendar."""
    found = {code_exchange(c) for c in instruments} - {None}
    if len(found) > 1:
        raise SettingsError(
            f"the instruments belong to exchanges with different calendars {sorted(found)}; "
            "forecast them separately, or pass calendar= (an exchange name or timestamps)"
        )
    if found:
        return found.pop()
    return REGION_EXCHANGES.get(str(region).lower()) if region else None


def canonical(name: str) -> str:
    """The exchange-calendars name behind ``name`` (our aliases and its own resolved)."""
    return _xcals().resolve_alias(ALIASES.get(name, name))


@lru_cache(maxsize=64)
def bounds(name: str) -> tuple:
    """(first, last) day exchange-calendars knows for the exchange (None: unbounded)."""
    cls = type(_get(canonical(name)))
    return cls.bound_min(), cls.bound_max()


def _calendar(name: str, first_year: int, last_year: int):
    """The exchange-calendars object for whole years, clipped to what it knows."""
    lo, hi = bounds(name)
    start, end = pd.Timestamp(f"{first_year}-01-01"), pd.Timestamp(f"{last_year}-12-31")
    start = max(start, lo) if lo is not None else start
    end = min(end, hi) if hi is not None else end
    return _built(canonical(name), start, end)


@lru_cache(maxsize=32)
def _built(name: str, start: pd.Timestamp, end: pd.Timestamp):
    return _get(name, start=start, end=end)


def _get(name: str, **kw):
    # exchange-calendars 4.13 under pandas 3 warns about its own Series.values use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _xcals().get_calendar(name, **kw)


def sessions(name: str, first_year: int, last_year: int) -> pd.DatetimeIndex:
    """The exchange's session dates in the years (naive midnight), as far as it knows them."""
    return pd.DatetimeIndex(_calendar(name, first_year, last_year).sessions).tz_localize(None)


def timezone(name: str) -> str:
    """The exchange's local time zone (its naive bar times are in it)."""
    return str(_get(canonical(name)).tz)


@lru_cache(maxsize=32)
def intraday_grid(name: str, first_year: int, last_year: int, step_ns: int) -> pd.DatetimeIndex:
    """Every bar-END time (UTC) of the sessions of the years at ``step_ns`` bars: open + step,
    open + 2 step, ... up to the break start and from the break end to the close; a session
    part that the step does not divide ends with a shorter bar at its close."""
    cal = _calendar(name, first_year, last_year)
    sched = cal.schedule
    parts = [(sched["open"], sched["close"])]
    if "break_start" in sched and sched["break_start"].notna().any():
        has = sched["break_start"].notna().to_numpy()
        bs = sched["break_start"].where(has, sched["close"])
        be = sched["break_end"].where(has, sched["close"])
        parts = [(sched["open"], bs), (be, sched["close"])]
    out = []
    for a, b in parts:
        a, b = (pd.DatetimeIndex(x).as_unit("ns").asi8 for x in (a, b))  # UTC
        for lo, hi in zip(a, b):
            if hi > lo:
                pts = np.arange(lo + step_ns, hi + 1, step_ns, dtype=np.int64)
                out.append(pts if len(pts) and pts[-1] == hi else np.append(pts, hi))
    grid = np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)
    return pd.DatetimeIndex(grid.astype("datetime64[ns]")).tz_localize("UTC")
