"""Kronos as a native backtrader indicator.

``KronosIndicator`` (alias ``Kronos``) is a thin shell over ``kronos_alpha.Forecaster``: it turns
the feeds' bars into the forecaster's panel and writes the forecast table back into lines.
Windowing, normalisation, sampling and the missing-bar policy are all the forecaster's.

Lines: ``pred_return`` (mean predicted close-to-close return over ``horizon`` bars), ``lower``
and ``upper`` (the ``quantiles`` of the sampled returns), ``prob_up`` (share of sampled paths
ending above the current close), and the forecast table's features of the same names
(``kronos_alpha.strategies.kronos_features``' KRONOS_* columns): ``ret_std`` (the horizon
returns' spread), ``pred_vol`` (per-bar volatility of the sampled paths), ``path_mean``,
``path_min``, ``path_max`` (the mean over paths of each path's mean, lowest and highest close
over the current close, minus 1). Usage::

    fc = Forecaster(model="kronos-small", cache_dir="~/.cache/kronos")
    class S(bt.Strategy):
        def __init__(self):
            self.k = {d: Kronos(d, forecaster=fc, lookback=64, horizon=5) for d in self.datas}
        def next(self):
            for d, k in self.k.items():
                if k.path_min[0] > -0.02 and k.prob_up[0] > 0.6: ...

Plot: pred_return and its band (filled) in one subplot of returns, as before the features
came; the other lines are not drawn (prob_up is 0..1, ret_std and pred_vol are spreads, and
the path statistics crowd a one-row subplot). Switch one on per indicator, styled already
(path_min / path_max dotted red / green, path_mean dash-dot)::

    k = Kronos(d, forecaster=fc)
    k.plotlines.path_min._plotskip = k.plotlines.path_max._plotskip = False

Calibrated forecasters. ``forecaster=fc`` after ``fc.calibrate(panel, past_dates)`` (or
``fc.set_calibrator(path)``): the indicator's copy keeps the calibrator, so ``lower``,
``upper``, ``prob_up`` and ``ret_std`` are the calibrated distribution's (``pred_return`` and
the path statistics are the samples', calibration leaves them alone). The calibrator is fitted
for one horizon: a ``horizon`` override raises ``CalibrationError`` when the indicator is made.
Bars before the calibration's last outcome bar are in-sample, and the forecaster warns.

Modes. In ``runonce`` mode (backtrader's default) the first ``once()`` of a strategy forecasts
every bar of every data that has a Kronos indicator with the same settings in ONE batched
forecaster call; the others read that table. The table is also kept (a few, least recently
used) keyed by the settings and the bars' content, so optimisation runs over the same feeds
reuse it. In ``next`` mode (``runonce=False``, live feeds, replay) the first indicator to run
on a bar forecasts the current bar of every data in one call, through the forecaster's disk
cache (``cache_dir``); a re-sent bar (same time and values) is answered from memory, so the
indicator is idempotent, and a replayed bar whose values changed is recomputed. Both modes
give identical values (tested): each forecast uses only bars at or before its bar, and its
future bar times (the forecast steps' time features) come from the settings' ``calendar``,
known at that bar (by default the exchange of the data names: SH600000 -> XSHG; see
``kronos_alpha.inference.calendar``), never from the feed's later bars; so a live feed, which
holds only its past, gets the same forecasts as a backtest over the whole history.

Warm-up and gaps. The indicator's minimum period is ``lookback`` (clipped to the model's
context): the first ``lookback - 1`` bars are NaN. A bar the forecaster skips (a suspended bar
with volume 0, see ``kronos_alpha.inference.forecaster``) is NaN too. Bars are checked by the
input boundary (``kronos_alpha.inference.feeds.check_feed_bars``, as vectorbt's columns are): a
NaN price between the feed's first and last priced bar raises ``InputError`` naming the data,
the price and the bar, unless ``nan_bars="skip"`` hands it to the forecaster's suspended-bar
policy; all-NaN bars before the first priced bar (not yet listed) or after the last are NaN
lines. A feed without volume (all NaN or 0) is forecast from prices only, with a warning.
Daily and longer bars are stamped with their date (backtrader stamps them at the session end);
intraday bars keep their time.

backtrader 1.9.78 pitfalls:
- Headless plotting: ``matplotlib.use("Agg")`` and ``import matplotlib.pyplot`` before
  ``cerebro.plot(iplot=False)``; save with ``figs[0][0].savefig(path)``.
- ``bindlines`` fails on ``collections.Iterable`` under Python 3.10+; this indicator does not
  use it (compose lines with ``self.l.x = ...`` instead if you subclass).
- ``cerebro.optstrategy`` with ``maxcpus > 1`` forks; a fork after torch ran its thread pool
  can deadlock. Call ``torch.set_num_threads(1)`` before running, use ``maxcpus=1``, or
  precompute the forecasts (``cache_dir``) in the parent first.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd

from kronos_alpha.inference.feeds import check_feed_bars
from kronos_alpha.inference.forecaster import Forecaster
from kronos_alpha.inference.panel import PRICE_COLS, VOLUME_COL, InputError
from kronos_alpha.inference.settings import ForecastSettings

from .common import (
    FEATURES,
    band_columns,
    band_quantiles,
    base_forecaster,
    check_calibration,
    start_settings,
    with_band,
)

FEED_LINES = (*PRICE_COLS, VOLUME_COL)  # the lines a feed needs: Kronos reads whole bars
LINES = ("pred_return", "lower", "upper", "prob_up", *FEATURES)  # the first four: as before
_ORDINAL_1970 = 719163  # backtrader's float dates count days from 0001-01-01 (ordinal 1)
_TABLES: OrderedDict = OrderedDict()  # (settings, bars digest) -> forecast table (a small LRU)
_TABLES_KEPT = 8
OVERRIDES = ("lookback", "horizon", "sample_count", "cache_dir", "calendar")  # None: forecaster's


def bar_times(data) -> pd.DatetimeIndex:
    """Every bar time the feed holds, as the forecaster's panel stamps them."""
    num = np.asarray(data.datetime.array, dtype=np.float64)
    if getattr(data, "_tz", None) is not None:
        times = pd.DatetimeIndex([data.num2date(x) for x in num])
    else:
        ns = np.round((num - _ORDINAL_1970) * 86_400e6).astype(np.int64) * 1000  # microseconds
        times = pd.DatetimeIndex(ns.astype("datetime64[ns]"))
    if data._timeframe >= bt.TimeFrame.Days:
        return times.normalize()  # backtrader puts daily bars at the session end
    return times.round("ms")


