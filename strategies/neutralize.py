"""Residualisation: the part of the signal that the factor exposures do not explain, date by date."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import FactorMatrixError, StrategyInputError
from .signal import to_wide


def design_matrix(exposures_t: pd.DataFrame, date) -> pd.DataFrame:
    """One date's exposures, rows complete, with an intercept unless industry dummies span it.

    Raises ``FactorMatrixError`` naming the date when no row is complete (all-NaN) or the
    matrix is rank deficient (a constant column, duplicated factors, fewer rows than columns).
    """
    day = f"{pd.Timestamp(date):%Y-%m-%d}"
    if exposures_t.empty or exposures_t.notna().all(axis=1).sum() == 0:
        empty = [c for c in exposures_t.columns if exposures_t[c].isna().all()]
        raise FactorMatrixError(
            f"factor matrix on {day} has no complete row (all-NaN columns: {empty or 'none'})"
        )
    X = exposures_t.dropna(how="any").astype(float)
    if not any(c.startswith("ind_") for c in X.columns):
        X = X.assign(intercept=1.0)
    X = X.loc[:, ~((X == 0).all())] if any(c.startswith("ind_") for c in X.columns) else X
    rank = np.linalg.matrix_rank(X.to_numpy())
    if rank < X.shape[1]:
        const = [c for c in X.columns if c != "intercept" and X[c].std() < 1e-12]
        raise FactorMatrixError(
            f"factor matrix on {day} is singular: rank {rank} < {X.shape[1]} columns with "
            f"{X.shape[0]} complete rows (constant columns: {const or 'none'})"
        )
    return X


def residualize(
    signal: pd.Series | pd.DataFrame,
    exposures: pd.DataFrame,
    column: str = "pred_return",
    factors: list[str] | None = None,
) -> pd.DataFrame:
    """Cross-sectional OLS residual of the signal on the exposures, per date (wide frame).

    A residual is NaN where the score or any exposure is NaN (documented, not filled). Every
    signal date needs exposures: a missing, all-NaN or singular date raises ``FactorMatrixError``.
    """
    wide = to_wide(signal, column)
    if not isinstance(exposures.index, pd.MultiIndex):
        raise StrategyInputError("exposures must be indexed by (datetime, instrument)")
    if factors is not None:
        exposures = exposures[factors]
    by_date = dict(tuple(exposures.groupby(level=0)))
    out = pd.DataFrame(np.nan, index=wide.index, columns=wide.columns)
    for date, scores in wide.iterrows():
        if date not in by_date:
            raise FactorMatrixError(f"no factor exposures on {date:%Y-%m-%d}")
        X = design_matrix(by_date[date].droplevel(0), date)
        y = scores.reindex(X.index).dropna()
        X = X.loc[y.index]
        if len(y) <= X.shape[1] or np.linalg.matrix_rank(X.to_numpy()) < X.shape[1]:
            raise FactorMatrixError(
                f"factor matrix on {date:%Y-%m-%d} is singular over the {len(y)} scored "
                f"instruments ({X.shape[1]} columns)"
            )
        beta, *_ = np.linalg.lstsq(X.to_numpy(), y.to_numpy(), rcond=None)
        out.loc[date, y.index] = y.to_numpy() - X.to_numpy() @ beta
    return out
