"""Qlib strategies over the same pandas weight logic (``kronos_alpha.strategies.topk``), for
PortAnaRecord / backtest YAML.

    strategy:
      class: TopKWeightStrategy
      module_path: kronos_alpha.adapters.qlib
      kwargs: {signal: <PRED>, topk: 50, n_drop: 5, hold_period: 5, weighting: equal}

Qlib's account cannot hold short positions, so the Qlib classes are long-only; the long-short
book is available as the pandas function ``long_short_weights``. Attribute names never start
with ``_`` because Qlib's pickling drops those.
"""

from __future__ import annotations

import pandas as pd
from kronos_alpha.strategies.errors import InfeasibleWeightsError
from kronos_alpha.strategies.topk import topk_step
from qlib.contrib.strategy.signal_strategy import EnhancedIndexingStrategy, WeightStrategyBase


def day_scores(score, column: str | None) -> pd.Series:
    if isinstance(score, pd.DataFrame):
        score = score[column] if column is not None else score.iloc[:, 0]
    return score.astype(float)


class TopKWeightStrategy(WeightStrategyBase):
    """Long-only top-K with n_drop, hold period, turnover cap and equal/score weights.

    Each trading step calls ``topk_step`` with the live position's weights and holding days
    (``Position.get_stock_count``), exactly the step ``topk_weights`` walks in pandas.
    """

    def __init__(
        self,
        *,
        topk: int,
        n_drop: int | None = None,
        hold_period: int = 1,
        turnover_cap: float | None = None,
        weighting: str = "equal",
        column: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.topk = topk
        self.n_drop = n_drop
        self.hold_period = hold_period
        self.turnover_cap = turnover_cap
        self.weighting = weighting
        self.column = column

    def generate_target_weight_position(self, score, current, trade_start_time, trade_end_time):
        prev = pd.Series(current.get_stock_weight_dict(only_stock=True), dtype=float)
        age = pd.Series({s: current.get_stock_count(s, bar="day") for s in prev.index}, dtype=float)
        new = topk_step(
            day_scores(score, self.column),
            prev,
            age,
            self.topk,
            self.n_drop,
            self.hold_period,
            self.turnover_cap,
            self.weighting,
            date=trade_start_time,
        )
        return {k: float(v) for k, v in new.items() if v > 0}


class CheckedEnhancedIndexingStrategy(EnhancedIndexingStrategy):
    """Qlib's EnhancedIndexingStrategy that fails loudly instead of quietly holding cash.

    Qlib's optimiser solves with ECOS and, when it is missing or the solve fails, returns the
    current holding (all cash on day one) with only a log warning. This subclass requires ECOS
    up front and raises ``InfeasibleWeightsError`` when a date yields no invested book. The
    risk-model folder comes from ``write_riskmodel_files``.
    """

    def __init__(self, **kwargs):
        import cvxpy as cp

        if "ECOS" not in cp.installed_solvers():
            raise InfeasibleWeightsError(
                "EnhancedIndexingStrategy needs the ECOS solver (pip install ecos); "
                "without it Qlib silently keeps the book in cash"
            )
        super().__init__(**kwargs)

    def generate_target_weight_position(self, score, current, trade_start_time, trade_end_time):
        target = super().generate_target_weight_position(
            score, current, trade_start_time, trade_end_time
        )
        if target is not None and sum(target.values()) < 1e-6:
            raise InfeasibleWeightsError(
                f"enhanced-indexing optimisation on {pd.Timestamp(trade_start_time):%Y-%m-%d} "
                "returned no invested weight (solver failure); refusing an all-cash book"
            )
        return target