def _data_name(strategy, data) -> str:
    if getattr(data, "_name", ""):
        return str(data._name)
    for i, d in enumerate(getattr(strategy, "datas", ())):
        if d is data:
            return f"data{i}"
    return f"data@{id(data):x}"


def _owner_strategy(ind):
    owner = getattr(ind, "_owner", None)
    while owner is not None and not isinstance(owner, bt.Strategy):
        owner = getattr(owner, "_owner", None)
    return owner


class _Group:
    """The Kronos indicators of one strategy sharing one forecaster configuration."""

    def __init__(self, forecaster: Forecaster, quantiles, nan_bars: str, strategy):
        self.forecaster = forecaster
        self.columns = band_columns(quantiles, LINES)
        self.nan_bars = nan_bars
        self.strategy = strategy
        self.members: list = []  # (data, name)
        self.table = None
        self.table_members: tuple = ()
        self.live: dict = {}  # name -> (bar key, values)
        self.warned: set = set()

    def add(self, data) -> str:
        for d, name in self.members:
            if d is data:
                return name
        name = _data_name(self.strategy, data)
        if any(n == name for _, n in self.members):
            raise InputError(f"two datas are both named {name!r}; name them with adddata(name=...)")
        self.members.append((data, name))
        return name

    # -- framework bars -> the forecaster's panel ---------------------------------------------
    def frame(self, data, name: str, n_past: int) -> pd.DataFrame:
        """The first ``n_past`` bars with values, then the later bar times the feed holds (NaN rows:
        no prices; only ``calendar="panel"`` reads their times)."""
        times = bar_times(data)
        cols = {c: np.asarray(getattr(data.lines, c).array, dtype=np.float64) for c in FEED_LINES}
        df = pd.DataFrame(cols, index=times)
        df.index.name = "datetime"
        warn = name not in self.warned  # next mode looks at every bar: warn once per data
        if check_feed_bars(df.iloc[:n_past], name, self.nan_bars, "data", warn, 4) is not None:
            self.warned.add(name)
        if n_past < len(df):
            df.iloc[n_past:] = np.nan
        return df

    # -- runonce ------------------------------------------------------------------------------
    def once_values(self, data, name: str) -> np.ndarray:
        """(bars, lines) array of every bar of ``data``, from one call for the whole group."""
        members = tuple(id(d) for d, _ in self.members)
        if self.table is None or self.table_members != members:
            panel = {n: self.frame(d, n, d.buflen()) for d, n in self.members}
            self.table = self._cached_forecast(panel)
            self.table_members = members
        return self._rows(self.table, name, bar_times(data))

    def _cached_forecast(self, panel: dict) -> pd.DataFrame:
        fc = self.forecaster
        if fc.seed is None:  # fresh samples every run: nothing to reuse
            return fc.forecast(panel)
        h = hashlib.sha256(fc.weights_digest().encode())
        h.update(repr(fc.settings).encode())
        cal = getattr(fc, "calibrator_", None)  # calibrated and raw tables of one panel differ
        h.update(b"raw" if cal is None else json.dumps(cal.to_dict(), sort_keys=True).encode())
        for name, df in panel.items():
            h.update(name.encode() + df.index.asi8.tobytes() + df.to_numpy().tobytes())
        key = h.hexdigest()
        if key not in _TABLES:
            _TABLES[key] = fc.forecast(panel)
            while len(_TABLES) > _TABLES_KEPT:
                _TABLES.popitem(last=False)
        _TABLES.move_to_end(key)
        return _TABLES[key]

    def _rows(self, table: pd.DataFrame, name: str, times) -> np.ndarray:
        names = table.index.get_level_values("instrument")
        sub = table[names == name].droplevel("instrument")
        return sub.reindex(times)[self.columns].to_numpy(dtype=np.float64)

    # -- next (live, replay) ------------------------------------------------------------------
    @staticmethod
    def bar_key(data) -> bytes:
        now = [len(data), data.datetime[0], *(getattr(data.lines, c)[0] for c in FEED_LINES)]
        return np.asarray(now, dtype=np.float64).tobytes()

    def next_values(self, data, name: str) -> np.ndarray:
        key = self.bar_key(data)
        hit = self.live.get(name)
        if hit is None or hit[0] != key:
            self._update_live()
        return self.live[name][1]

    def _update_live(self) -> None:
        """Forecast the current bar of every member whose bar is new or changed: one call per
        distinct bar time (one call when the feeds are in step)."""
        by_time: dict = {}
        for d, n in self.members:
            if len(d) == 0:
                continue
            key = self.bar_key(d)
            if self.live.get(n, (None,))[0] != key:
                by_time.setdefault(bar_times(d)[len(d) - 1], []).append((d, n, key))
        for t, stale in by_time.items():
            panel = {n: self.frame(d, n, len(d)) for d, n, _ in stale}
            table = self.forecaster.forecast(panel, dates=[t])
            for _d, n, key in stale:
                self.live[n] = (key, self._rows(table, n, pd.DatetimeIndex([t]))[0])


