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
from .cache import ForecastCache, settings_digest, weights_digest, window_key
from .calendar import future_times, warn_once
from .data import (
    Series,
    Window,
    check_dates,
    check_one_frequency,
    forecast_windows,
    sample_bars,
    summarise,
    time_features,
)
from .device import auto_device, batch_windows, check_device, check_fits, torch_dtype, window_bytes
from .generation import uniforms_for_seeds, window_seed
from .panel import FEATURE_COLS, split_panel
from .settings import ForecastSettings, check_horizon

RELOAD = {"device", "dtype", "max_context"}  # settings that change the loaded model


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
        return {"model": self.model, "tokenizer": self.tokenizer, "settings": self.settings}

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state, report={}, _loaded=None)

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
        device = distributed.local_device(check_device(self.settings.device or auto_device()))
        dtype = torch_dtype(self.settings.dtype, device)
        if isinstance(self.model, torch.nn.Module) and next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model)  # never change the dtype of the caller's model
        model = model.to(device=device, dtype=dtype).eval()
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

    def effective_lookback(self) -> tuple[int, int]:
        """(lookback, min_history) once the model's max_context is known."""
        s = self.settings
        lookback, mc = s.lookback, self.max_context_
        check_horizon(s.horizon, mc)
        if lookback > mc:
            warnings.warn(
                f"lookback {lookback} exceeds the model's max_context {mc}: the model cannot attend to "
                f"more bars, so each window is clipped to its last {mc} bars",
                stacklevel=3,
            )
            lookback = mc
        min_history = lookback if s.min_history is None else s.min_history
        if min_history > lookback:
            raise ValueError(
                f"min_history must be between 2 and lookback ({lookback}), got {min_history}"
            )
        return lookback, min_history

    # -- forecasting -------------------------------------------------------------------------
    def forecast(self, panel, dates=None) -> pd.DataFrame:
        """Forecast table indexed by (datetime = decision time t, instrument).

        Columns: pred_return (mean sampled close[t+h] / close[t] - 1, h = horizon), ret_mean,
        ret_median, ret_qNN per quantile, ret_std (population std over samples), prob_up
        (share of samples with a positive return), pred_vol (std of the predicted bar
        close-to-close returns, pooled over steps and samples; per bar, not annualised),
        and with return_paths the mean predicted closes close_h1..close_hH.
        ``self.sample_returns_`` holds every sampled horizon return (rows as the table, one
        column per sample); with return_paths ``self.paths_`` holds every sampled path
        ({(t, instrument): (future times, array (samples, horizon, 6))}).
        Skipped windows have no row. ``self.report`` afterwards: requested (dates x
        instruments, or every row when dates is None), computed, from_cache, skipped by reason
        (no_bar, suspended, short_history), suspended bars dropped/filled, corrupt cache
        entries recomputed, the lookback used, model source, device, dtype, world size.
        """
        start = time.perf_counter()
        self.load()
        lookback, min_history = self.effective_lookback()
        s = self.settings
        series = {
            name: Series(name, df, s.fill_suspended) for name, df in split_panel(panel).items()
        }
        check_one_frequency(series)
        tz = next(iter(series.values())).raw_index.tz
        all_times = pd.concat([x.raw_index.to_series() for x in series.values()]).unique()
        times = pd.DatetimeIndex(all_times).unique().sort_values()
        if dates is not None:
            dates = check_dates(dates, times, tz)
        windows, requested, skipped = forecast_windows(series, dates, min_history)
        futures, calendar_used, notes = future_times(
            s.calendar, times, [w.time for w in windows], s.horizon, list(series)
        )
        warn_once(notes, vars(self).setdefault("_calendar_notes", set()))  # per forecaster
        paths, from_cache, corrupt = self._run(windows, lookback, futures)
        table, returns = summarise(windows, paths, s)
        self.sample_returns_ = returns
        if s.return_paths:
            self.paths_ = {
                (w.time, w.instrument): (futures[w.time], p) for w, p in zip(windows, paths)
            }
        loaded = self._loaded
        self.report = {
            "requested": requested,
            "computed": len(windows) - from_cache,
            "computed_by_this_rank": self._computed_here,
            "from_cache": from_cache,
            "skipped": dict(skipped),
            "skipped_total": int(sum(skipped.values())),
            "suspended_bars_dropped": int(sum(x.dropped for x in series.values())),
            "suspended_bars_filled": int(sum(x.filled for x in series.values())),
            "ohlc_inconsistent_bars": int(sum(x.inconsistent for x in series.values())),
            "cache_corrupt_recomputed": corrupt,
            "lookback": lookback,
            "min_history": min_history,
            "max_context": loaded.max_context,
            "model": loaded.source,
            "device": str(loaded.device),
            "dtype": str(loaded.dtype).replace("torch.", ""),
            "world_size": distributed.world_size(),
            "calendar": calendar_used,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return table

    def _run(self, windows: list[Window], lookback: int, futures: dict):
        """Sampled paths (samples, horizon, 6), de-normalised, for every window."""
        s, st = self.settings, self._loaded
        fstamps = {t: time_features(f) for t, f in futures.items()}
        use_cache = s.cache_dir is not None and s.seed is not None
        if s.cache_dir is not None and s.seed is None:
            warnings.warn(
                "seed=None samples afresh each run, so the forecast cache is not used", stacklevel=3
            )
        cache = ForecastCache(s.cache_dir) if use_cache else None
        paths: list = [None] * len(windows)
        keys: list = [None] * len(windows)
        seeds = [
            None if s.seed is None else window_seed(s.seed, w.instrument, w.time) for w in windows
        ]
        if cache is not None:
            base = settings_digest(s, self.weights_digest(), st.max_context, st.dtype, st.device)
            shape = (s.sample_count, s.horizon, len(FEATURE_COLS))
            for i, w in enumerate(windows):
                bars, stamp = w.bars(min(lookback, w.end + 1))
                keys[i] = window_key(base, bars, stamp, fstamps[w.time], seeds[i])
                paths[i] = cache.get(keys[i], shape)
        from_cache = sum(p is not None for p in paths)
        distributed.barrier()  # every rank has looked up before any rank writes
        todo = [i for i, p in enumerate(paths) if p is None]
        mine = todo[distributed.rank() :: distributed.world_size()]

        def store(batch: list[int], arrays) -> None:  # saved as each batch finishes
            for j, arr in zip(batch, arrays):
                paths[mine[j]] = arr
                if cache is not None:
                    cache.put(keys[mine[j]], arr)

        self._compute(
            [windows[i] for i in mine], fstamps, [seeds[i] for i in mine], lookback, store
        )
        computed = [paths[i] for i in mine]
        if distributed.active():
            for i, arr in distributed.gather(list(zip(mine, computed))):
                paths[i] = arr
        self._computed_here = len(mine)
        return paths, from_cache, 0 if cache is None else cache.corrupt

    def _batches(self, windows: list[Window], lookback: int) -> list[list[int]]:
        """Window positions grouped by context length, in batches that fit in memory."""
        s, st = self.settings, self._loaded
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            groups.setdefault(min(lookback, w.end + 1), []).append(i)
        batches = []
        for length, members in sorted(groups.items()):
            size = s.batch_size or batch_windows(
                st.model, st.tokenizer, st.dtype, st.device, length, s.sample_count, s.horizon
            )
            per = window_bytes(st.model, st.tokenizer, st.dtype, length, s.sample_count, s.horizon)
            check_fits(
                per, len(windows), min(size, len(members)), s.sample_count, s.horizon, st.device
            )
            batches += [members[k : k + size] for k in range(0, len(members), size)]
        return batches

    def _compute(self, windows: list[Window], fstamps: dict, seeds, lookback: int, store) -> None:
        """Sample every window, batch by batch; ``store(positions, arrays)`` takes each batch."""
        from tqdm.auto import tqdm

        s, st = self.settings, self._loaded
        batches = self._batches(windows, lookback)
        quiet = not s.progress or distributed.rank() != 0 or len(batches) < 2
        bar = tqdm(total=len(windows), desc="forecast", unit="win", disable=True if quiet else None)
        for members in batches:
            length = min(lookback, windows[members[0]].end + 1)
            ctx = [windows[i].bars(length) for i in members]
            uniforms = None
            if s.seed is not None:
                uniforms = uniforms_for_seeds(
                    [seeds[i] for i in members], s.sample_count, s.horizon
                )
            y = sample_bars(
                st.tokenizer,
                st.model,
                np.stack([c[0] for c in ctx]),
                np.stack([c[1] for c in ctx]),
                np.stack([fstamps[windows[i].time] for i in members]),
                st.max_context,
                s.sample_count,
                s.T,
                s.top_k,
                s.top_p,
                s.clip,
                uniforms,
            )
            store(members, list(y))
            bar.update(len(members))
        bar.close()
