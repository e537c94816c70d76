"""Portfolio strategies built from predicted returns: top-K and risk-neutralised books.

Weights are wide DataFrames (index ``datetime``, columns ``instrument``); a row at t is the
target book decided at the close of t. See ``signal.py`` for the convention.
"""

from .errors import (
    FactorMatrixError,
    InfeasibleWeightsError,
    StrategyInputError,
    UniverseTooSmallError,
)
from .evaluation import Evaluation, evaluate, performance, realised_exposures, write_report
from .factors import STYLE_FACTORS, daily_returns, factor_exposures, forward_returns
from .neutralize import residualize
from .optimizer import estimate_covariance, optimize_weights, optimized_book
from .riskmodel import factor_returns, write_riskmodel_files
from .signal import to_long, to_wide
from .topk import long_short_weights, topk_step, topk_weights


def __getattr__(name):
    # the Qlib strategy classes import qlib's backtest stack: load them only when asked
    if name in ("TopKWeightStrategy", "CheckedEnhancedIndexingStrategy"):
        from . import qlib_strategies

        return getattr(qlib_strategies, name)
    raise AttributeError(name)


__all__ = [
    "STYLE_FACTORS",
    "CheckedEnhancedIndexingStrategy",
    "Evaluation",
    "FactorMatrixError",
    "InfeasibleWeightsError",
    "StrategyInputError",
    "TopKWeightStrategy",
    "UniverseTooSmallError",
    "daily_returns",
    "estimate_covariance",
    "evaluate",
    "factor_exposures",
    "factor_returns",
    "forward_returns",
    "long_short_weights",
    "optimize_weights",
    "optimized_book",
    "performance",
    "realised_exposures",
    "residualize",
    "to_long",
    "to_wide",
    "topk_step",
    "topk_weights",
    "write_report",
    "write_riskmodel_files",
]
