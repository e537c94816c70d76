"""Portfolio strategies built from predicted returns: top-K and risk-neutralised books.

Weights are wide DataFrames (index ``datetime``, columns ``instrument``); a row at t is the
target book decided at the close of t. See ``signal.py`` for the convention.

The Qlib strategy classes (``TopKWeightStrategy``, ``CheckedEnhancedIndexingStrategy``) and
the risk-model files Qlib's optimiser reads (``write_riskmodel_files``) live one layer up, in
``kronos_alpha.adapters.qlib``: the strategies never import the adapters.
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
from .signal import to_long, to_wide
from .topk import long_short_weights, topk_step, topk_weights

__all__ = [
    "STYLE_FACTORS",
    "Evaluation",
    "FactorMatrixError",
    "InfeasibleWeightsError",
    "StrategyInputError",
    "UniverseTooSmallError",
    "daily_returns",
    "estimate_covariance",
    "evaluate",
    "factor_exposures",
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
]
