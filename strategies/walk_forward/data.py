"""The data of a walk-forward run: panel, benchmark, calendar and point-in-time membership."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kronos_alpha.inference.panel import InputError

from ..panel import init_qlib, load_panel


class Data:
    """Panel (datetime, instrument), benchmark returns, calendar and point-in-time membership."""

    def __init__(self, cfg: dict):
        d = cfg["data"]
        init_qlib(d["provider_uri"], d["region"])
        from qlib.data import D

        pool = D.instruments(d["market"])
        oos = D.list_instruments(pool, start_time=d["start"], end_time=d["end"], as_list=True)
        if not oos:
            raise InputError(f"market {d['market']!r} has no members in {d['start']}..{d['end']}")
        # membership spans over the whole loaded history: training rows are members too
        spans = D.list_instruments(
            pool, start_time=d["history_start"], end_time=d["end"], as_list=False
        )
        names = sorted(oos)
        if d["max_instruments"] and d["max_instruments"] < len(names):
            rng = np.random.default_rng(cfg["seed"])
            names = sorted(rng.choice(names, int(d["max_instruments"]), replace=False).tolist())
        self.names = names
        self.calendar = pd.DatetimeIndex(
            D.calendar(start_time=d["history_start"], end_time=d["end"])
        )
        # a list (not the market) loads every instrument's whole history, members or not
        self.panel, self.benchmark = load_panel(
            d["provider_uri"], names, d["history_start"], d["end"], d["benchmark"], d["region"]
        )
        members = pd.DataFrame(False, index=self.calendar, columns=names)
        for name in names:
            for s, e in spans[name]:
                members.loc[pd.Timestamp(s) : pd.Timestamp(e), name] = True
        self.members = members
        self.derive()

    @classmethod
    def from_frames(cls, frames: dict, members: pd.DataFrame | None = None) -> Data:
        """A Data from in-memory bars {instrument: frame by time} (tests, notebooks), without
        Qlib: every instrument is a member throughout unless ``members`` says otherwise."""
        self = cls.__new__(cls)
        self.panel = pd.concat(frames, names=["instrument", "datetime"]).swaplevel().sort_index()
        self.names = sorted(frames)
        times = self.panel.index.get_level_values("datetime").unique()
        self.calendar = pd.DatetimeIndex(times).sort_values()
        self.benchmark = None
        if members is None:
            members = pd.DataFrame(True, index=self.calendar, columns=self.names)
        self.members = members
        self.derive()
        return self

    def derive(self) -> None:
        """The wide close and traded frames on the calendar."""
        self.close = self.panel["close"].unstack("instrument").reindex(self.calendar)
        volume = self.panel["volume"].unstack("instrument").reindex(self.calendar)
        self.traded = volume.fillna(0) > 0

    def eligible(self, dates) -> pd.MultiIndex:
        """(t, instrument) pairs of members with a traded bar at t."""
        ok = (
            self.members & self.traded.reindex(columns=self.members.columns, fill_value=False)
        ).loc[dates]
        s = ok.stack()
        s = s[s]
        s.index.names = ["datetime", "instrument"]
        return s.index

    def cut(self, end, start=None, instruments=None) -> pd.DataFrame:
        """Panel rows with start <= datetime <= end (and only ``instruments``)."""
        t = self.panel.index.get_level_values("datetime")
        keep = t <= pd.Timestamp(end)
        if start is not None:
            keep &= t >= pd.Timestamp(start)
        if instruments is not None:
            keep &= self.panel.index.get_level_values("instrument").isin(list(instruments))
        return self.panel[keep]
