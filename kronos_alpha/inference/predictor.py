"""KronosPredictor: the published predictor's API (``predict``, ``predict_batch``) on top of
the cached generation engine. Migrating from upstream is a change of import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..model.zoo import check_compatible
from .data import sample_bars, time_features
from .device import auto_device, check_device, check_fits, window_bytes
from .generation import series_seed, uniforms_for_seeds
from .panel import (
    FEATURE_COLS,
    InputError,
    as_timestamps,
    ohlc_inconsistent,
    ohlcv_matrix,
    warn_inconsistent,
)
from .quantize import quantize_int8
from .settings import ForecastSettings, check_horizon, check_modes

__all__ = ["KronosPredictor", "Prepared", "auto_device", "prepare_batch", "prepare_series"]


@dataclass
class Prepared:
    """One series, validated: its bars and the stamps of context and forecast."""

    x: np.ndarray  # (L, 6) raw bars, float32
    stamp: np.ndarray  # (L, 5)
    future_stamp: np.ndarray  # (P, 5)
    index: pd.DatetimeIndex  # forecast timestamps
    name: str  # how errors name it: df, df_list[i] or the caller's name


def _stamps_of(indexes: list[pd.DatetimeIndex]) -> list[np.ndarray]:
    """``time_features`` of every index in one vectorised call (local wall-clock time, as
    time_features reads a timezone-aware index), split back per index."""
    wall = [(i.tz_localize(None) if i.tz is not None else i).values for i in indexes]
    feats = time_features(pd.DatetimeIndex(np.concatenate(wall)))
    return np.split(feats, np.cumsum([len(i) for i in indexes])[:-1])


def prepare_batch(
    df_list, x_timestamp_list, y_timestamp_list, pred_len: int, names=None
) -> list[Prepared]:
    """Validated series and their stamps (errors name ``names[i]``, by default
    ``df_list[i]``, or ``df`` for a single series). A timestamps object given for several
    series (one forecast calendar for a panel, say) is parsed once, and the stamps of all
    series come from one vectorised call."""
    if not isinstance(pred_len, (int, np.integer)) or pred_len <= 0:
        raise InputError(f"pred_len must be a positive integer, got {pred_len!r}")
    if names is None:
        names = [f"df_list[{i}]" for i in range(len(df_list))] if len(df_list) > 1 else ["df"]
    parsed: dict[tuple[int, str], tuple[object, pd.DatetimeIndex]] = {}

    def timestamps(ts, what: str) -> pd.DatetimeIndex:
        key = (id(ts), what)
        if key not in parsed:  # the object is kept with it, so its id stays its own
            parsed[key] = (ts, as_timestamps(ts, what))
        return parsed[key][1]

    series = []
    for df, x_ts, y_ts, name in zip(df_list, x_timestamp_list, y_timestamp_list, names):
        x = ohlcv_matrix(df, name)
        warn_inconsistent(ohlc_inconsistent(x), df.index, name, stacklevel=4)
        if len(x) < 2:
            raise InputError(f"{name} has a single row; a context needs at least 2 bars")
        xt, yt = timestamps(x_ts, "x_timestamp"), timestamps(y_ts, "y_timestamp")
        if len(xt) != len(x):
            raise InputError(f"x_timestamp has {len(xt)} entries but {name} has {len(x)} rows")
        if len(yt) != pred_len:
            raise InputError(f"pred_len is {pred_len} but y_timestamp has {len(yt)} entries")
        if str(xt.tz) != str(yt.tz):  # wall-clock stamps in two zones would disagree
            zone = [f"in time zone {i.tz}" if i.tz else "naive (no time zone)" for i in (xt, yt)]
            raise InputError(
                f"x_timestamp is {zone[0]} but y_timestamp is {zone[1]}; the calendar features "
                "read wall-clock time, so give both in one zone (tz_convert/tz_localize)"
            )
        if yt[0] <= xt[-1]:
            raise InputError(
                f"y_timestamp starts at {yt[0]}, not after the last context bar {xt[-1]}"
            )
        series.append((x, xt, yt, name))
    stamps = _stamps_of([s[1] for s in series] + [s[2] for s in series])
    n = len(series)
    return [
        Prepared(x, stamps[i], stamps[n + i], yt, name) for i, (x, _, yt, name) in enumerate(series)
    ]


def prepare_series(df, x_timestamp, y_timestamp, pred_len: int, name: str = "df") -> Prepared:
    """One series: ``prepare_batch`` of a single frame."""
    return prepare_batch([df], [x_timestamp], [y_timestamp], pred_len, [name])[0]


class KronosPredictor:
    """Forecasts OHLCV paths from a context of bars.

    ``seed`` (on the calls) makes sampling reproducible; ``predict_paths`` returns every
    sampled path rather than their mean. ``reference=True`` runs the published algorithm
    instead of the engine (full recompute per token, every path's window decoded whole):
    the same results, many times slower, kept to check and time the engine. ``int8=True``
    runs a quantised copy of the model (CPU, float32; see ``inference.quantize``).
    ``cuda_graphs=True`` replays the one-token steps as CUDA graphs (CUDA only; see
    ``inference.graphs``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        device: str | None = None,
        max_context: int = 512,
        clip: float = 5,
        reference: bool = False,
        int8: bool = False,
        cuda_graphs: bool = False,
    ):
        check_compatible(model, tokenizer)
        modes = ForecastSettings(int8=int8, cuda_graphs=cuda_graphs)  # validated
        int8 = modes.int8  # int8 runs on the CPU
        device = device or ("cpu" if int8 else auto_device())
        check_modes(modes, device, next(model.parameters()).dtype)
        self.device = check_device(device)
        self.model = model.to(self.device).eval()
        if int8:
            self.model = quantize_int8(self.model)  # a copy; the caller's model is kept
        self.tokenizer = tokenizer.to(self.device).eval()
        checked = ForecastSettings(max_context=max_context, clip=clip)
        self.max_context, self.clip = checked.max_context, checked.clip
        self.reference = bool(reference)
        self.int8, self.cuda_graphs = int8, modes.cuda_graphs

    # -- paths ---------------------------------------------------------------------------
    def predict_paths(
        self,
        df_list,
        x_timestamp_list,
        y_timestamp_list,
        pred_len: int,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        sample_count: int = 1,
        seed: int | None = None,
        verbose: bool = False,
    ) -> list[np.ndarray] | np.ndarray:
        """Every sampled path, de-normalised: one (sample_count, pred_len, 6) array per series.

        Series may have different context lengths; equal lengths are batched together. Given
        a single frame (as ``predict`` takes), it returns that series' array alone.
        """
        if isinstance(df_list, pd.DataFrame):  # one series, as predict() takes it
            return self.predict_paths(
                [df_list], [x_timestamp_list], [y_timestamp_list], pred_len,
                T, top_k, top_p, sample_count, seed, verbose,
            )[0]  # fmt: skip
        if not (len(df_list) == len(x_timestamp_list) == len(y_timestamp_list)):
            raise InputError(
                "df_list, x_timestamp_list and y_timestamp_list must have the same length"
            )
        if len(df_list) == 0:
            raise InputError("df_list is empty")
        prepared = prepare_batch(df_list, x_timestamp_list, y_timestamp_list, pred_len)
        # The one validation of generation settings (the Forecaster's), pred_len as horizon.
        s = ForecastSettings(
            horizon=pred_len,
            sample_count=sample_count,
            T=T,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            clip=self.clip,
            max_context=self.max_context,
        )
        check_horizon(s.horizon, self.max_context)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(len(p.x), []).append(i)
        # the Forecaster's memory check: refuse, before any work, a job that cannot fit
        dtype = next((w.dtype for w in self.model.parameters() if w.is_floating_point()), None)
        length = min(max(groups), self.max_context)
        per = window_bytes(self.model, self.tokenizer, dtype or torch.float32, length,
                           s.sample_count, pred_len, self.cuda_graphs)  # fmt: skip
        check_fits(per, len(prepared), max(map(len, groups.values())), s.sample_count, pred_len,
                   self.device)  # fmt: skip
        uniforms = None
        if seed is not None:
            # Series i always gets stream (seed, i): reproducible, batch-composition free.
            uniforms = uniforms_for_seeds(
                [series_seed(s.seed, i) for i in range(len(prepared))], s.sample_count, pred_len
            )
        out: list[np.ndarray | None] = [None] * len(prepared)
        for members in groups.values():
            y = sample_bars(
                self.tokenizer,
                self.model,
                np.stack([prepared[i].x for i in members]),
                np.stack([prepared[i].stamp for i in members]),
                np.stack([prepared[i].future_stamp for i in members]),
                self.max_context,
                s.sample_count,
                s.T,
                s.top_k,
                s.top_p,
                s.clip,
                None if uniforms is None else uniforms[members],
                reference=self.reference,
                progress=verbose,
                graphs=self.cuda_graphs,
                names=[prepared[i].name for i in members],
            )
            for j, i in enumerate(members):
                out[i] = y[j]
        return out

    # -- the published API ---------------------------------------------------------------
    def predict(
        self,
        df,
        x_timestamp,
        y_timestamp,
        pred_len,
        T=1.0,
        top_k=0,
        top_p=0.9,
        sample_count=1,
        verbose=True,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Mean forecast path as a DataFrame indexed by ``y_timestamp``."""
        return self.predict_batch(
            [df],
            [x_timestamp],
            [y_timestamp],
            pred_len,
            T,
            top_k,
            top_p,
            sample_count,
            verbose,
            seed,
        )[0]

    def predict_batch(
        self,
        df_list,
        x_timestamp_list,
        y_timestamp_list,
        pred_len,
        T=1.0,
        top_k=0,
        top_p=0.9,
        sample_count=1,
        verbose=True,
        seed: int | None = None,
    ) -> list[pd.DataFrame]:
        """One mean-path DataFrame per series, in input order."""
        paths = self.predict_paths(
            df_list,
            x_timestamp_list,
            y_timestamp_list,
            pred_len,
            T,
            top_k,
            top_p,
            sample_count,
            seed,
            verbose,
        )
        return [
            pd.DataFrame(
                p.mean(axis=0), columns=FEATURE_COLS, index=as_timestamps(yt, "y_timestamp")
            )
            for p, yt in zip(paths, y_timestamp_list)
        ]
