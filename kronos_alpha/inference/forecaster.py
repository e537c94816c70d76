"""Forecaster: a panel of OHLCV bars -> a table of predicted returns per (decision time, instrument).

The one inference path for the Qlib, backtrader and vectorbt adapters and the strategies.
It only packs windows and summarises samples: validation and normalisation are
``kronos_alpha.inference.data``'s, sampling is ``kronos_alpha.inference.generation.sample_paths``.

Policies (all counted in ``Forecaster.report``):

- No look-ahead. The window for decision time t is the last ``lookback`` usable bars at or
  before t. Bars after t only enter as *timestamps* (the panel's calendar gives the future
  bar times for the time features; beyond the panel's end they are extrapolated, see
  ``kronos_alpha.inference.calendar``); their prices and volumes never do.
- Suspended or missing bars: a bar with a NaN price, or with volume 0 or NaN when the series
  has volume at all, is not a traded bar. By default it is dropped from the history, so a
  window is made of the last ``lookback`` *traded* bars, and a decision time whose own bar
  is suspended is skipped (reason ``suspended``). With ``fill_suspended=True`` suspended bars
  stay in the history and NaN-priced ones become flat bars at the previous close with volume
  0 (the convention of Qlib's own data); decision times on them are forecast.
- Too short history: fewer than ``min_history`` (default ``lookback``) usable bars up to t
  -> skipped (reason ``short_history``). With ``min_history < lookback`` early windows are
  shorter than ``lookback``.
- An instrument without a row at a requested decision time is skipped (reason ``no_bar``).
  A requested decision time that is not a bar time of the panel at all is an error.
- ``lookback > max_context``: the model cannot attend to more than ``max_context`` bars, so
  the lookback is clipped to ``max_context`` with a warning (and ``report["lookback"]``).
- Determinism: with an integer ``seed`` each window draws its random numbers from
  ``series_seed(seed, instrument, t)``, so its forecast does not depend on which other
  windows share its batch, its rank or the cache. ``seed=None`` samples freshly and
  disables the cache.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..model.hub import CheckpointError
from . import distributed
from .cache import ForecastCache
from .calendar import BarCalendar
from .data import (
    AMOUNT_COL,
    FEATURE_COLS,
    PRICE_COLS,
    VOLUME_COL,
    InputError,
    denormalize,
    normalize,
    ohlcv_matrix,
    scaler_stats,
    time_features,
)
from .generation import sample_paths, series_seed, uniforms_for_seeds
from .predictor import auto_device, check_compatible

CACHE_FORMAT = 1
SKIP_REASONS = ("no_bar", "suspended", "short_history")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def _instrument_key(name) -> int:
    return int.from_bytes(hashlib.sha256(str(name).encode()).digest()[:8], "little")


def window_seed(seed: int, instrument, t: pd.Timestamp) -> int:
    """The random stream of one window: a function of (seed, instrument, decision time) only."""
    return series_seed(seed, _instrument_key(instrument), pd.Timestamp(t).value)


def weights_digest(*modules) -> str:
    h = hashlib.sha256()
    for m in modules:
        for name, tensor in sorted(m.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _package_version() -> str:
    from .. import __version__

    return __version__


def _quantile_name(q: float) -> str:
    return f"ret_q{q * 100:g}"


# -- panel handling ----------------------------------------------------------------------------
def _clean_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Lower-case, drop Qlib's '$' prefix; keep only the model's features."""
    if all(c in FEATURE_COLS for c in df.columns):
        return df
    df = df.rename(columns=lambda c: str(c).lstrip("$").lower())
    return df[[c for c in FEATURE_COLS if c in df.columns]]


def _datetime_index(values, what: str) -> pd.DatetimeIndex:
    try:
        return pd.DatetimeIndex(pd.to_datetime(values))
    except (TypeError, ValueError) as exc:
        if "tz" in str(exc).lower() or "timezone" in str(exc).lower():
            raise InputError(
                f"{what} mixes timezone-naive and timezone-aware timestamps ({exc})"
            ) from exc
        raise InputError(f"{what} are not timestamps ({exc})") from exc


