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

import numpy as np
import pandas as pd
from kronos_alpha.strategies.errors import InfeasibleWeightsError, StrategyInputError
from kronos_alpha.strategies.topk import topk_step
from qlib.contrib.strategy.optimizer import EnhancedIndexingOptimizer
from qlib.contrib.strategy.signal_strategy import EnhancedIndexingStrategy, WeightStrategyBase
from qlib.utils import get_pre_trading_date


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


class CheckedOptimizer(EnhancedIndexingOptimizer):
    """Qlib's enhanced-indexing optimiser that says when it fell back: Qlib's returns its
    ``w0`` argument itself when both of its solves fail, and then ``fell_back`` is True."""

    def __call__(self, r, F, cov_b, var_u, w0, wb, mfh=None, mfs=None):
        w = super().__call__(r=r, F=F, cov_b=cov_b, var_u=var_u, w0=w0, wb=wb, mfh=mfh, mfs=mfs)
        self.fell_back = w is w0
        return w


class CheckedEnhancedIndexingStrategy(EnhancedIndexingStrategy):
    """Qlib's EnhancedIndexingStrategy that fails loudly instead of quietly holding cash.

    Qlib's strategy, left alone, keeps the current book (all cash on day one) with only a log
    line when ECOS is missing, when both solves fail, or when the day has no risk-model
    folder, and reads absent benchmark weights as 0 (the optimiser then tracks nothing). This
    subclass requires ECOS up front and raises ``InfeasibleWeightsError`` on a failed solve or
    an all-cash book, and ``StrategyInputError`` on a date without a risk-model folder
    (unless ``skip_missing_days``) or without ``$<market>_weight`` (write it with
    ``kronos-alpha qlib-data weights``). The risk-model folder comes from
    ``write_riskmodel_files``.

    The optimisation inputs are Qlib 0.9.7's, step for step (score, current weight over
    risk_degree, ``$<market>_weight`` and ``$volume`` of the day before over
    ``D.instruments("all")``, blacklist); only the two ``D.features`` reads are made once for
    the whole backtest instead of twice a day (``day_inputs``), which on CSI300 is most of
    the run time. A test holds the two methods to the same targets.

    ``steps`` records every solved date: trade date -> a frame indexed by the day's universe
    with the factor exposures (columns ``factor_names``, default f0, f1, ...), ``benchmark``
    (the weights ``wb`` read) and ``target`` (the optimiser's weights); ``book_exposures``
    turns them and the backtest's positions into active exposures.
    """

    def __init__(self, *, factor_names=None, skip_missing_days: bool = False, **kwargs):
        import cvxpy as cp

        if "ECOS" not in cp.installed_solvers():
            raise InfeasibleWeightsError(
                "EnhancedIndexingStrategy needs the ECOS solver (pip install ecos); "
                "without it Qlib silently keeps the book in cash"
            )
        super().__init__(**kwargs)
        self.optimizer = CheckedOptimizer(**kwargs.get("optimizer_kwargs", {}))
        self.factor_names = list(factor_names) if factor_names is not None else None
        self.skip_missing_days = skip_missing_days
        self.steps = {}
        self.inputs = {}

    def day_inputs(self, pre_date) -> pd.DataFrame:
        """``$<market>_weight`` and ``$volume`` of ``pre_date`` by instrument (all of them),
        read with every later day of the backtest on the first call."""
        from qlib.data import D

        pre_date = pd.Timestamp(pre_date)
        if pre_date not in self.inputs:
            cal = getattr(self, "trade_calendar", None)
            end = cal.get_all_time()[1] if cal is not None else None
            end = max(pd.Timestamp(end), pre_date) if end is not None else pre_date
            fields = [f"${self.market}_weight", "$volume"]
            df = D.features(D.instruments("all"), fields, start_time=pre_date, end_time=end)
            df.columns = ["weight", "volume"]
            for date, day in df.groupby(level="datetime"):
                self.inputs[pd.Timestamp(date)] = day.droplevel("datetime")
            self.inputs.setdefault(pre_date, pd.DataFrame(columns=["weight", "volume"]))
        return self.inputs[pre_date]

    def generate_target_weight_position(self, score, current, trade_start_time, trade_end_time):
        day = f"{pd.Timestamp(trade_start_time):%Y-%m-%d}"
        pre_date = get_pre_trading_date(trade_start_time, future=True)
        risk = self.get_risk_data(pre_date)
        if risk is None:
            if self.skip_missing_days:
                return None
            raise StrategyInputError(
                f"no risk-model folder {self.riskmodel_root}/{pre_date:%Y%m%d} for trade date "
                f"{day} (Qlib reads the day before); write it with write_riskmodel_files or "
                "pass skip_missing_days=True to keep the book that day"
            )
        F, cov_b, spec, universe, blacklist = risk
        r = score.reindex(universe).fillna(score.min()).to_numpy()
        held = current.get_stock_weight_dict(only_stock=False)
        w0 = np.array([held.get(s, 0) for s in universe]) / self.get_risk_degree(trade_start_time)
        inputs = self.day_inputs(pre_date).reindex(universe)
        wb = inputs["weight"].fillna(0).to_numpy(dtype=float)
        if wb.sum() < 1e-9:
            raise StrategyInputError(
                f"no benchmark weight ${self.market}_weight on {pre_date:%Y-%m-%d} for the "
                f"risk model's universe: write it with kronos-alpha qlib-data weights "
                f"--market {self.market}"
            )
        tradable = inputs["volume"].gt(0).to_numpy()
        w = self.optimizer(
            r=r,
            F=F,
            cov_b=cov_b,
            var_u=spec**2,
            w0=w0,
            wb=wb,
            mfh=~tradable,
            mfs=np.array([s in blacklist for s in universe], dtype=bool),
        )
        if self.optimizer.fell_back or w.sum() < 1e-6:
            raise InfeasibleWeightsError(
                f"enhanced-indexing optimisation on {day} failed (Qlib would keep the current "
                "book, or cash); loosen optimizer_kwargs (delta, b_dev, f_dev)"
            )
        names = self.factor_names or [f"f{j}" for j in range(F.shape[1])]
        step = pd.DataFrame(F, index=pd.Index(universe, name="instrument"), columns=names)
        step["benchmark"], step["target"] = wb, w
        self.steps[pd.Timestamp(trade_start_time)] = step
        return {s: x for s, x in zip(universe, w) if x > 0}


def book_exposures(steps: dict, positions: dict) -> pd.DataFrame:
    """Active factor exposures per trade date, (w - wb) @ F with the day's F and wb.

    Rows (date, kind): ``target`` is the optimiser's book; ``held`` the book held at the close
    of that date (``positions``: date -> Qlib ``Position``, as ``backtest`` returns them),
    its stock weights summing to 1 like the optimiser's. Columns: the factors, and
    ``outside`` (held weight in names outside the day's universe, which have no exposures).
    """
    rows = {}
    for date, step in sorted(steps.items()):
        F = step.drop(columns=["benchmark", "target"])
        wb = step["benchmark"]
        rows[(date, "target")] = pd.concat([(step["target"] - wb) @ F, pd.Series({"outside": 0.0})])
        pos = positions.get(date)
        if pos is None:
            continue
        held = pd.Series(pos.get_stock_weight_dict(only_stock=True), dtype=float)
        inside = held.reindex(F.index).fillna(0.0)
        out = float(held.drop(F.index, errors="ignore").sum())
        rows[(date, "held")] = pd.concat([(inside - wb) @ F, pd.Series({"outside": out})])
    frame = pd.DataFrame(rows).T
    frame.index.names = ["datetime", "kind"]
    return frame
