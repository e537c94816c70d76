"""Future bar timestamps for the time features of a forecast.

Taken from the panel's own calendar where it reaches far enough (an exchange calendar is
known in advance, and only the dates are used, never the bars), extrapolated from the bar
frequency beyond it: business days for daily bars, the observed intraday session grid
(times of day seen in the calendar, on business days) for intraday bars, the median step
for anything coarser than daily.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)


class BarCalendar:
    """A sorted, unique DatetimeIndex of bar times plus the rule to extend it."""

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
