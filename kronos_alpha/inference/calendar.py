"""Future bar times for the time features of a forecast, from a calendar known at t.

The rule (no look-ahead): the bar times after a decision time t come from a calendar that a
live run at t has too, never from the panel's own rows after t; what else the rule needs
(the bar frequency; for "business", the intraday grid) is read from the panel's bar times at
or before t. So ``forecast(panel, [t])`` equals ``forecast(panel cut at t, [t])`` bit for bit.
``future_times`` computes them once per forecast call. ``ForecastSettings.calendar``:

- None ("auto", the default): the exchange the instrument codes name
  (``exchange.infer_exchange``: SH/SZ/BJ codes or .SH/.SZ/.SS suffixes -> XSHG, .HK -> XHKG);
  when they name none, "business", with a warning.
- an exchange-calendars name ("XSHG", "XSHE", "XNYS", "XHKG", "24/7", ...): its sessions.
- a sequence of timestamps, or a file of them (one a line: a Qlib ``calendars/day.txt`` that
  holds the coming sessions): those.
- "business": weekdays, holidays unknown (an explicit fallback; warned about).
- "panel": the old rule, the panel's own bar times after t, extrapolated past its end
  (``BarCalendar``). Look-ahead-prone: only for a panel known to end at t.

Bar frequency at t: intraday when two bars at or before t fall on one date (step: the most
common gap between bars of a date), else daily (the most common gap is at most 4 days), else
coarser: t + k * step, whatever the calendar. Daily bars are stamped on the calendar's dates
with t's time of day. Intraday bars are stamped at their END, on the sessions at the bar step:
XSHG 5-minute bars are 09:35 .. 11:30 and 13:05 .. 15:00 (as the shared SH600977 file); a
session part the step does not divide ends with a shorter bar at its close. For "business"
the intraday grid is the times of day seen at or before t. exchange-calendars works in UTC:
an aware panel gets the times in its zone, a naive one in the exchange's local time.

Range: an exchange calendar that cannot reach t + horizon (exchange-calendars records XSHG's
holidays only to a known year) raises ``CalendarError`` saying what to do; there is no
silent fallback. The same holds for a given list or file that ends too early.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from . import exchange
from .panel import InputError

DAY = pd.Timedelta(days=1)
DAY_NS = 86_400 * 10**9
MAX_STEPS = 256  # distinct bar gaps followed exactly (bar data has a handful)


class CalendarError(InputError):
    """The calendar cannot give the future bar times a forecast needs."""


class BarCalendar:
    """The "panel" rule: a sorted, unique DatetimeIndex of bar times plus the rule to extend
    it (business days for daily bars, the intraday session grid seen in the index)."""

    def __init__(self, times: pd.DatetimeIndex):
        self.times = pd.DatetimeIndex(times).unique().sort_values()
        steps = np.diff(self.times.asi8)
        self.step = pd.Series(np.diff(self.times)).median() if len(steps) else DAY
        self.intraday = self.step < DAY
        if self.intraday:
            tod = self.times - self.times.normalize()
            self.session = tod.unique().sort_values()  # times of day with bars
        self.business = DAY <= self.step <= 4 * DAY  # daily bars (weekend gaps included)

    def future(self, t: pd.Timestamp, n: int) -> pd.DatetimeIndex:
        """The n bar times after t: calendar first, then extrapolated."""
        pos = self.times.searchsorted(t, side="right")
        known = list(self.times[pos : pos + n])
        last = known[-1] if known else t
        while len(known) < n:
            last = self._next(last)
            known.append(last)
        return pd.DatetimeIndex(known)

    def _next(self, ts: pd.Timestamp) -> pd.Timestamp:
        if self.intraday:
            day = ts.normalize()
            later = self.session[self.session > ts - day]
            if len(later):
                return day + later[0]
            return (day + pd.offsets.BDay(1)).normalize() + self.session[0]
        if self.business:
            return ts + pd.offsets.BDay(1)
        return ts + self.step


def _wall(idx: pd.DatetimeIndex) -> np.ndarray:
    """Local wall-clock nanoseconds (naive as they are; aware in their own zone)."""
    idx = idx.tz_localize(None) if idx.tz is not None else idx
    return idx.as_unit("ns").asi8


def _running_mode(values: np.ndarray, mask: np.ndarray, upto: np.ndarray) -> np.ndarray:
    """For each n in ``upto``: the most common of values[:n][mask[:n]] (ties: the smallest;
    none: 0)."""
    vals, counts = np.unique(values[mask], return_counts=True)
    if len(vals) > MAX_STEPS:
        vals = np.sort(vals[np.argsort(-counts, kind="stable")[:MAX_STEPS]])
    best = np.zeros(len(upto), np.int64)
    best_n = np.zeros(len(upto), np.int64)
    for v in vals:  # ascending: a later value must count more to win
        n = np.concatenate([[0], np.cumsum(mask & (values == v))])[upto]
        win = n > best_n
        best[win], best_n[win] = v, n[win]
    return best


def bar_steps(times: pd.DatetimeIndex, decisions: pd.DatetimeIndex):
    """(intraday?, step in ns) at each decision time, from the bar times at or before it."""
    wall = _wall(times)
    pos = times.get_indexer(decisions)  # pairs (j, j + 1) with j < pos lie at or before t
    gaps = np.diff(wall)
    same_day = (wall[1:] // DAY_NS) == (wall[:-1] // DAY_NS)
    intra = _running_mode(gaps, same_day, pos)
    every = _running_mode(gaps, np.ones(len(gaps), bool), pos)
    return intra > 0, np.where(intra > 0, intra, every)


def _is_weekend(times: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(times.day_of_week >= 5)


def _weekend_seen(times: pd.DatetimeIndex, decisions: pd.DatetimeIndex) -> np.ndarray:
    """For each decision time t: whether any bar at or before t fell on a weekend."""
    if len(decisions) == 0:  # no windows (every instrument empty): nothing to compare
        return np.zeros(0, dtype=bool)
    count = np.cumsum(_is_weekend(times))
    pos = times.searchsorted(decisions, side="right") - 1
    return np.where(pos >= 0, count[np.maximum(pos, 0)] > 0, False)


def future_times(setting, times, decisions, horizon: int, instruments) -> tuple[dict, str, dict]:
    """({t: the ``horizon`` bar times after t}, the calendar used, {kind: warning}): a caller
    warns once per kind (the counts in a message change from call to call)."""
    decisions = pd.DatetimeIndex(decisions).unique().sort_values()
    if setting == "panel":
        cal = BarCalendar(times)
        return {t: cal.future(t, horizon) for t in decisions}, "panel", {}
    notes, used = {}, setting
    if setting is None:
        found = exchange.infer_exchange(instruments)
        weekend = _weekend_seen(times, decisions)
        if found is None and weekend.any():  # bars on weekends up to t: a 24/7 market
            out, _, notes = future_times("24/7", times, decisions[weekend], horizon, instruments)
            if (~weekend).any():
                rest, _, more = future_times(
                    None, times[~_is_weekend(times)], decisions[~weekend], horizon, instruments
                )
                out.update(rest)
                notes.update(more)
            return out, "24/7 (auto: weekend bars up to t)", notes
        if found is None:
            setting, used = "business", "business (auto: no exchange inferred)"
            names = sorted(map(str, instruments))[:3]
            notes["auto"] = (
                f"calendar: no exchange could be inferred from the instrument codes (e.g. {names}), "
                "so the future bar times are business days (weekdays; a holiday after t is "
                "stamped as a bar). Pass calendar= an exchange name (e.g. 'XNYS', 'XSHG', '24/7'), "
                "timestamps or a calendar file, or calendar='business' to choose this"
            )
        else:
            setting, used = found, f"{found} (auto)"
    elif setting == "business":
        notes["business"] = (
            "calendar='business': the future bar times are weekdays; an exchange holiday after "
            "t is stamped as a bar. Name the exchange (calendar='XNYS', ...) where there is one"
        )
    elif isinstance(setting, tuple):
        used = f"{len(setting)} timestamps"
    tz = times.tz
    out: dict = {}
    if len(decisions) == 0:
        return out, used, notes
    intraday, step = bar_steps(times, decisions)
    wall = _wall(decisions)
    tod = wall % DAY_NS
    date = wall - tod
    ks = np.arange(1, horizon + 1, dtype=np.int64)
    coarse = ~intraday & (step > 4 * DAY_NS)
    daily = ~intraday & ~coarse
    if coarse.any():
        _put(out, decisions[coarse], wall[coarse, None] + step[coarse, None] * ks, tz)
    source = _Source(setting, times)
    past = times[times <= decisions.max()]
    if daily.any():
        stamps = source.daily(date[daily], decisions[daily], horizon) + tod[daily, None]
        _put(out, decisions[daily], stamps, tz)
        if setting != "business":
            seen = pd.DatetimeIndex(np.unique(_wall(past) // DAY_NS * DAY_NS))
            _stray(notes, seen, pd.DatetimeIndex(source.days), source.name, "session dates")
    for s in np.unique(step[intraday]):
        sel = intraday & (step == s)
        if setting == "business":
            pos = times.get_indexer(decisions[sel])
            _put(out, decisions[sel], _business_grid(_wall(times), pos, wall[sel], horizon), tz)
        else:
            grid = source.grid(int(s), decisions[sel], horizon, tz)
            out.update(_take(grid, decisions[sel], horizon, source.name))
            _stray(notes, past, grid, source.name, f"bar-end times at {pd.Timedelta(int(s))} bars")
    return out, used, notes


def _stray(notes: dict, seen, known: pd.DatetimeIndex, name: str, what: str) -> None:
    """A warning when bars at or before the decision times are not on the calendar."""
    if not len(known):
        return
    seen = seen[(seen >= known[0]) & (seen <= known[-1])]
    off = seen[~seen.isin(known)]
    if not len(off):
        return
    if what == "session dates":
        hint = "Is it the instruments' exchange? Pass calendar= the right one, or the bar dates."
    else:
        hint = (
            "Bars stamped at their start, or naive times in another zone than the exchange's? "
            "Stamp bars at their end in the exchange's local time (or make them timezone-aware), "
            "or pass calendar= the bar times."
        )
    notes[f"off {what}"] = (
        f"calendar {name}: {len(off)} of {len(seen)} bar times of the panel are not among its "
        f"{what} (first: {off[0]}); the future bar times follow the calendar. {hint}"
    )


def warn_once(notes: dict, warned: set, stacklevel: int = 3) -> None:
    """Warn each kind of note that is not in ``warned`` yet (stack: the forecast's caller)."""
    for kind, note in notes.items():
        if kind not in warned:
            warned.add(kind)
            warnings.warn(note, stacklevel=stacklevel)


def _put(out: dict, decisions, wall_ns: np.ndarray, tz) -> None:
    for t, row in zip(decisions, wall_ns):
        idx = pd.DatetimeIndex(row.astype("datetime64[ns]"))
        if tz is not None:
            idx = idx.tz_localize(
                tz, ambiguous=np.ones(len(idx), bool), nonexistent="shift_forward"
            )
        out[t] = idx


def _take(grid: pd.DatetimeIndex, decisions, horizon: int, name: str) -> dict:
    pos = grid.searchsorted(decisions, side="right")
    short = pos + horizon > len(grid)
    if short.any():
        raise _short(name, grid[-1] if len(grid) else None, decisions[short][0], horizon)
    return {t: grid[p : p + horizon] for t, p in zip(decisions, pos)}


def _short(name: str, last, t, horizon: int) -> CalendarError:
    if name in ("timestamps", "file"):
        fix = "extend it with the coming bar times"
    else:
        fix = (
            "upgrade exchange-calendars (its holidays reach further each year), or pass "
            "calendar= the published sessions (timestamps or a calendar file), or "
            "calendar='business' (weekdays; holidays unknown)"
        )
    if last is not None and pd.Timestamp(last) == pd.Timestamp(last).normalize():
        last = f"{pd.Timestamp(last):%Y-%m-%d}"
    return CalendarError(
        f"calendar {name}: it knows bar times up to {last}, but the forecast at {t} needs "
        f"{horizon} bar(s) after it; {fix}"
    )


def _business_grid(times_wall, pos, wall, horizon: int) -> np.ndarray:
    """Intraday "business": the times of day seen at or before t, on weekdays after t's date."""
    tods = times_wall % DAY_NS
    uniq, first = np.unique(tods, return_index=True)
    order = np.argsort(first, kind="stable")
    seen = np.searchsorted(first[order], pos, side="right")  # times of day seen up to t
    out = np.empty((len(wall), horizon), np.int64)
    for n in np.unique(seen):
        sel = seen == n
        grid = np.sort(uniq[order][:n])
        tod = wall[sel] % DAY_NS
        idx = np.searchsorted(grid, tod)[:, None] + np.arange(1, horizon + 1)
        shift, tod_next = idx // len(grid), grid[idx % len(grid)]
        day = ((wall[sel] - tod) // DAY_NS).astype("datetime64[D]")[:, None]
        moved = np.busday_offset(day, shift, roll="backward")
        day = np.where(shift > 0, moved, np.broadcast_to(day, shift.shape))
        out[sel] = day.astype("datetime64[ns]").astype(np.int64) + tod_next
    return out


class _Source:
    """The dates and intraday grids of one calendar setting (not "panel")."""

    def __init__(self, setting, times: pd.DatetimeIndex):
        self.setting = setting
        self.times = None
        if isinstance(setting, tuple):
            self.name, self.times = "timestamps", pd.DatetimeIndex(list(setting))
        elif setting not in ("business", None) and exchange.exchange_name(setting) is None:
            st = os.stat(setting)
            self.name = "file"
            self.times = exchange.read_calendar_file(setting, st.st_mtime_ns, st.st_size)
        else:
            self.name = setting

    def _years(self, decisions, horizon: int) -> tuple[int, int]:
        last = decisions.max().tz_localize(None) + pd.Timedelta(days=int(horizon * 1.6) + 31)
        return decisions.min().year, last.year

    def daily(self, date: np.ndarray, decisions, horizon: int) -> np.ndarray:
        """(decisions, horizon) wall-clock ns of the session dates after each date."""
        if self.setting == "business":
            day = (date // DAY_NS).astype("datetime64[D]")[:, None]
            moved = np.busday_offset(day, np.arange(1, horizon + 1), roll="backward")
            return moved.astype("datetime64[ns]").astype(np.int64)
        if self.times is not None:
            days = np.unique(_wall(self.times) // DAY_NS * DAY_NS)
            last = pd.Timestamp(days[-1])
        else:
            idx = exchange.sessions(self.setting, *self._years(decisions, horizon))
            days = _wall(idx)
            last = pd.Timestamp(days[-1]) if len(days) else None
        self.days = days
        pos = np.searchsorted(days, date, side="right")
        short = pos + horizon > len(days)
        if short.any():
            raise _short(self.name, last, decisions[short][0], horizon)
        return days[pos[:, None] + np.arange(horizon)]

    def grid(self, step_ns: int, decisions, horizon: int, tz) -> pd.DatetimeIndex:
        """The bar times of the calendar, in the panel's convention (aware in its zone or
        naive local time)."""
        if self.times is not None:
            g = self.times
            if tz is not None:
                g = (
                    g.tz_convert(tz)
                    if g.tz is not None
                    else g.tz_localize(tz, ambiguous=np.ones(len(g), bool))
                )
            return g.tz_localize(None) if tz is None and g.tz is not None else g
        g = exchange.intraday_grid(self.setting, *self._years(decisions, horizon), step_ns)
        if tz is not None:
            return g.tz_convert(tz)
        return g.tz_convert(exchange.timezone(self.setting)).tz_localize(None)
