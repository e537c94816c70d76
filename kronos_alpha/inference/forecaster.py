"""Forecaster: a panel of OHLCV bars -> a table of predicted returns per (decision time, instrument).

The one inference path for the Qlib, backtrader and vectorbt adapters and the strategies.
A forecast is followed through four files: ``panel`` (bars checked at the input boundary),
``data`` (-> a ``Series`` per instrument, a ``Window`` per forecast; ``sample_bars``: normalise,
sample, map back), this one (batches, cache, shards, the summary) and ``generation`` (the
token engine).

Policies (all counted in ``Forecaster.report``):

- No look-ahead. The window for decision time t is the last ``lookback`` usable bars at or
  before t. The future bar times (the time features of the forecast steps) come from a
  calendar known at t (``settings.calendar``: by default the exchange the instrument codes
  name, see ``kronos_alpha.inference.calendar``), never from the panel's rows after t, so a
  forecast at t equals one from the panel cut at t, bit for bit.
- Suspended or missing bars follow the input boundary's policy (``panel.traded_mask``): by
  default a suspended bar is dropped from the history and a decision time on one is skipped
  (reason ``suspended``); with ``fill_suspended=True`` suspended bars stay as flat bars.
- Too short history: fewer than ``min_history`` (default ``lookback``) usable bars up to t
  -> skipped (reason ``short_history``). An instrument without a row at a requested decision
  time is skipped (reason ``no_bar``). A requested decision time that is not a bar time of
  the panel at all is an error.
- ``lookback > max_context``: the lookback is clipped to ``max_context`` with a warning.
- Determinism: with an integer ``seed`` each window draws its random numbers from
  ``window_seed(seed, instrument, t)``, so its forecast does not depend on which other
  windows share its batch, its rank or the cache. ``seed=None`` samples freshly and
  disables the cache.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..model import zoo
from . import distributed
from .cache import weights_digest
from .calendar import future_times, warn_once
from .calibration import DEFAULT_SCALES, Calibrator
from .data import (
    Series,
    check_dates,
    check_one_frequency,
    forecast_windows,
    sample_bars,
    summarise,
    time_features,
    window_index,
)
from .device import auto_device, check_device, torch_dtype
from .embedding import embed_bars, embedding_columns
from .frames import split_panel
from .generation import uniforms_for_seeds, window_seed
from .panel import FEATURE_COLS
from .quantize import quantize_int8
from .runner import Job, run_report, run_windows
from .settings import ForecastSettings, check_horizon, check_modes

RELOAD = {
    "device",
    "dtype",
    "max_context",
    "int8",
    "cuda_graphs",
}  # settings that change the loaded model


@dataclass
class Loaded:
    """The model as loaded for forecasting."""

    model: torch.nn.Module
    tokenizer: torch.nn.Module
    max_context: int
    device: str
    dtype: torch.dtype
    source: str
    digest: str | None = None


class Forecaster:
    """Kronos forecasts for many instruments and decision times.

    ``Forecaster(model, tokenizer, settings=None, **settings_fields)``: parameters are stored
    as given (scikit-learn style) and the model is loaded on first use. ``model`` and
    ``tokenizer`` are resolved by ``kronos_alpha.model.zoo.resolve_checkpoint`` (a zoo name,
    Hub id, folder, or instances; None: the default). Every other parameter is a field of
    :class:`ForecastSettings` (its docstring lists them), validated when it is given; each is
    also readable and assignable as an attribute (``fc.horizon = 5`` validates too).
    """

    def __init__(self, model=None, tokenizer=None, settings=None, **fields):
        self.model = model
        self.tokenizer = tokenizer
        self.settings = ForecastSettings.build(settings, **fields)
        self.report: dict = {}
        self.calibrator_: Calibrator | None = None
        self._loaded = None

    # Settings read and write through the one validated object.
    def __getattr__(self, name):
        if name != "settings" and name in ForecastSettings.names() and "settings" in vars(self):
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in ForecastSettings.names():
            self.settings = self.settings.replace(**{name: value})
            if name in RELOAD:
                self._loaded = None
        else:
            object.__setattr__(self, name, value)

    # Pickles (Qlib saves models with them) carry the parameters, never the loaded weights of a
    # named model: the copy reloads lazily. A Kronos instance given as ``model`` travels as is.
    def __getstate__(self) -> dict:
        cal = vars(self).get("calibrator_")
        return {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "settings": self.settings,
            "calibrator": None if cal is None else cal.to_dict(),
        }

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        cal = Calibrator.build(state.pop("calibrator", None))
        vars(self).update(state, report={}, _loaded=None, calibrator_=cal)

    def __copy__(self) -> Forecaster:
        """A shallow copy shares the loaded model (set_params on it leaves this one alone)."""
        new = object.__new__(type(self))
        vars(new).update(vars(self), report={})
        vars(new).pop("paths_", None)
        return new

    def with_settings(self, settings: ForecastSettings) -> Forecaster:
        """A copy with ``settings`` that shares this one's loaded model (loaded again only
        when the device, dtype or max_context differ)."""
        new = copy.copy(self)
        vars(new)["settings"] = settings
        if any(getattr(settings, k) != getattr(self.settings, k) for k in RELOAD):
            vars(new)["_loaded"] = None
        return new

    # -- scikit-learn style parameters -------------------------------------------------------
    @staticmethod
    def _param_names() -> list[str]:
        return ["model", "tokenizer", *ForecastSettings.names()]

    def get_params(self, deep: bool = False) -> dict:
        return {"model": self.model, "tokenizer": self.tokenizer, **self.settings.as_dict()}

    def set_params(self, **params) -> Forecaster:
        names = self._param_names()
        unknown = [k for k in params if k not in names]
        if unknown:
            raise ValueError(f"Forecaster has no parameter {unknown[0]!r}; parameters are {names}")
        fields = {k: v for k, v in params.items() if k not in ("model", "tokenizer")}
        self.settings = self.settings.replace(**fields)
        for k in ("model", "tokenizer"):
            if k in params:
                object.__setattr__(self, k, params[k])
        if {"model", "tokenizer"} & set(params) or RELOAD & set(fields):
            self._loaded = None
        return self

    def __repr__(self) -> str:
        default = ForecastSettings().as_dict()
        changed = {k: v for k, v in self.settings.as_dict().items() if v != default[k]}
        for k in ("model", "tokenizer"):
            v = getattr(self, k)
            if v is not None:
                changed[k] = f"{type(v).__name__}(...)" if isinstance(v, torch.nn.Module) else v
        return "Forecaster(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> Forecaster:
        """Load model and tokenizer now (forecast() does it on first use)."""
        if self._loaded is not None:
            return self
        model, tokenizer, model_max_context, source = zoo.resolve_checkpoint(
            self.model, self.tokenizer
        )
        int8 = self.settings.int8  # int8 runs on the CPU: it is the automatic device then
        device = self.settings.device or ("cpu" if int8 else auto_device())
        device = distributed.local_device(check_device(device))
        check_modes(self.settings, device)  # int8 / cuda_graphs: SettingsError naming device
        dtype = torch_dtype(self.settings.dtype, device)
        if isinstance(self.model, torch.nn.Module) and next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model)  # never change the dtype of the caller's model
        model = model.to(device=device, dtype=dtype).eval()
        if int8:
            model = quantize_int8(model)  # a copy: the caller's model keeps its weights
        # The tokenizer stays float32 whatever the model's dtype (see sample_paths).
        tokenizer = tokenizer.to(device=device, dtype=torch.float32).eval()
        max_context = int(self.settings.max_context or model_max_context)
        self._loaded = Loaded(model, tokenizer, max_context, device, dtype, source)
        return self

    @property
    def model_(self):
        return self.load()._loaded.model

    @property
    def tokenizer_(self):
        return self.load()._loaded.tokenizer

    @property
    def max_context_(self) -> int:
        return self.load()._loaded.max_context

    @property
    def device_(self) -> str:
        return self.load()._loaded.device

    @property
    def source_(self) -> str:
        return self.load()._loaded.source

    def weights_digest(self) -> str:
        st = self.load()._loaded
        if st.digest is None:
            st.digest = weights_digest(st.model, st.tokenizer)
        return st.digest

    def effective_lookback(self, stacklevel: int = 3) -> tuple[int, int]:
        """(lookback, min_history) once the model's max_context is known."""
        s = self.settings
        lookback, mc = s.lookback, self.max_context_
        check_horizon(s.horizon, mc)
        if lookback > mc:
            warnings.warn(
                f"lookback {lookback} exceeds the model's max_context {mc}: the model cannot attend to "
                f"more bars, so each window is clipped to its last {mc} bars",
                stacklevel=stacklevel,
            )
            lookback = mc
        min_history = lookback if s.min_history is None else s.min_history
        if min_history > lookback:
            raise ValueError(
                f"min_history must be between 2 and lookback ({lookback}), got {min_history}"
            )
        return lookback, min_history

    # -- forecasting -------------------------------------------------------------------------
    def _windows(self, panel, dates, future: bool = True):
        """The checked series, the windows of the requested (dates x instruments) and, with
        ``future``, each decision time's future bar times from the calendar."""
        self.load()
        lookback, min_history = self.effective_lookback(stacklevel=4)  # warnings: the caller's
        s = self.settings
        series = {
            name: Series(name, df, s.fill_suspended, stacklevel=5)
            for name, df in split_panel(panel).items()
        }
        check_one_frequency(series)
        tz = next(iter(series.values())).raw_index.tz
        all_times = pd.concat([x.raw_index.to_series() for x in series.values()]).unique()
        times = pd.DatetimeIndex(all_times).unique().sort_values()
        if dates is not None:
            dates = check_dates(dates, times, tz)
        windows, requested, skipped = forecast_windows(series, dates, min_history)
        futures, calendar_used = {}, None
        if future:
            futures, calendar_used, notes = future_times(
                s.calendar, times, [w.time for w in windows], s.horizon, list(series)
            )
            warn_once(notes, vars(self).setdefault("_calendar_notes", set()), 4)
        counts = {"requested": requested, "skipped": skipped, "lookback": lookback}
        return series, windows, futures, calendar_used, counts | {"min_history": min_history}

    def forecast(self, panel, dates=None) -> pd.DataFrame:
        """Forecast table indexed by (datetime = decision time t, instrument).

        Columns: pred_return (mean sampled close[t+h] / close[t] - 1, h = horizon), ret_mean,
        ret_median, ret_qNN per quantile, ret_std (population std over samples), prob_up
        (share of samples with a positive return), pred_vol (std of the predicted bar
        close-to-close returns, pooled over steps and samples; per bar, not annualised),
        path_mean / path_min / path_max (the mean over samples of each path's mean, lowest
        and highest close over close[t] - 1), hist_vol (std of the context window's bar
        returns), ewma_vol (their RiskMetrics EWMA volatility, decay 0.94), and with
        return_paths the mean predicted closes close_h1..close_hH.
        After :meth:`calibrate` (or ``set_calibrator``), ret_qNN, ret_median, ret_std and
        prob_up are the calibrated distribution's, the sample statistics stay as raw_ret_qNN,
        raw_ret_median, raw_ret_std and raw_prob_up, and ``self.calibrated_returns_`` holds
        99 calibrated quantiles per row (an equally weighted ensemble).
        ``self.sample_returns_`` holds every sampled horizon return (rows as the table, one
        column per sample); with return_paths ``self.paths_`` holds every sampled path
        ({(t, instrument): (future times, array (samples, horizon, 6))}).
        Skipped windows have no row. ``self.report`` afterwards: requested (dates x
        instruments, or every row when dates is None), computed, from_cache, skipped by reason
        (no_bar, suspended, short_history), suspended bars dropped/filled, corrupt cache
        entries recomputed, the lookback used, model source, device, dtype, world size.
        """
        start = time.perf_counter()
        series, windows, futures, calendar, counts = self._windows(panel, dates)
        s, st = self.settings, self._loaded
        cal = vars(self).get("calibrator_")
        if cal is not None:
            cal.check_settings(s)
        fstamps = {t: time_features(f) for t, f in futures.items()}
        seeds = [
            None if s.seed is None else window_seed(s.seed, w.instrument, w.time) for w in windows
        ]

        def compute(group, length, group_seeds):
            ctx = [w.bars(length) for w in group]
            uniforms = None
            if s.seed is not None:
                uniforms = uniforms_for_seeds(group_seeds, s.sample_count, s.horizon)
            return sample_bars(
                st.tokenizer, st.model, np.stack([c[0] for c in ctx]),
                np.stack([c[1] for c in ctx]), np.stack([fstamps[w.time] for w in group]),
                st.max_context, s.sample_count, s.T, s.top_k, s.top_p, s.clip, uniforms,
                graphs=s.cuda_graphs,
                names=[f"instrument {w.instrument!r} at {w.time}" for w in group],
            )  # fmt: skip

        shape = (s.sample_count, s.horizon, len(FEATURE_COLS))
        job = Job("paths", shape, compute, fstamps, seeds, s.sample_count, s.horizon)
        outcome = run_windows(st, s, windows, counts["lookback"], job, self.weights_digest)
        table, returns = summarise(windows, outcome.results, s, counts["lookback"])
        self.sample_returns_ = returns
        if s.return_paths:
            self.paths_ = {
                (w.time, w.instrument): (futures[w.time], p)
                for w, p in zip(windows, outcome.results)
            }
        if cal is not None:
            inside = table.index.get_level_values("datetime") < pd.Timestamp(cal.realised_end)
            if inside.any():
                warnings.warn(
                    f"{int(inside.sum())} forecast rows have decision times before "
                    f"{cal.realised_end}, inside the calibration span ({cal.first_date} .. "
                    f"{cal.realised_end}): their intervals are in-sample; out-of-sample use "
                    "means later dates",
                    stacklevel=2,
                )
            self.calibrated_returns_ = pd.DataFrame(cal.quantile_grid(table), index=table.index)
            table = cal.apply(table, s.quantiles)
        self.report = run_report(
            self._loaded, series, windows, counts, outcome, calendar, start, s.int8
        )
        self.report["calibrated"] = cal is not None
        return table

    def embed(self, panel, dates=None) -> pd.DataFrame:
        """Kronos features per (datetime = decision time t, instrument): the transformer's
        final hidden state at t (``emb_last_0..``) and its mean over the context window
        (``emb_mean_0..``), float32; see ``kronos_alpha.inference.embedding``.

        The windows are forecast()'s: the last ``lookback`` usable bars at or before t (no
        look-ahead), the same skips (counted in ``self.report``), the same batching, cache
        (``cache_dir``; an embedding is deterministic, so any seed may use it) and shards.
        """
        start = time.perf_counter()
        series, windows, _, _, counts = self._windows(panel, dates, future=False)
        s, st = self.settings, self._loaded
        width = 2 * st.model.d_model

        def compute(group, length, _seeds):
            ctx = [w.bars(length) for w in group]
            x, stamp = np.stack([c[0] for c in ctx]), np.stack([c[1] for c in ctx])
            return embed_bars(st.tokenizer, st.model, x, stamp, st.max_context, s.clip)

        job = Job("embed", (width,), compute, {}, [None] * len(windows), 1, 0)
        outcome = run_windows(st, s, windows, counts["lookback"], job, self.weights_digest)
        index = window_index(windows)
        values = np.stack(outcome.results) if windows else np.zeros((0, width), np.float32)
        cols = embedding_columns(st.model.d_model)
        frame = pd.DataFrame(values.astype(np.float32), index=index, columns=cols)
        self.report = run_report(
            self._loaded, series, windows, counts, outcome, None, start, s.int8
        )
        return frame

    # -- calibration -------------------------------------------------------------------------
    def calibrate(
        self,
        panel,
        dates,
        tune: bool = False,
        grid=None,
        scales=DEFAULT_SCALES,
        drift: str = "zero",
    ) -> Forecaster:
        """Fit the forecast distribution's calibration on past decision ``dates``: each is
        forecast and compared with its realised close[t + horizon] / close[t] - 1 (see
        ``kronos_alpha.inference.calibration`` for the method and why). The panel is cut at
        the latest date's outcome bar; a date whose outcome is not in the panel is refused.
        ``tune``: also choose (T, top_p) from ``grid`` (default ``TUNE_GRID``) by held-out
        CRPS, and keep the best in ``self.settings``. ``scales``: the candidate scales
        (default: the fitted log-linear scale alone); ``drift``: "zero" or "fitted" (the
        calibration span's mean return kept). Returns self; the fit is ``self.calibrator_``
        and what it measured ``self.calibration_report_``."""
        from .realised import fit_calibration

        self.calibrator_, self.calibration_report_, settings = fit_calibration(
            self, panel, dates, tune, grid, scales, drift
        )
        vars(self)["settings"] = settings
        return self

    def set_calibrator(self, calibrator) -> Forecaster:
        """Use a fitted calibration: a Calibrator, its dict, a JSON file, or None (raw)."""
        self.calibrator_ = Calibrator.build(calibrator)
        return self
