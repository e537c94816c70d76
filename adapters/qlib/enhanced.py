"""Qlib's EnhancedIndexingStrategy end to end on a provider folder: risk model, signal, backtest.

``enhanced_indexing_backtest`` needs a folder with the market's benchmark weights
(``kronos-alpha qlib-data weights``, ``$<market>_weight``) and a benchmark series; the shared
data is read-only, so run it on a copy (``subset.copy_provider``). Point in time throughout:

- the panel is every instrument that is a member of ``market`` on some day from the day
  before ``start`` to ``end``, with its bars from ``history_start`` (so exposures of a new
  member have their history);
- exposures (``strategies.factor_exposures``: beta on the benchmark, size, momentum,
  volatility, liquidity) and the risk model of day s use bars up to s only;
  ``write_riskmodel_files`` writes the folder of every day before a trade date, its universe
  that day's members (``members=``);
- the default signal is 20-day momentum, close_s / close_s-20 - 1, known at the close of s;
  Qlib trades it on the next day (``SignalWCache`` shifts by one step).

The book: ``CheckedEnhancedIndexingStrategy`` (ECOS, no silent cash), dealt at the close with
costs (5 bp to buy, 15 bp to sell, min 5), 9.5% limit moves, from ``account`` of cash; the
exchange also loads the day before ``start``, whose closes size day one's orders. Optimiser:
Qlib's defaults (``OPTIMIZER``) and |active exposure| <= ``style_bound`` per style factor; the
intercept's bound is 1 (free), since its active exposure is only the benchmark weight the
day's universe misses. ``book_exposures`` gives the active exposures of the optimiser's book
and of the book held.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from kronos_alpha.strategies.errors import StrategyInputError
from kronos_alpha.strategies.factors import daily_returns, factor_exposures
from kronos_alpha.strategies.neutralize import design_matrix
from kronos_alpha.strategies.panel import init_qlib, load_panel

from .checks import missing_field_files
from .riskmodel import write_riskmodel_files
from .strategies import CheckedEnhancedIndexingStrategy, book_exposures
from .weights import membership, read_spans, weight_field

OPTIMIZER = {"lamb": 1.0, "delta": 0.2, "b_dev": 0.01, "scale_return": True}  # Qlib's defaults
STYLE_BOUND = 0.1  # |active exposure| per style factor, in cross-sectional z units
EXCHANGE = {
    "freq": "day",
    "deal_price": "close",
    "limit_threshold": 0.095,
    "open_cost": 0.0005,
    "close_cost": 0.0015,
    "min_cost": 5.0,
}


@dataclass
class EnhancedIndexingRun:
    report: pd.DataFrame  # Qlib's daily portfolio report (return, bench, cost, turnover, ...)
    positions: dict  # date -> Qlib Position at that day's close
    strategy: CheckedEnhancedIndexingStrategy
    exposures: pd.DataFrame  # book_exposures: active exposures, (date, target|held) x factors
    factor_names: list[str]
    f_dev: np.ndarray  # the optimiser's bound per factor
    riskmodel_folders: list[Path]

    def invested(self) -> pd.Series:
        """Stock value over total value, per day (risk_degree when fully invested)."""
        return pd.Series(
            {d: 1 - p.get_cash() / p.calculate_value() for d, p in self.positions.items()}
        )

    def headline(self) -> dict:
        """Annualised (x238, Qlib's convention) return, excess return after costs, IR, max
        drawdown of the excess curve, mean daily turnover."""
        r = self.report
        excess = r["return"] - r["bench"] - r["cost"]
        curve = excess.cumsum()
        return {
            "days": len(r),
            "ann_return": float(r["return"].mean() * 238),
            "ann_bench": float(r["bench"].mean() * 238),
            "ann_excess_net": float(excess.mean() * 238),
            "information_ratio": float(excess.mean() / excess.std() * np.sqrt(238)),
            "tracking_error": float(excess.std() * np.sqrt(238)),
            "max_drawdown_excess": float((curve - curve.cummax()).min()),
            "turnover_day": float(r["turnover"].mean()),
        }


def momentum_score(panel: pd.DataFrame, window: int = 20) -> pd.Series:
    """close_s / close_s-window - 1 on traded bars, a (datetime, instrument) Series."""
    close = panel["close"].unstack()
    traded = panel["volume"].unstack() > 0
    mom = (close / close.shift(window) - 1).where(traded)
    return mom.stack().dropna().rename("score")


def market_members(provider: str | Path, market: str, calendar: pd.DatetimeIndex) -> pd.DataFrame:
    return membership(read_spans(Path(provider) / "instruments" / f"{market}.txt"), calendar)


def enhanced_indexing_backtest(
    provider: str | Path,
    riskmodel_root: str | Path,
    start: str,
    end: str,
    history_start: str,
    market: str = "csi300",
    benchmark: str = "SH000300",
    signal: pd.Series | None = None,
    optimizer_kwargs: dict | None = None,
    style_bound: float = STYLE_BOUND,
    risk_window: int = 60,
    account: float = 1e8,
    exchange_kwargs: dict | None = None,
) -> EnhancedIndexingRun:
    """Write the risk model, then run Qlib's backtest of the enhanced-indexing book."""
    from qlib.backtest import backtest
    from qlib.backtest.executor import SimulatorExecutor
    from qlib.data import D

    init_qlib(provider)
    calendar = pd.DatetimeIndex(D.calendar(freq="day"))
    trade_days = calendar[(calendar >= pd.Timestamp(start)) & (calendar <= pd.Timestamp(end))]
    if trade_days.empty:
        raise StrategyInputError(f"no trading day between {start} and {end} in {provider}")
    first = calendar.get_loc(trade_days[0])
    if first == 0:
        raise StrategyInputError(f"{start} is the calendar's first day: no day before to decide on")
    risk_dates = calendar[first - 1 : calendar.get_loc(trade_days[-1])]
    members = market_members(provider, market, calendar)
    active = members.loc[risk_dates[0] : trade_days[-1]]
    codes = sorted(active.columns[active.any()])
    missing = missing_field_files(codes, [weight_field(market)])
    if missing:
        miss = next(iter(missing.values()))
        raise StrategyInputError(
            f"{len(miss)} member(s) of {market!r} have no {weight_field(market)} field, e.g. "
            f"{miss[:5]}: write it with kronos-alpha qlib-data weights {provider} --market {market}"
        )
    panel, bench = load_panel(provider, codes, history_start, end, benchmark)
    exposures = factor_exposures(panel, bench)
    folders = write_riskmodel_files(
        daily_returns(panel), exposures, riskmodel_root, risk_dates, risk_window, members=members
    )
    day0 = exposures.xs(risk_dates[0], level="datetime")
    names = list(design_matrix(day0, risk_dates[0]).columns)
    f_dev = np.array([1.0 if n == "intercept" else style_bound for n in names])
    if signal is None:
        signal = momentum_score(panel)
    signal = signal[signal.index.get_level_values(0) >= risk_dates[0]]
    kwargs = {**OPTIMIZER, **(optimizer_kwargs or {}), "f_dev": f_dev.tolist()}
    strategy = CheckedEnhancedIndexingStrategy(
        signal=signal,
        riskmodel_root=str(riskmodel_root),
        market=market,
        optimizer_kwargs=kwargs,
        factor_names=names,
    )
    executor = SimulatorExecutor(time_per_step="day", generate_portfolio_metrics=True)
    portfolio, _ = backtest(
        start_time=trade_days[0],
        end_time=trade_days[-1],
        strategy=strategy,
        executor=executor,
        benchmark=benchmark,
        account=account,
        # quotes from the day before: Qlib's order generator sizes day one's orders with them
        exchange_kwargs={
            **EXCHANGE,
            "codes": codes,
            "start_time": risk_dates[0],
            **(exchange_kwargs or {}),
        },
    )
    report, positions = portfolio["1day"]
    return EnhancedIndexingRun(
        report=report,
        positions=positions,
        strategy=strategy,
        exposures=book_exposures(strategy.steps, positions),
        factor_names=names,
        f_dev=f_dev,
        riskmodel_folders=folders,
    )
