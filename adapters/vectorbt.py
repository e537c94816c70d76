"""Kronos as a vectorbt indicator, plus a top-K rebalancing portfolio from its forecasts.

``KronosSignal`` is built with ``vbt.IndicatorFactory``. It is a thin shell over
``kronos_alpha.Forecaster``: the wide OHLCV frames become the forecaster's panel (one
instrument per column), and the forecast table is spread back into wide outputs. Windowing,
normalisation, sampling and the missing-bar policy are all the forecaster's::

    fc = Forecaster(model="kronos-small", cache_dir="~/.cache/kronos")
    sig = KronosSignal.run(open, high, low, close, volume, lookback=[32, 64], horizon=5,
                           sample_count=8, forecaster=fc)
    entries = sig.pred_return_above(0.01)          # thresholds never re-run the model
    exits = sig.prob_up_below([0.3, 0.4, 0.5])

Outputs: ``pred_return`` (mean predicted return over ``horizon`` bars from the close of each
bar), ``lower`` / ``upper`` (the ``quantiles`` of the sampled returns, default 0.1 and 0.9),
``prob_up``, and the forecast table's features of the same names (the strategies'
KRONOS_* feature columns): ``ret_std``, ``pred_vol``, ``path_mean``, ``path_min``,
``path_max``; each aligned with the bar the forecast is decided at (it uses only bars at or
before that bar). Every output has its generated threshold methods
(``sig.path_min_above(-0.02)``). The ``cache_func`` runs the forecaster once per distinct (lookback, horizon,
sample_count) combination of the run, over every column and bar in one batched call; every
other parameter sweep (thresholds via the generated ``*_above`` / ``*_below`` /
``*_crossed_above`` methods) works on those outputs only.

Parameters ``lookback``, ``horizon``, ``sample_count``: None (the default) takes the
forecaster's; a parameter left None has no column level. Run keywords: ``forecaster`` (a
``Forecaster``) or ``model`` (a zoo name, Hub id or folder, with ``tokenizer`` when needed);
``settings`` (a ``ForecastSettings`` to use instead of the forecaster's, or a mapping of changes
to them); ``seed``, ``cache_dir`` and ``calendar`` (None: the forecaster's; ``calendar`` says
where the future bar times come from, by default the exchange the column names name, e.g.
SH600000 -> XSHG, see ``kronos_alpha.inference.calendar``: never the frames' later rows). Each combination's settings are
one ``ForecastSettings.replace`` of those, validated there. vectorbt itself reads ``seed`` (an
integer also seeds numpy's global generator; None means not given), so fresh samples
(seed None) are asked for with ``settings=dict(seed=None)`` or a forecaster whose seed is None.
``quantiles`` (lower, upper) are the band outputs' levels; their default (0.1, 0.9) is the
signal's own, since the forecaster may report any number of quantiles and the two outputs need
two (the table holds both sets). ``nan_bars``: "raise" or "skip".

Calibrated forecasters: ``forecaster=fc`` after ``fc.calibrate(panel, past_dates)`` (or
``fc.set_calibrator(path)``): every combination's copy keeps the calibrator, so ``lower``,
``upper``, ``prob_up`` and ``ret_std`` are the calibrated distribution's (pred_return and the
path statistics are the samples'). The calibrator is fitted for one horizon: a ``horizon``
parameter (or ``settings``) with another raises ``CalibrationError`` before any forecast.

Warm-up and gaps: the first ``lookback - 1`` bars of each column are NaN, and so are bars the
forecaster skips (suspended: volume 0). Each column is checked by the input boundary
(``kronos_alpha.inference.feeds.check_feed_bars``, as backtrader's datas are): all-NaN bars
before an instrument's first priced bar or after its last (not yet listed / delisted in a wide
panel) are NaN outputs; a NaN price between those raises ``InputError`` naming the column, the
price and the bar, unless ``nan_bars="skip"`` hands it to the forecaster's suspended-bar policy.
A column without volume (all NaN or 0) is forecast from prices only, with a warning.

vectorbt 1.2.0 notes: the first call of a numba function compiles it (seconds); statistics
annualise with ``vbt.settings.returns["year_freq"]`` (365 days by default): use
``YEAR_FREQ`` ("252 days") for daily stock bars, e.g. ``pf.stats(settings=dict(year_freq=YEAR_FREQ))``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import vectorbt as vbt
from kronos_alpha.strategies import topk_weights
from kronos_alpha.strategies.signal import to_wide

from kronos_alpha.inference.feeds import check_feed_bars
from kronos_alpha.inference.panel import (
    PRICE_COLS,
    VOLUME_COL,
    InputError,
    instrument_name,
    numeric_matrix,
)
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

YEAR_FREQ = "252 days"
PARAMS = ("lookback", "horizon", "sample_count")  # the factory's parameters; None: the forecaster's
OUTPUTS = ("pred_return", "lower", "upper", "prob_up", *FEATURES)


def aligned_frames(frames: dict) -> dict[str, pd.DataFrame]:
    """The wide OHLCV inputs paired by column *name* and row time, never by position: the
    same instruments and bar times in every one, or an InputError naming the difference."""
    out = {k: v.to_frame() if isinstance(v, pd.Series) else v for k, v in frames.items()}
    close = out["close"]
    names = pd.Index(close.columns).map(instrument_name)
    if names.has_duplicates:
        raise InputError(
            f"close has repeated instrument column(s) {sorted(set(names[names.duplicated()]))}"
        )
    for key, frame in out.items():
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"{key} must be a DataFrame or Series, got {type(frame).__name__}")
        if set(frame.columns) != set(close.columns):
            extra = sorted(map(str, set(frame.columns) ^ set(close.columns)))
            raise InputError(
                f"{key} and close have different instrument columns (differing: {extra[:5]})"
            )
        if not frame.index.equals(close.index):
            raise InputError(f"{key} and close have different bar times (rows)")
        out[key] = frame[close.columns]  # by name, in close's order
    return out


def to_panel(open, high, low, close, volume, nan_bars: str = "raise") -> dict[str, pd.DataFrame]:
    """Wide (time x instrument) OHLCV frames -> the forecaster's {instrument: bars} panel.

    Rows outside an instrument's priced span stay as NaN bars (the forecaster skips them as
    not traded; their times remain its calendar); NaN prices inside the span are an error
    (``nan_bars="raise"``) or passed on as suspended bars (``"skip"``).
    """
    frames = aligned_frames(dict(zip((*PRICE_COLS, VOLUME_COL), (open, high, low, close, volume))))
    close = frames["close"]
    index = close.index
    if not isinstance(index, pd.DatetimeIndex):
        raise InputError(
            f"the bars need a DatetimeIndex (time features), got {type(index).__name__}"
        )
    panel = {}
    for col in close.columns:
        name = instrument_name(col)
        raw = pd.DataFrame({k: v[col] for k, v in frames.items()}, index=index)
        values = numeric_matrix(raw, list(raw.columns), f"instrument {name!r}")  # text, bool named
        df = pd.DataFrame(values, index=index, columns=raw.columns)
        if check_feed_bars(df, name, nan_bars, "column", stacklevel=3) is None:
            continue  # an instrument with no bars at all in this span: all outputs NaN
        panel[name] = df  # rows outside the span stay: NaN bars, yet the calendar's times
    if not panel:
        raise InputError("no column has any priced bar")
    return panel


def _wide(table: pd.DataFrame, column: str, index, columns) -> np.ndarray:
    wide = table[column].unstack("instrument")
    names = [instrument_name(c) for c in columns]
    return wide.reindex(index=index, columns=names).to_numpy(np.float64)


def combo_settings(
    start: ForecastSettings, combo, band, seed, cache_dir, calendar=None
) -> ForecastSettings:
    """One parameter combination's settings: one ``replace`` of ``start``, validated there."""
    # numpy scalars (vectorbt broadcasts params to arrays) as Python numbers, checked by the
    # settings: int() would truncate a lookback of 2.5 and fail on NaN
    changes = {
        k: v.item() if isinstance(v, np.generic) else v
        for k, v in zip(PARAMS, combo)
        if v is not None
    }
    given = (("seed", seed), ("cache_dir", cache_dir), ("calendar", calendar))
    changes.update({k: v for k, v in given if v is not None})
    return with_band(start.replace(**changes), band)