def split_panel(panel) -> dict[str, pd.DataFrame]:
    """A long (datetime, instrument) frame or a dict of frames -> {instrument: frame by time}."""
    if isinstance(panel, dict):
        if not panel:
            raise InputError("panel is an empty dict")
        frames = {}
        for name, df in panel.items():
            if not isinstance(df, pd.DataFrame):
                raise InputError(f"panel[{name!r}] must be a DataFrame, got {type(df).__name__}")
            df = df.copy()
            df.index = _datetime_index(df.index, f"panel[{name!r}].index")
            frames[str(name)] = df
    elif isinstance(panel, pd.DataFrame):
        if not isinstance(panel.index, pd.MultiIndex) or panel.index.nlevels != 2:
            raise InputError(
                "panel must be indexed by a (datetime, instrument) MultiIndex, or be a dict "
                f"{{instrument: DataFrame}}; got index {type(panel.index).__name__} {list(panel.index.names)}"
            )
        names = list(panel.index.names)
        if "datetime" in names and "instrument" in names:
            t_level, i_level = names.index("datetime"), names.index("instrument")
        else:  # unnamed levels: the datetime-like one is the time
            first = panel.index.get_level_values(0)
            is_time = pd.api.types.is_datetime64_any_dtype(first) or isinstance(
                first[0], pd.Timestamp
            )
            t_level, i_level = (0, 1) if is_time else (1, 0)
        dup = panel.index.duplicated()
        if dup.any():
            row = panel.index[dup][0]
            raise InputError(
                f"panel has {int(dup.sum())} duplicated (datetime, instrument) row(s); first {row!r}"
            )
        times = _datetime_index(panel.index.get_level_values(t_level), "panel datetime level")
        inst = panel.index.get_level_values(i_level).astype(str)
        body = _clean_columns(panel.reset_index(drop=True))
        body.index = times
        frames = {name: g for name, g in body.groupby(inst.to_numpy(), sort=True)}
    else:
        raise InputError(
            f"panel must be a DataFrame or a dict of DataFrames, got {type(panel).__name__}"
        )
    tzs = {str(df.index.tz) for df in frames.values()}
    if len(tzs) > 1:
        raise InputError(f"panel mixes timezone-naive and timezone-aware timestamps: {sorted(tzs)}")
    out = {}
    unsorted = []
    for name, df in frames.items():
        if df.index.has_duplicates:
            raise InputError(
                f"instrument {name!r} has a duplicated timestamp {df.index[df.index.duplicated()][0]}"
            )
        if not df.index.is_monotonic_increasing:
            unsorted.append(name)
            df = df.sort_index()
        clean = _clean_columns(df)
        missing = [c for c in PRICE_COLS if c not in clean.columns]
        if missing:
            raise InputError(
                f"instrument {name!r} is missing price column(s) {missing}; it has {list(df.columns)}"
            )
        out[name] = clean
    if unsorted:
        warnings.warn(
            f"panel rows were not in time order for {len(unsorted)} instrument(s) (first {unsorted[0]!r}); "
            "sorted them",
            stacklevel=3,
        )
    return out


class _Series:
    """One instrument after the missing-bar policy: usable bars, their features and stamps."""

    def __init__(self, name: str, df: pd.DataFrame, fill_suspended: bool):
        prices = df[PRICE_COLS].to_numpy(dtype=np.float64)
        bad_price = ~np.isfinite(prices).all(axis=1)
        has_volume = VOLUME_COL in df.columns
        if has_volume:
            vol = df[VOLUME_COL].to_numpy(dtype=np.float64)
            traded = np.isfinite(vol) & (vol > 0)
            if not traded.any():  # a series without volume data (an index, say): prices decide
                traded = ~bad_price
                df = df.drop(columns=[c for c in (VOLUME_COL, AMOUNT_COL) if c in df.columns])
        else:
            traded = ~bad_price
        traded &= ~bad_price
        self.raw_index = df.index
        if fill_suspended:
            keep = np.ones(len(df), bool)
            first_ok = int(np.argmax(~bad_price)) if (~bad_price).any() else len(df)
            keep[:first_ok] = False  # nothing to fill from before the first priced bar
            df = df.iloc[first_ok:].copy()
            close = df["close"].ffill()
            nan_rows = ~np.isfinite(df[PRICE_COLS].to_numpy(dtype=np.float64)).all(axis=1)
            for c in PRICE_COLS:
                df.loc[nan_rows, c] = close[nan_rows]
            for c in (VOLUME_COL, AMOUNT_COL):
                if c in df.columns:
                    df[c] = df[c].fillna(0.0)
            self.filled = int(nan_rows.sum())
            self.dropped = first_ok
            self.usable_raw = keep
        else:
            df = df[traded]
            self.filled = 0
            self.dropped = int((~traded).sum())
            self.usable_raw = traded
        self.name = name
        self.index = df.index
        self.x = (
            ohlcv_matrix(df, f"instrument {name!r}") if len(df) else np.zeros((0, 6), np.float32)
        )
        self.stamp = time_features(df.index)
        self.close = df["close"].to_numpy(
            dtype=np.float64
        )  # returns are relative to the exact close


