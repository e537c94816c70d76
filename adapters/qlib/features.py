"""KronosAlpha158: Qlib's Alpha158 joined with Kronos features, for LightGBM and friends.

``dataset.kwargs.handler``::

    class: KronosAlpha158
    module_path: kronos_alpha.adapters.qlib
    kwargs:
        instruments: csi300
        start_time: 2021-01-04
        end_time: 2022-12-30
        fit_start_time: 2021-01-04
        fit_end_time: 2021-12-31
        kronos: {model: kronos_alpha/assets/default, lookback: 90, sample_count: 5, every: 5}
        infer_processors: [...]      # as for Alpha158: they see the Kronos columns too
        learn_processors: [...]

The features (``kronos_alpha.strategies.kronos_features``) join Alpha158's in the handler's
``feature`` column group, so ``DatasetH``, ``LGBModel`` and every processor with
``fields_group: feature`` (RobustZScoreNorm, Fillna, ...) treat them as Alpha158's:
``KRONOS_PRED_RETURN``, ``KRONOS_RET_Q10..``, ``KRONOS_RET_STD``, ``KRONOS_PROB_UP``,
``KRONOS_PRED_VOL``, ``KRONOS_PATH_MEAN/MIN/MAX`` and, with ``components: k``,
``KRONOS_PC1..k`` from a PCA of the embedding fitted on rows with datetime <=
``fit_end_time`` only (``handler.kronos_pca``, plain data).

No look-ahead: the features of (t, instrument) come from a forecast at t (or, with
``every: n``, at the latest of every n-th date <= t, so at most n - 1 days old) reading bars
<= t only; each instrument's bars are read from its full history (also before it joined
the market), as KronosHandler does, and cut after its last row.

The ``kronos`` mapping: ``model``, ``tokenizer`` (as for KronosModel; None: the bundled
default), ``every`` (default 1: a forecast on every date), ``components`` (default 0) and
any ForecastSettings field (lookback, horizon (default 2, as Qlib's label), sample_count,
seed, cache_dir, batch_size, progress, ...).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from kronos_alpha.strategies.alpha158 import Alpha158Checked
from kronos_alpha.strategies.kronos_features import kronos_features
from qlib.data.dataset.loader import DataLoader
from qlib.log import TimeInspector, get_module_logger

from kronos_alpha.inference.forecaster import Forecaster
from kronos_alpha.inference.panel import PRICE_COLS, traded_mask
from kronos_alpha.inference.settings import ForecastSettings, SettingsError, check_integer

from .handler import KronosHandler, raw_bars
from .model import QLIB_HORIZON, auto_calendar

log = get_module_logger("kronos_alpha")

OWN_KEYS = ("model", "tokenizer", "every", "components")
HISTORY_FACTOR = 3  # bars of history loaded before start_time: this many lookbacks


def kronos_options(kronos) -> dict:
    """The checked ``kronos`` mapping: model, tokenizer, every, components, settings."""
    if kronos is None:
        kronos = {}
    if not isinstance(kronos, dict):
        raise SettingsError(f"kronos must be a mapping, got {type(kronos).__name__}")
    fields = {k: v for k, v in kronos.items() if k not in OWN_KEYS}
    unknown = sorted(set(fields) - set(ForecastSettings.names()))
    if unknown:
        raise SettingsError(
            f"KronosAlpha158's kronos mapping has no key {unknown[0]!r}; it takes "
            f"{list(OWN_KEYS)} and the ForecastSettings fields {list(ForecastSettings.names())}"
        )
    every, components = kronos.get("every", 1), kronos.get("components", 0)
    check_integer("kronos.every", every, 1)
    check_integer("kronos.components", components, 0)
    settings = ForecastSettings.build(ForecastSettings(horizon=QLIB_HORIZON), **fields)
    return {
        "model": kronos.get("model"),
        "tokenizer": kronos.get("tokenizer"),
        "every": int(every),
        "components": int(components),
        "settings": settings,
    }


def source_dates(index: pd.MultiIndex, every: int) -> pd.DatetimeIndex:
    """For each row (t, instrument): the decision date its features come from, the latest of
    every ``every``-th date of the rows' dates (counted from the first) that is <= t."""
    t = index.get_level_values("datetime")
    dates = pd.DatetimeIndex(t.unique()).sort_values()
    pos = dates.get_indexer(t)
    return dates[(pos // every) * every]


def trim_history(bars: pd.DataFrame, wanted: pd.MultiIndex, keep: int) -> pd.DataFrame:
    """Each instrument's bars that a forecast at one of its ``wanted`` (date, instrument)
    rows reads: up to its last wanted date, and from its ``keep``-th traded bar before its
    first wanted date on (a window is at most ``keep`` traded bars, so no window changes;
    forecasts at dates before that have too short a history and are skipped cheaply)."""
    span = (
        pd.Series(wanted.get_level_values("datetime"), index=wanted.get_level_values("instrument"))
        .groupby(level=0)
        .agg(["min", "max"])
    )
    parts = []
    for code, g in bars.groupby(level="instrument", sort=False):
        if code not in span.index:
            continue
        first, last = span.loc[code, "min"], span.loc[code, "max"]
        t = g.index.get_level_values("datetime")
        g = g[t <= last]
        traded, _ = traded_mask(g.droplevel("instrument"), f"instrument {code!r}")
        before = np.flatnonzero(traded & (g.index.get_level_values("datetime") <= first))
        parts.append(g.iloc[before[-keep] :] if len(before) >= keep else g)
    return pd.concat(parts).sort_index() if parts else bars.iloc[:0]


def history_start(start_time, bars_before: int, freq: str):
    """The calendar date ``bars_before`` bars before ``start_time`` (or the first)."""
    from qlib.data import D

    if start_time is None:
        return None
    cal = D.calendar(end_time=start_time, freq=freq)
    return cal[max(0, len(cal) - 1 - bars_before)] if len(cal) else start_time


class KronosFeatureLoader(DataLoader):
    """Alpha158's loader, then the Kronos feature columns joined into its ``feature`` group.
    Keeps the fitted PCA (``pca``) and the forecaster's reports (``report``)."""

    def __init__(self, inner: DataLoader, kronos: dict, fit_end_time=None, freq="day"):
        self.inner, self.kronos, self.freq = inner, kronos, freq
        self.fit_end_time = fit_end_time
        self.pca, self.report = None, None

    def __getstate__(self) -> dict:  # the forecaster (torch modules) is rebuilt on use
        return {k: v for k, v in vars(self).items() if k != "_forecaster"}

    def forecaster(self) -> Forecaster:
        fc = vars(self).get("_forecaster")
        if fc is None:
            k = self.kronos
            fc = Forecaster(k["model"], k["tokenizer"], settings=k["settings"])
            self._forecaster = fc
        return fc

    def load(self, instruments, start_time=None, end_time=None) -> pd.DataFrame:
        df = self.inner.load(instruments, start_time, end_time)
        if df.empty:
            return df
        with TimeInspector.logt("Kronos features"):
            kronos = self.features(df.index, start_time, end_time)
        groups = {g: df[g] for g in dict.fromkeys(df.columns.get_level_values(0)) if g != "feature"}
        feature = pd.concat([df["feature"], kronos], axis=1)
        return pd.concat({"feature": feature, **groups}, axis=1)

    def features(self, index: pd.MultiIndex, start_time, end_time) -> pd.DataFrame:
        """The Kronos columns for the rows ``index`` (datetime, instrument)."""
        k, clock = self.kronos, time.perf_counter()
        components = k["components"]
        if components and self.fit_end_time is None:
            raise SettingsError(
                "KronosAlpha158 with kronos.components > 0 needs fit_end_time: the embedding's "
                "PCA is fitted on rows up to it only"
            )
        fc = self.forecaster()
        lookback = fc.settings.lookback
        codes = sorted(index.get_level_values("instrument").unique())
        src = source_dates(index, k["every"])
        wanted = pd.MultiIndex.from_arrays(
            [src, index.get_level_values("instrument")], names=["datetime", "instrument"]
        )
        first = history_start(start_time, HISTORY_FACTOR * lookback, self.freq)
        handler = KronosHandler(instruments=codes, start_time=first, end_time=end_time,
                                freq=self.freq, full_history=False, learn_processors=[])  # fmt: skip
        bars = raw_bars(handler)
        bars = bars[~bars[PRICE_COLS].isna().all(axis=1)]  # Qlib's NaN rows: no bar that day
        bars = trim_history(bars, wanted.unique(), lookback)
        times = pd.DatetimeIndex(bars.index.get_level_values("datetime").unique())
        dates = pd.DatetimeIndex(src.unique()).intersection(times).sort_values()
        fc = fc.with_settings(auto_calendar(fc.settings, codes))
        fit_end = None if self.fit_end_time is None else pd.Timestamp(self.fit_end_time)
        out = kronos_features(fc, bars, dates, components=components, fit_end=fit_end)
        self.pca = out.pca
        frame = out.frame.reindex(wanted)
        frame.index = index
        self.report = {
            "rows": len(index),
            "decision_dates": len(dates),
            "every": k["every"],
            "instruments": len(codes),
            "rows_without_features": int(frame.iloc[:, 0].isna().sum()),
            "seconds": round(time.perf_counter() - clock, 1),
            **out.reports,
        }
        log.info(
            "KronosAlpha158: %d Kronos feature columns for %d rows (%d decision dates, every %d, "
            "%d instruments), %d rows without (short history, suspended) in %.1f s; forecasts "
            "computed %s, from cache %s",
            frame.shape[1], len(index), len(dates), k["every"], len(codes),
            self.report["rows_without_features"], self.report["seconds"],
            out.reports["forecast"].get("computed"), out.reports["forecast"].get("from_cache"),
        )  # fmt: skip
        return frame


class KronosAlpha158(Alpha158Checked):
    """Alpha158 (``Alpha158Checked``: VWAP0 left out when the data has no $vwap) plus Kronos
    features in the ``feature`` group (module docstring). Every Alpha158 argument works as
    there; ``kronos`` is one mapping of the Kronos options. ``kronos_pca`` and
    ``kronos_report`` hold what the last load fitted and counted."""

    def __init__(
        self,
        instruments="csi300",
        start_time=None,
        end_time=None,
        freq="day",
        fit_start_time=None,
        fit_end_time=None,
        kronos: dict | None = None,
        init_data: bool = True,
        **kwargs,
    ):
        options = kronos_options(kronos)
        super().__init__(
            instruments=instruments, start_time=start_time, end_time=end_time, freq=freq,
            fit_start_time=fit_start_time, fit_end_time=fit_end_time, init_data=False, **kwargs,
        )  # fmt: skip
        self.data_loader = KronosFeatureLoader(self.data_loader, options, fit_end_time, freq)
        if init_data:
            with TimeInspector.logt("Init data"):
                self.setup_data()

    @property
    def kronos_pca(self):
        return self.data_loader.pca

    @property
    def kronos_report(self):
        return self.data_loader.report