def indicator_settings(p, base: Forecaster) -> ForecastSettings:
    """The forecaster's settings (or ``settings=``) with this indicator's overrides: one
    ``replace``, validated there. The table also holds the band's quantiles."""
    changes = {k: getattr(p, k) for k in OVERRIDES if getattr(p, k) is not None}
    if p.seed != "forecaster":
        changes["seed"] = p.seed
    settings = start_settings(base, p.settings).replace(**changes)
    return with_band(settings, band_quantiles(p.quantiles))


def resolve_forecaster(p) -> tuple[Forecaster, Forecaster]:
    """(the user's or shared forecaster, a copy with this indicator's settings sharing its model)."""
    base = base_forecaster(p.forecaster, p.model, p.tokenizer, "KronosIndicator")
    settings = indicator_settings(p, base)
    check_calibration(base, settings, "KronosIndicator")
    return base, base.load().with_settings(settings)  # keeps a calibrator


class KronosIndicator(bt.Indicator):
    """Kronos forecast of the return over the next ``horizon`` bars, per bar, without look-ahead.

    Params: ``forecaster`` (a ``kronos_alpha.Forecaster``) or ``model`` (a zoo name, Hub id or
    folder; ``tokenizer`` when the model names none). ``settings``: a ``ForecastSettings`` to
    use instead of the forecaster's, or a mapping of changes to them. Overrides on top, each
    None (the default) for the forecaster's: ``lookback``, ``horizon``, ``sample_count``,
    ``cache_dir`` (the forecaster's disk cache), ``calendar`` (where the future bar times come
    from: an exchange name such as "XNYS", timestamps, ...; see ForecastSettings); ``seed`` defaults to the string
    ``"forecaster"`` instead, because None is a seed value (it samples afresh and disables
    every cache). All of them become one ``ForecastSettings.replace``, validated there.
    ``quantiles`` (lower, upper) are the band lines' levels; their default (0.1, 0.9) is the
    indicator's own, since the forecaster may report any number of quantiles and the two lines
    need two (the table holds both sets). ``nan_bars``: "raise" or "skip" (module docstring).
    Lines: ``pred_return``, ``lower``, ``upper``, ``prob_up``, ``ret_std``, ``pred_vol``,
    ``path_mean``, ``path_min``, ``path_max`` (the forecast table's columns of those names; a
    calibrated forecaster's band, prob_up and ret_std are calibrated). See the module docstring
    for the modes, warm-up, calibration, plotting and pitfalls.
    """

    alias = ("Kronos",)
    lines = LINES
    params = (
        ("forecaster", None),
        ("model", None),
        ("tokenizer", None),
        ("settings", None),
        ("lookback", None),
        ("horizon", None),
        ("sample_count", None),
        ("seed", "forecaster"),
        ("quantiles", (0.1, 0.9)),
        ("cache_dir", None),
        ("calendar", None),
        ("nan_bars", "raise"),
    )
    plotinfo = dict(subplot=True, plotname="Kronos", plothlines=[0.0], plotymargin=0.1)
    plotlines = dict(
        pred_return=dict(color="tab:blue", _name="pred_return"),
        lower=dict(color="grey", ls="--", _name="lower"),
        upper=dict(color="grey", ls="--", _name="upper", _fill_gt=("lower", ("grey", 0.15))),
        prob_up=dict(_plotskip=True),  # 0..1, another scale than returns: read it, don't plot it
        # The features: not drawn (a one-row subplot with five more lines and legend entries
        # is unreadable; spreads are on another scale), styled for when they are switched on.
        ret_std=dict(_plotskip=True),
        pred_vol=dict(_plotskip=True),
        path_mean=dict(_plotskip=True, color="tab:purple", ls="-.", lw=0.9),
        path_min=dict(_plotskip=True, color="tab:red", ls=":", lw=0.9),
        path_max=dict(_plotskip=True, color="tab:green", ls=":", lw=0.9),
    )

    def __init__(self):
        lines = getattr(self.data, "lines", None)
        missing = [c for c in FEED_LINES if not hasattr(lines, c)]
        if missing:
            raise InputError(
                f"KronosIndicator needs a data feed with {list(FEED_LINES)} lines (Kronos reads whole "
                f"bars); got {type(self.data).__name__} without {missing}"
            )
        base, self.forecaster = resolve_forecaster(self.p)
        self.lookback_ = min(int(self.forecaster.lookback), self.forecaster.max_context_)
        strategy = _owner_strategy(self)
        registry = {} if strategy is None else vars(strategy).setdefault("_kronos_groups", {})
        band = band_quantiles(self.p.quantiles)
        key = (id(base), self.p.nan_bars, band, self.forecaster.settings)
        if key not in registry:
            registry[key] = _Group(self.forecaster, band, self.p.nan_bars, strategy)
        self.group = registry[key]
        self.name = self.group.add(self.data)
        self.addminperiod(self.lookback_)

    def _plotlabel(self):
        src = self.p.model if self.p.forecaster is None else self.p.forecaster.model
        if isinstance(src, (str, Path)):
            path = Path(str(src))  # a Hub-format folder is often .../<name>/model
            model = path.parent.name if path.name == "model" and path.parent.name else path.name
        else:
            model = type(src).__name__
        fc = self.forecaster
        return [model, f"lb={fc.lookback}", f"h={fc.horizon}", f"n={fc.sample_count}"]

    def once(self, start, end):
        values = self.group.once_values(self.data, self.name)
        for j, line in enumerate(self.lines):
            dst = line.array
            for i in range(start, min(end, len(values))):
                dst[i] = values[i, j]

    def next(self):
        values = self.group.next_values(self.data, self.name)
        for j, line in enumerate(self.lines):
            line[0] = values[j]


Kronos = KronosIndicator

__all__ = ["Kronos", "KronosIndicator", "bar_times"]