def kronos_cache(
    open,
    high,
    low,
    close,
    volume,
    lookbacks,
    horizons,
    sample_counts,
    forecaster=None,
    model=None,
    tokenizer=None,
    settings=None,
    seed=None,
    quantiles=(0.1, 0.9),
    cache_dir=None,
    nan_bars="raise",
    calendar=None,
):
    """The ``cache_func``: one batched forecaster call per distinct parameter combination."""
    quantiles = band_quantiles(quantiles)
    base = base_forecaster(forecaster, model, tokenizer, "KronosSignal.run")
    start = start_settings(base, settings)
    combos = {c: combo_settings(start, c, quantiles, seed, cache_dir, calendar)
              for c in dict.fromkeys(zip(lookbacks, horizons, sample_counts))}  # fmt: skip
    for s in combos.values():
        check_calibration(base, s, "KronosSignal.run")
    panel = to_panel(open, high, low, close, volume, nan_bars)
    base.load()
    columns = band_columns(quantiles, OUTPUTS)
    out = {}
    for combo, s in combos.items():
        table = base.with_settings(s).forecast(panel)  # shares the loaded model and calibrator
        out[combo] = tuple(_wide(table, c, close.index, close.columns) for c in columns)
    return out


def kronos_apply(open, high, low, close, volume, lookback, horizon, sample_count, cache, **kwargs):
    return cache[(lookback, horizon, sample_count)]


