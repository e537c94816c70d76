"""Style and industry factor exposures from an OHLCV panel, using only bars at or before each date.

Panel: long DataFrame indexed by (datetime, instrument) with ``close`` and ``volume`` (``factor``
and ``market_cap`` used when present). Suspended bars (volume <= 0 or NaN) have no return.
Daily returns are clipped to +/- ``clip_return`` (the CSI300 data holds a few absurd moves);
the clipping is part of the documented definition, not a silent fill.

Exposures, each z-scored across instruments per date (winsorised at +/-3 sigma):
  beta        rolling OLS slope of the stock's return on the benchmark return (``beta_window``)
  size        log market cap when ``market_cap`` is given, else log mean dollar volume
              (close / factor * volume, i.e. raw price times raw shares) over ``liquidity_window``
  momentum    sum of log returns from t - ``momentum_window`` to t - ``momentum_skip``
  volatility  std of daily returns over ``vol_window``
  liquidity   log Amihud illiquidity: mean |return| / dollar volume over ``liquidity_window``
  ind_<name>  0/1 industry dummies when ``industry`` (instrument -> industry) is given
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import StrategyInputError

STYLE_FACTORS = ("beta", "size", "momentum", "volatility", "liquidity")


def panel_wide(panel: pd.DataFrame, field: str) -> pd.DataFrame:
    if field not in panel.columns:
        raise StrategyInputError(
            f"panel has no column {field!r}; columns are {list(panel.columns)}"
        )
    if not isinstance(panel.index, pd.MultiIndex) or panel.index.nlevels != 2:
        raise StrategyInputError("panel must be indexed by a (datetime, instrument) MultiIndex")
    s = panel[field]
    if "datetime" in s.index.names and "instrument" in s.index.names:
        s = s.reorder_levels(["datetime", "instrument"])
    wide = s.unstack(level=1).sort_index().astype(float)
    wide.index = pd.DatetimeIndex(wide.index, name="datetime")
    wide.columns.name = "instrument"
    return wide


def daily_returns(panel: pd.DataFrame, clip_return: float | None = 0.3) -> pd.DataFrame:
    """Close-to-close returns (wide); NaN on suspended bars and on the bar after one."""
    close = panel_wide(panel, "close")
    volume = panel_wide(panel, "volume").reindex_like(close)
    traded = volume > 0
    ret = close / close.shift(1) - 1
    ret = ret.where(traded & traded.shift(1, fill_value=False))
    return ret.clip(-clip_return, clip_return) if clip_return else ret


def forward_returns(
    panel: pd.DataFrame, horizon: int = 1, clip_return: float | None = 0.3
) -> pd.DataFrame:
    """Return from the close of t to the close of t + horizon, stored at t (the label of t)."""
    ret = daily_returns(panel, clip_return)
    growth = np.log1p(ret)
    fwd = growth.rolling(horizon, min_periods=horizon).sum().shift(-horizon)
    return np.expm1(fwd)


def qlib_label(panel: pd.DataFrame, horizon: int = 1, delay: int = 1) -> pd.DataFrame:
    """The signal label (wide, stored at t): close[t + delay + horizon] / close[t + delay] - 1.

    The one label the signal metrics (IC, RankIC, quantile spreads) of ``evaluate`` score
    against. The default (delay 1, horizon 1) is Qlib's label ``Ref($close, -2)/Ref($close, -1)
    - 1``: a score known at the close of t is traded on t + 1 and earns t + 1 -> t + 2. Like
    Qlib's, it is plain close arithmetic, shifted along the panel's calendar: no clipping, and
    a suspended (flat) bar returns 0. It is computed in the precision of the panel's closes:
    float32 closes (Qlib's) give Qlib's float32 label bit for bit, ties included, so RankIC
    matches too; the result is float64. A name's closes after it leaves the panel are NaN
    here, whereas Qlib's label reads them: give the panel each name's full history for Qlib's
    value on its last member days (``kronos-alpha evaluate`` does).
    """
    if horizon < 1 or delay < 0:
        raise StrategyInputError(f"label needs horizon >= 1 and delay >= 0; got {horizon}, {delay}")
    close = panel_wide(panel, "close")
    if panel["close"].dtype == np.float32:
        close = close.astype(np.float32)  # exact: float32 -> float64 -> float32
    label = close.shift(-(delay + horizon)) / close.shift(-delay) - 1
    return label.astype(float)


def label_text(horizon: int = 1, delay: int = 1) -> str:
    """``qlib_label``'s definition in words, e.g. ``close[t+2]/close[t+1] - 1 (Qlib's label,
    Ref($close, -2)/Ref($close, -1) - 1)``."""

    def at(k):
        return f"close[t+{k}]" if k else "close[t]"

    def ref(k):
        return f"Ref($close, -{k})" if k else "$close"

    expr = f"{ref(delay + horizon)}/{ref(delay)} - 1"
    qlib = "Qlib's label, " if (horizon, delay) == (1, 1) else "in Qlib: "
    return f"{at(delay + horizon)}/{at(delay)} - 1 ({qlib}{expr})"


def rolling_beta(
    ret: pd.DataFrame, bench: pd.Series, window: int, min_periods: int
) -> pd.DataFrame:
    b = bench.reindex(ret.index)
    valid = ret.notna() & b.notna().to_numpy()[:, None]
    r = ret.where(valid)
    bb = pd.DataFrame(
        np.where(valid, b.to_numpy()[:, None], np.nan), index=ret.index, columns=ret.columns
    )
    roll = {"window": window, "min_periods": min_periods}
    mean_rb = (r * bb).rolling(**roll).mean()
    mean_r, mean_b = r.rolling(**roll).mean(), bb.rolling(**roll).mean()
    var_b = (bb * bb).rolling(**roll).mean() - mean_b**2
    return (mean_rb - mean_r * mean_b) / var_b.where(var_b > 1e-12)


def zscore(x: pd.DataFrame, clip: float = 3.0) -> pd.DataFrame:
    """Cross-sectional z-score per row, winsorised at +/- clip sigma and re-standardised."""

    def z(df):
        return df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1).where(lambda s: s > 0), axis=0)

    return z(z(x).clip(-clip, clip))


def factor_exposures(
    panel: pd.DataFrame,
    benchmark: pd.Series,
    industry: pd.Series | dict | None = None,
    beta_window: int = 60,
    momentum_window: int = 120,
    momentum_skip: int = 20,
    vol_window: int = 20,
    liquidity_window: int = 20,
    clip_return: float | None = 0.3,
) -> pd.DataFrame:
    """Exposures as a long DataFrame indexed by (datetime, instrument), one column per factor.

    ``benchmark`` is the benchmark's daily return, indexed by date. NaN where a window has too
    little history (at least 2/3 of it must be traded bars); callers decide what to do with those.
    """
    ret = daily_returns(panel, clip_return)
    bench = pd.Series(benchmark, dtype=float)
    bench.index = pd.DatetimeIndex(bench.index)
    if bench.reindex(ret.index).isna().all():
        raise StrategyInputError("benchmark returns share no dates with the panel")
    close = panel_wide(panel, "close")
    volume = panel_wide(panel, "volume").reindex_like(close)
    raw_price = (
        close / panel_wide(panel, "factor").reindex_like(close) if "factor" in panel else close
    )
    dollar_vol = (raw_price * volume).where(volume > 0)

    def mp(w):
        return max(2, int(np.ceil(w * 2 / 3)))

    out = {
        "beta": rolling_beta(ret, bench, beta_window, mp(beta_window)),
        "momentum": np.log1p(ret)
        .rolling(momentum_window - momentum_skip, min_periods=mp(momentum_window - momentum_skip))
        .sum()
        .shift(momentum_skip),
        "volatility": ret.rolling(vol_window, min_periods=mp(vol_window)).std(),
        "liquidity": np.log(
            (ret.abs() / dollar_vol)
            .rolling(liquidity_window, min_periods=mp(liquidity_window))
            .mean()
            .where(lambda x: x > 0)
        ),
    }
    if "market_cap" in panel.columns:
        out["size"] = np.log(
            panel_wide(panel, "market_cap").reindex_like(close).where(lambda x: x > 0)
        )
    else:
        out["size"] = np.log(
            dollar_vol.rolling(liquidity_window, min_periods=mp(liquidity_window)).mean()
        )
    cols = {name: zscore(out[name]).stack(future_stack=True) for name in STYLE_FACTORS}
    exp = pd.DataFrame(cols)
    exp.index.names = ["datetime", "instrument"]
    if industry is not None:
        dummies = industry_dummies(industry, exp.index.get_level_values("instrument"))
        exp = pd.concat([exp, dummies.set_axis(exp.index, axis=0)], axis=1)
    return exp


def industry_dummies(industry: pd.Series | dict, instruments: pd.Index) -> pd.DataFrame:
    """0/1 columns ``ind_<name>``; every instrument must have an industry (none is guessed)."""
    mapping = pd.Series(industry)
    missing = sorted(set(instruments) - set(mapping.index))
    if missing:
        raise StrategyInputError(
            f"industry mapping lacks {len(missing)} instruments, e.g. {missing[:5]}"
        )
    labels = mapping.reindex(instruments)
    dummies = pd.get_dummies(labels, prefix="ind", dtype=float)
    return dummies
