"""Risk-model files for Qlib's EnhancedIndexingStrategy, built from the panel's factor exposures.

Layout Qlib reads (``riskmodel_root/<YYYYMMDD>/``): ``factor_exp.pkl`` (instruments x factors),
``factor_cov.pkl`` (factors x factors), ``specific_risk.pkl`` (a Series by instrument: Qlib
takes its ``.values`` as the optimiser's vector, so a one-column frame would break the solve),
and an optional ``blacklist.pkl``. Qlib looks up the folder of the trading day *before* the
trade date.

Model: on each day s, a cross-sectional OLS of the daily returns of s on the exposures of s-1
gives factor returns f_s and residuals u_s. For a date t, ``factor_cov`` is the covariance of
f over the ``window`` days ending at t, ``specific_risk`` the std of each stock's residuals over
the same days, and ``factor_exp`` the exposures of t. Nothing after t is used.

The files are pickles because that is the format Qlib reads; each is written atomically
(``kronos_alpha.files.atomic_write``), so Qlib never reads half of one. Nothing here loads one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from kronos_alpha.strategies.errors import StrategyInputError
from kronos_alpha.strategies.neutralize import design_matrix

from kronos_alpha.files import atomic_write


def factor_returns(
    returns: pd.DataFrame, exposures: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(factor returns by date, residual returns wide) from r_s on X_{s-1} regressions."""
    by_date = dict(tuple(exposures.groupby(level=0)))
    # warm-up dates (no complete exposure row yet) are skipped; later gaps still raise
    complete = exposures.dropna().index.get_level_values(0)
    if complete.empty:
        raise StrategyInputError("the exposures have no complete row on any date")
    dates = [d for d in returns.index if d in by_date and d >= complete.min()]
    frows, urows = {}, {}
    for prev, date in zip(dates[:-1], dates[1:]):
        X = design_matrix(by_date[prev].droplevel(0), prev)
        y = returns.loc[date].reindex(X.index).dropna()
        if len(y) <= X.shape[1]:
            continue
        Xv = X.loc[y.index].to_numpy()
        beta, *_ = np.linalg.lstsq(Xv, y.to_numpy(), rcond=None)
        frows[date] = pd.Series(beta, index=X.columns)
        urows[date] = pd.Series(y.to_numpy() - Xv @ beta, index=y.index)
    return pd.DataFrame(frows).T, pd.DataFrame(urows).T


def write_pickle(path: Path, table: pd.DataFrame | pd.Series) -> Path:
    """One risk-model table in Qlib's format (a pandas pickle), atomically."""
    return atomic_write(path, lambda f: table.to_pickle(f))


def write_riskmodel_files(
    returns: pd.DataFrame,
    exposures: pd.DataFrame,
    root: str | Path,
    dates=None,
    window: int = 60,
    min_obs: int = 20,
    members: pd.DataFrame | None = None,
) -> list[Path]:
    """Write one Qlib risk-model folder per date in ``dates`` (default: every exposure date with a
    full window); returns the folders written. Stocks with fewer than ``min_obs`` residuals get
    no row (Qlib then treats them as highest risk / excluded from the universe).

    ``members`` (dates x instruments, True for a member that day, e.g. ``weights.membership``)
    restricts each date's universe, the rows of ``factor_exp`` and ``specific_risk``, to that
    date's members (point in time); the factor returns still use every instrument."""
    f, u = factor_returns(returns, exposures)
    if f.empty:
        raise StrategyInputError("no date has enough data for a factor-return regression")
    by_date = dict(tuple(exposures.groupby(level=0)))
    dates = f.index[window - 1 :] if dates is None else pd.DatetimeIndex(dates)
    root = Path(root)
    written = []
    for date in dates:
        hist_f = f.loc[:date].iloc[-window:]
        if len(hist_f) < min_obs:
            raise StrategyInputError(
                f"only {len(hist_f)} factor-return days before {date:%Y-%m-%d}"
            )
        X = design_matrix(by_date[date].droplevel(0), date)
        hist_u = u.loc[:date].iloc[-window:]
        spec = hist_u.std().where(hist_u.count() >= min_obs).dropna()
        names = X.index.intersection(spec.index)
        if members is not None:
            if date not in members.index:
                raise StrategyInputError(f"members has no row for {date:%Y-%m-%d}")
            today = members.loc[date]
            names = names.intersection(today.index[today.astype(bool)])
        folder = root / f"{date:%Y%m%d}"
        tables = {
            "factor_exp.pkl": X.loc[names],
            "factor_cov.pkl": hist_f[X.columns].cov(),
            "specific_risk.pkl": spec[names].rename("specific_risk"),
        }
        for name, table in tables.items():
            write_pickle(folder / name, table)
        written.append(folder)
    return written