# -- the forecaster ----------------------------------------------------------------------------
class Forecaster:
    """Kronos forecasts for many instruments and decision times.

    Parameters are stored as given (scikit-learn style); the model is loaded on first use.

    model: a zoo name ("kronos-small"), a Hub id, a folder (Hub format; with model/ and
        tokenizer/ subfolders it holds both), or a Kronos instance (then ``tokenizer`` is
        required). None: the Hub's kronos-small, and when the Hub cannot be reached the
        small checkpoint bundled with the package, with a warning. A named model that cannot
        be loaded is an error.
    tokenizer: a KronosTokenizer, folder or Hub id; needed unless the model names both.
    lookback / horizon: bars of context / bars forecast. sample_count paths per window.
    T, top_k, top_p: sampling settings. seed: see determinism in the module docstring.
    device: None -> cuda, mps, cpu. dtype: None/"float32", "bf16" or "fp16" for the model
        (cuda); the tokenizer stays float32. max_context: None -> the model's.
    batch_size: windows per batch; None sizes it to the device's memory.
    cache_dir: folder of the forecast cache (None: no cache).
    quantiles: of the sampled horizon returns, reported as ret_qNN columns.
    return_paths: add the mean close path (close_h1..close_hH) and keep every sampled path
        in ``self.paths_`` ({(t, instrument): (future times, array (samples, horizon, 6))}).
    min_history: fewest usable bars for a forecast (None: lookback).
    fill_suspended: keep suspended bars (see the module docstring).
    progress: a tqdm bar over batches. clip: normalised values are clipped to +-clip.
    """

    def __init__(
        self,
        model=None,
        tokenizer=None,
        lookback: int = 90,
        horizon: int = 10,
        sample_count: int = 5,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        seed: int | None = 0,
        device: str | None = None,
        dtype=None,
        max_context: int | None = None,
        batch_size: int | None = None,
        cache_dir=None,
        quantiles=(0.1, 0.5, 0.9),
        return_paths: bool = False,
        min_history: int | None = None,
        fill_suspended: bool = False,
        progress: bool = True,
        clip: float = 5.0,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.lookback = lookback
        self.horizon = horizon
        self.sample_count = sample_count
        self.T = T
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.max_context = max_context
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.quantiles = quantiles
        self.return_paths = return_paths
        self.min_history = min_history
        self.fill_suspended = fill_suspended
        self.progress = progress
        self.clip = clip
        self.report: dict = {}
        self._loaded = None

    # Pickles (Qlib saves models with them) carry the parameters, never the loaded weights of a
    # named model: the copy reloads lazily. A Kronos instance given as ``model`` travels as is.
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state.pop("paths_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._loaded = None

    def __copy__(self) -> Forecaster:
        """A shallow copy shares the loaded model (set_params on it leaves this one alone)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.report = {}
        return new

    # -- scikit-learn style parameters -------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = False) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> Forecaster:
        names = self._param_names()
        for k, v in params.items():
            if k not in names:
                raise ValueError(f"Forecaster has no parameter {k!r}; parameters are {names}")
            setattr(self, k, v)
        if {"model", "tokenizer", "device", "dtype", "max_context"} & set(params):
            self._loaded = None
        return self

    def __repr__(self) -> str:
        changed = {
            k: v
            for k, v in self.get_params().items()
            if v is not inspect.signature(type(self).__init__).parameters[k].default
        }
        args = ", ".join(
            f"{k}={v!r}" if not isinstance(v, torch.nn.Module) else f"{k}={type(v).__name__}(...)"
            for k, v in changed.items()
        )
        return f"Forecaster({args})"

    # -- loading -----------------------------------------------------------------------------
    def _resolve_dtype(self, device: str) -> torch.dtype:
        if self.dtype is None:
            return torch.float32
        if isinstance(self.dtype, torch.dtype):
            dt = self.dtype
        elif str(self.dtype).lower().replace("torch.", "") in DTYPES:
            dt = DTYPES[str(self.dtype).lower().replace("torch.", "")]
        else:
            raise ValueError(
                f"dtype must be one of {sorted(DTYPES)} or a torch dtype, got {self.dtype!r}"
            )
        if dt == torch.float16 and not device.startswith("cuda"):
            raise ValueError(
                f"dtype fp16 needs a cuda device (device is {device!r}); use bf16 or float32"
            )
        return dt

    def _load_tokenizer(self, source):
        from ..model.tokenizer import KronosTokenizer

        if source is None:
            raise ValueError(f"model {self.model!r} does not include a tokenizer: pass tokenizer=")
        if isinstance(source, KronosTokenizer):
            return source
        if isinstance(source, (str, Path)):
            try:
                return KronosTokenizer.from_pretrained(str(source))
            except CheckpointError:
                raise
            except Exception as exc:
                raise CheckpointError(
                    f"tokenizer {str(source)!r} cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
        raise ValueError(
            f"tokenizer must be a KronosTokenizer, folder or Hub id, got {type(source).__name__}"
        )

    def _load_model(self):
        """(model, tokenizer, max_context, source description)."""
        from ..model import zoo
        from ..model.kronos import Kronos

        m = self.model
        if m is None:
            if self.tokenizer is not None:
                raise ValueError(
                    "tokenizer= was given without model=; name the model it belongs to"
                )
            return zoo.load_default()
        if isinstance(m, Kronos):
            return (
                m,
                self._load_tokenizer(self.tokenizer),
                zoo.DEFAULT_MAX_CONTEXT,
                f"{type(m).__name__} instance",
            )
        if not isinstance(m, (str, Path)):
            raise ValueError(
                f"model must be a zoo name, Hub id, folder or Kronos instance, got {type(m).__name__}"
            )
        name = str(m)
        try:
            if Path(name).is_dir():
                if (
                    (Path(name) / "model").is_dir()
                    and (Path(name) / "tokenizer").is_dir()
                    and self.tokenizer is None
                ):
                    return (*zoo.load_folder(name), name)
                return (
                    Kronos.from_pretrained(name),
                    self._load_tokenizer(self.tokenizer),
                    zoo.DEFAULT_MAX_CONTEXT,
                    name,
                )
            try:
                entry = zoo.resolve(name)
            except KeyError:
                entry = None
            if entry is not None and self.tokenizer is None:
                return (*zoo.load(name), entry.model)
            model = Kronos.from_pretrained(entry.model if entry else name)
            mc = entry.max_context if entry else zoo.DEFAULT_MAX_CONTEXT
            return model, self._load_tokenizer(self.tokenizer), mc, name
        except CheckpointError:
            raise
        except Exception as exc:  # network, missing repo, bad files: never a silent fallback
            raise CheckpointError(
                f"model {name!r} cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc

    def load(self) -> Forecaster:
        """Load model and tokenizer now (forecast() does it on first use)."""
        if getattr(self, "_loaded", None) is not None:
            return self
        model, tokenizer, model_max_context, source = self._load_model()
        check_compatible(model, tokenizer)
        device = distributed.local_device(self.device or auto_device())
        dtype = self._resolve_dtype(device)
        if isinstance(self.model, torch.nn.Module) and next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model)  # never change the dtype of the caller's model
        model = model.to(device=device, dtype=dtype).eval()
        # The tokenizer stays float32 whatever the model's dtype (see sample_paths).
        tokenizer = tokenizer.to(device=device, dtype=torch.float32).eval()
        self._loaded = {
            "model": model,
            "tokenizer": tokenizer,
            "max_context": int(self.max_context or model_max_context),
            "device": device,
            "dtype": dtype,
            "source": source,
            "digest": None,
        }
        return self

    @property
    def model_(self):
        return self.load()._loaded["model"]

    @property
    def tokenizer_(self):
        return self.load()._loaded["tokenizer"]

    @property
    def max_context_(self) -> int:
        return self.load()._loaded["max_context"]

    @property
    def device_(self) -> str:
        return self.load()._loaded["device"]

    @property
    def source_(self) -> str:
        return self.load()._loaded["source"]

    def weights_digest(self) -> str:
        st = self.load()._loaded
        if st["digest"] is None:
            st["digest"] = weights_digest(st["model"], st["tokenizer"])
        return st["digest"]

    # -- checks ------------------------------------------------------------------------------
    def _check_params(self) -> tuple[int, int]:
        for name in ("lookback", "horizon", "sample_count"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.lookback < 2:
            raise ValueError(f"lookback must be at least 2, got {self.lookback}")
        if not all(0 < q < 1 for q in self.quantiles):
            raise ValueError(f"quantiles must lie strictly between 0 and 1, got {self.quantiles!r}")
        lookback = int(self.lookback)
        mc = self.max_context_
        if lookback > mc:
            warnings.warn(
                f"lookback {lookback} exceeds the model's max_context {mc}: the model cannot attend to "
                f"more bars, so each window is clipped to its last {mc} bars",
                stacklevel=3,
            )
            lookback = mc
        min_history = lookback if self.min_history is None else int(self.min_history)
        if not 2 <= min_history <= lookback:
            raise ValueError(
                f"min_history must be between 2 and lookback ({lookback}), got {self.min_history!r}"
            )
        return lookback, min_history

    def _batch_windows(self, length: int) -> int:
        """Windows per batch: the user's, or what fits in about half the free memory."""
        if self.batch_size:
            return int(self.batch_size)
        st = self._loaded
        m = st["model"]
        elem = torch.finfo(st["dtype"]).bits // 8
        rows = self.sample_count
        # Key/value caches: the context's once per window (its paths share it), the generated
        # tokens' per path; activations ~ 16 * d_model per token and row.
        per_token_kv = (m.n_layers + 1) * 2 * m.d_model * elem
        kv = per_token_kv * (length + rows * self.horizon)
        act = rows * (length + self.horizon) * m.d_model * 16 * elem
        per_window = kv + act + length * self.tokenizer_.d_model * 64 * 4
        if str(st["device"]).startswith("cuda"):
            free, _ = torch.cuda.mem_get_info(torch.device(st["device"]))
            budget = free // 2
        else:
            try:
                avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                avail = 8 << 30
            budget = min(avail // 4, 2 << 30)  # CPUs gain little from huge batches
        return int(max(1, min(1024, budget // per_window)))

    # -- forecasting -------------------------------------------------------------------------
    def forecast(self, panel, dates=None) -> pd.DataFrame:
        """Forecast table indexed by (datetime = decision time t, instrument).

        Columns: pred_return (mean sampled close[t+h] / close[t] - 1, h = horizon), ret_mean,
        ret_median, ret_qNN per quantile, ret_std (population std over samples), prob_up
        (share of samples with a positive return), pred_vol (std of the predicted bar
        close-to-close returns, pooled over steps and samples; per bar, not annualised),
        and with return_paths the mean predicted closes close_h1..close_hH.
        Skipped windows have no row. ``self.report`` afterwards: requested (dates x
        instruments, or every row when dates is None), computed, from_cache, skipped by reason
        (no_bar, suspended, short_history), suspended bars dropped/filled, corrupt cache
        entries recomputed, the lookback used, model source, device, dtype, world size.
        """
        start = time.perf_counter()
        self.load()
        lookback, min_history = self._check_params()
        series = {
            name: _Series(name, df, self.fill_suspended) for name, df in split_panel(panel).items()
        }
        tz = next(iter(series.values())).raw_index.tz
        all_times = pd.concat([s.raw_index.to_series() for s in series.values()]).unique()
        calendar = BarCalendar(pd.DatetimeIndex(all_times))
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        windows = []  # (t, instrument, series, end position in usable bars)
        if dates is None:
            requested = 0
            for s in series.values():
                requested += len(s.raw_index)
                usable_pos = np.cumsum(s.usable_raw) - 1
                for r, t in enumerate(s.raw_index):
                    if not s.usable_raw[r]:
                        skipped["suspended"] += 1
                    elif usable_pos[r] + 1 < min_history:
                        skipped["short_history"] += 1
                    else:
                        windows.append((t, s.name, s, int(usable_pos[r])))
        else:
            dates = self._check_dates(dates, calendar, tz)
            requested = len(dates) * len(series)
            for s in series.values():
                raw_pos = s.raw_index.get_indexer(dates)
                usable_pos = np.cumsum(s.usable_raw) - 1
                for t, r in zip(dates, raw_pos):
                    if r < 0:
                        skipped["no_bar"] += 1
                    elif not s.usable_raw[r]:
                        skipped["suspended"] += 1
                    elif usable_pos[r] + 1 < min_history:
                        skipped["short_history"] += 1
                    else:
                        windows.append((t, s.name, s, int(usable_pos[r])))
        windows.sort(key=lambda w: (w[0], w[1]))
        paths, futures, from_cache, corrupt = self._run(windows, lookback, calendar)
        table = self._summarise(windows, paths)
        if self.return_paths:
            self.paths_ = {(w[0], w[1]): (futures[i], paths[i]) for i, w in enumerate(windows)}
        self.report = {
            "requested": requested,
            "computed": len(windows) - from_cache,
            "computed_by_this_rank": self._computed_here,
            "from_cache": from_cache,
            "skipped": {k: v for k, v in skipped.items()},
            "skipped_total": int(sum(skipped.values())),
            "suspended_bars_dropped": int(sum(s.dropped for s in series.values())),
            "suspended_bars_filled": int(sum(s.filled for s in series.values())),
            "cache_corrupt_recomputed": corrupt,
            "lookback": lookback,
            "min_history": min_history,
            "max_context": self.max_context_,
            "model": self.source_,
            "device": str(self.device_),
            "dtype": str(self._loaded["dtype"]).replace("torch.", ""),
            "world_size": distributed.world_size(),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return table

    def _check_dates(self, dates, calendar: BarCalendar, tz) -> pd.DatetimeIndex:
        if isinstance(dates, (str, pd.Timestamp)) or np.isscalar(dates):
            dates = [dates]
        idx = _datetime_index(list(dates), "dates")
        if (idx.tz is None) != (tz is None):
            raise InputError(
                f"dates are timezone-{'naive' if idx.tz is None else 'aware'} but the panel's timestamps are "
                f"timezone-{'naive' if tz is None else 'aware'}; use the same convention"
            )
        idx = idx.unique().sort_values()
        times = calendar.times
        outside = idx[~idx.isin(times)]
        if len(outside):
            t = outside[0]
            if t < times[0] or t > times[-1]:
                where = f"outside the data ({times[0]} .. {times[-1]})"
            else:
                where = (
                    f"not a bar time of the panel (previous bar {times[times.searchsorted(t) - 1]})"
                )
            raise InputError(
                f"decision time {t} is {where}; {len(outside)} of {len(idx)} dates are not bar times"
            )
        return idx

    def _settings_digest(self, lookback: int) -> str:
        st = self._loaded
        settings = {
            "format": CACHE_FORMAT,
            "engine": _package_version(),  # a new release may change the numerics
            "weights": self.weights_digest(),
            "sample_count": int(self.sample_count),
            "T": float(self.T),
            "top_k": int(self.top_k),
            "top_p": float(self.top_p),
            "seed": int(self.seed),
            "clip": float(self.clip),
            "max_context": st["max_context"],
            "dtype": str(st["dtype"]),
            "device_type": torch.device(st["device"]).type,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def _run(self, windows, lookback: int, calendar: BarCalendar):
        """Sampled paths (samples, horizon, 6), de-normalised, for every window."""
        P, S = int(self.horizon), int(self.sample_count)
        future_of: dict = {}  # decision time -> (future bar times, their time features)
        for t, *_ in windows:
            if t not in future_of:
                times = calendar.future(t, P)
                future_of[t] = (times, time_features(times))
        futures = [future_of[w[0]][0] for w in windows]
        fstamps = [future_of[w[0]][1] for w in windows]
        cache = (
            ForecastCache(self.cache_dir)
            if (self.cache_dir is not None and self.seed is not None)
            else None
        )
        if self.cache_dir is not None and self.seed is None:
            warnings.warn(
                "seed=None samples afresh each run, so the forecast cache is not used", stacklevel=3
            )
        paths: list = [None] * len(windows)
        keys: list = [None] * len(windows)
        seeds = [None if self.seed is None else window_seed(self.seed, w[1], w[0]) for w in windows]
        if cache is not None:
            base = self._settings_digest(lookback)
            for i, (_t, _, s, end) in enumerate(windows):
                lo = max(0, end + 1 - lookback)
                h = hashlib.sha256(base.encode())
                h.update(s.x[lo : end + 1].tobytes())
                h.update(s.stamp[lo : end + 1].tobytes())
                h.update(fstamps[i].tobytes())
                h.update(str(seeds[i]).encode())
                keys[i] = h.hexdigest()
                paths[i] = cache.get(keys[i], (S, P, len(FEATURE_COLS)))
        from_cache = sum(p is not None for p in paths)
        distributed.barrier()  # every rank has looked up before any rank writes
        todo = [i for i, p in enumerate(paths) if p is None]
        mine = todo[distributed.rank() :: distributed.world_size()]
        computed = self._compute(
            [windows[i] for i in mine],
            [fstamps[i] for i in mine],
            [seeds[i] for i in mine],
            lookback,
        )
        for i, arr in zip(mine, computed):
            paths[i] = arr
            if cache is not None:
                cache.put(keys[i], arr)
        if distributed.active():
            for i, arr in distributed.gather(list(zip(mine, computed))):
                paths[i] = arr
        self._computed_here = len(mine)
        return paths, futures, from_cache, 0 if cache is None else cache.corrupt

    def _compute(self, windows, fstamps, seeds, lookback: int) -> list[np.ndarray]:
        from tqdm.auto import tqdm

        st = self._loaded
        P, S = int(self.horizon), int(self.sample_count)
        out: list = [None] * len(windows)
        groups: dict[int, list[int]] = {}
        for i, (_, _, _, end) in enumerate(windows):
            groups.setdefault(min(lookback, end + 1), []).append(i)
        batches = []
        for length, members in sorted(groups.items()):
            size = self._batch_windows(length)
            batches += [(length, members[k : k + size]) for k in range(0, len(members), size)]
        bar = tqdm(
            total=len(windows),
            desc="forecast",
            unit="win",
            disable=True
            if not self.progress or distributed.rank() != 0 or len(batches) < 2
            else None,
        )
        for length, members in batches:
            raw = np.stack(
                [windows[i][2].x[windows[i][3] + 1 - length : windows[i][3] + 1] for i in members]
            )
            stamp = np.stack(
                [
                    windows[i][2].stamp[windows[i][3] + 1 - length : windows[i][3] + 1]
                    for i in members
                ]
            )
            fstamp = np.stack([fstamps[i] for i in members])
            mean, std = scaler_stats(raw)
            x = normalize(raw, mean, std, self.clip)
            uniforms = (
                None if self.seed is None else uniforms_for_seeds([seeds[i] for i in members], S, P)
            )
            z = sample_paths(
                st["tokenizer"],
                st["model"],
                x,
                stamp,
                fstamp,
                st["max_context"],
                S,
                self.T,
                self.top_k,
                self.top_p,
                uniforms,
            )
            y = denormalize(z, mean[:, None], std[:, None]).astype(np.float32)
            for j, i in enumerate(members):
                out[i] = y[j]
            bar.update(len(members))
        bar.close()
        return out

    def _summarise(self, windows, paths) -> pd.DataFrame:
        qs = tuple(self.quantiles)
        cols = [
            "pred_return",
            "ret_mean",
            "ret_median",
            *map(_quantile_name, qs),
            "ret_std",
            "prob_up",
            "pred_vol",
        ]
        if self.return_paths:
            cols += [f"close_h{h + 1}" for h in range(int(self.horizon))]
        index = pd.MultiIndex.from_arrays(
            [
                pd.DatetimeIndex([w[0] for w in windows]),
                pd.Index([w[1] for w in windows], dtype=object),
            ],
            names=["datetime", "instrument"],
        )
        if not windows:
            return pd.DataFrame(columns=cols, index=index, dtype=float)
        close = np.stack([p[..., 3] for p in paths]).astype(np.float64)  # (N, S, P)
        c0 = np.array([w[2].close[w[3]] for w in windows])[:, None]
        ret = close[:, :, -1] / c0 - 1  # (N, S)
        prev = np.concatenate(
            [np.broadcast_to(c0[:, :, None], close[:, :, :1].shape), close[:, :, :-1]], axis=2
        )
        bar_ret = close / prev - 1
        data = {
            "pred_return": ret.mean(1),
            "ret_mean": ret.mean(1),
            "ret_median": np.median(ret, 1),
        }
        for q, v in zip(qs, np.quantile(ret, qs, axis=1)):
            data[_quantile_name(q)] = v
        data["ret_std"] = ret.std(1)
        data["prob_up"] = (ret > 0).mean(1)
        data["pred_vol"] = bar_ret.reshape(len(windows), -1).std(1)
        if self.return_paths:
            for h, v in enumerate(close.mean(1).T):
                data[f"close_h{h + 1}"] = v
        return pd.DataFrame(data, index=index, columns=cols)