KronosSignal = vbt.IndicatorFactory(
    class_name="KronosSignal",
    short_name="kronos",
    input_names=["open", "high", "low", "close", "volume"],
    param_names=["lookback", "horizon", "sample_count"],
    output_names=list(OUTPUTS),
).from_apply_func(
    kronos_apply,
    cache_func=kronos_cache,
    keep_pd=True,
    pass_seed=True,  # vectorbt's own run keyword: hand it on to kronos_cache
    lookback=None,
    horizon=None,
    sample_count=None,
)


def _single_combo(signal) -> pd.DataFrame:
    """A KronosSignal output with parameter levels -> a plain date x instrument frame."""
    if isinstance(signal, pd.DataFrame) and isinstance(signal.columns, pd.MultiIndex):
        params = signal.columns.droplevel(-1).unique()
        if len(params) != 1:
            raise ValueError(
                f"the signal holds {len(params)} parameter combinations; select one "
                "(e.g. sig.pred_return[(64, 5, 8)]) before building a book"
            )
        signal = signal.droplevel(list(range(signal.columns.nlevels - 1)), axis=1)
    return signal


def topk_portfolio(
    close: pd.DataFrame,
    signal,
    k: int,
    n_drop: int | None = None,
    hold_period: int = 1,
    turnover_cap: float | None = None,
    weighting: str = "equal",
    every: int = 1,
    lag: int = 1,
    fees: float = 0.0015,
    slippage: float = 0.0005,
    init_cash: float = 1_000_000.0,
    freq="1D",
    **from_orders_kwargs,
):
    """A cross-sectional top-K book rebalanced from the strategies module's target weights.

    ``signal``: scores by (datetime, instrument) - a forecast table (``pred_return`` column), a
    wide frame, or a ``KronosSignal`` output of one parameter combination. Weights come from
    ``kronos_alpha.strategies.topk_weights`` (K, n_drop, hold_period, turnover_cap, weighting)
    on every ``every``-th date with scores (warm-up dates without any score are left out).
    A book decided at the close of t is traded ``lag`` bars later (default 1: at the next
    close) via ``vbt.Portfolio.from_orders(size_type="targetpercent", group_by=True,
    cash_sharing=True, call_seq="auto")``, sells before buys, with ``fees`` and ``slippage``
    as fractions of traded value. Returns ``(portfolio, target weights)``.
    """
    if lag < 0 or every < 1:
        raise ValueError(f"lag must be >= 0 and every >= 1, got lag={lag}, every={every}")
    scores = to_wide(_single_combo(signal))
    scores.columns = scores.columns.astype(str)
    scores = scores[scores.notna().any(axis=1)].iloc[::every]
    if scores.empty:
        raise InputError("the signal has no scores (all NaN: still in the warm-up?)")
    weights = topk_weights(scores, k, n_drop, hold_period, turnover_cap, weighting)
    close = close.copy()
    close.columns = close.columns.astype(str)
    missing = weights.columns.difference(close.columns)
    if len(missing):
        raise InputError(f"close has no column for instrument(s) {list(missing)[:5]}")
    pos = close.index.get_indexer(weights.index)
    if (pos < 0).any():
        raise InputError(f"signal date {weights.index[pos < 0][0]} is not a bar of close")
    size = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    exec_pos = pos + lag
    inside = exec_pos < len(close)
    size.iloc[exec_pos[inside]] = (
        weights[inside].reindex(columns=close.columns, fill_value=0.0).to_numpy()
    )
    pf = vbt.Portfolio.from_orders(
        close,
        size=size,
        size_type="targetpercent",
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        fees=fees,
        slippage=slippage,
        init_cash=init_cash,
        freq=freq,
        **from_orders_kwargs,
    )
    return pf, weights


__all__ = ["YEAR_FREQ", "KronosSignal", "kronos_cache", "to_panel", "topk_portfolio"]
