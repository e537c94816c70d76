"""Mean-variance books with factor neutrality, solved by cvxpy (Clarabel or ECOS).

maximise    alpha' w - risk_aversion * w' S w
subject to  |X' w| <= max_exposure            (each factor, X = z-scored exposures)
            lower <= w_i <= upper
            sum |w| <= gross,  net_min <= sum w <= net_max
            sum |w - w_prev| <= turnover       (when a previous book is given)

A solve that does not end ``optimal`` raises ``InfeasibleWeightsError``; the book is never
quietly replaced by cash or by the previous weights (Qlib's EnhancedIndexingOptimizer does that).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import InfeasibleWeightsError, StrategyInputError, check_numbers
from .neutralize import design_matrix
from .signal import to_wide

COV_METHODS = ("shrink", "structured", "ledoitwolf", "sample")


def estimate_covariance(
    returns: pd.DataFrame, method: str = "shrink", num_factors: int = 10
) -> pd.DataFrame:
    """Covariance of daily returns (rows dates, columns instruments), PSD, same column order.

    ``shrink``: Qlib ShrinkCovEstimator (Ledoit-Wolf shrinkage); ``structured``: Qlib
    StructuredCovEstimator (PCA factor model); ``ledoitwolf``: scikit-learn LedoitWolf on the
    demeaned, NaN-as-zero returns; ``sample``: pandas pairwise covariance.
    """
    if method not in COV_METHODS:
        raise StrategyInputError(f"cov method must be one of {COV_METHODS}, got {method!r}")
    cols = returns.columns
    short = [c for c in cols if returns[c].notna().sum() < 2]
    if short:
        raise StrategyInputError(f"fewer than 2 return observations for {short[:5]}")
    if method == "shrink":
        from qlib.model.riskmodel import ShrinkCovEstimator

        S = ShrinkCovEstimator(alpha="lw", nan_option="fill", scale_return=False).predict(
            returns.to_numpy(dtype=float, copy=True), is_price=False
        )
    elif method == "structured":
        from qlib.model.riskmodel import StructuredCovEstimator

        k = min(num_factors, len(returns) - 1, len(cols) - 1)
        S = StructuredCovEstimator(num_factors=k, nan_option="fill", scale_return=False).predict(
            returns.to_numpy(dtype=float, copy=True), is_price=False
        )
    elif method == "ledoitwolf":
        from sklearn.covariance import LedoitWolf

        X = (returns - returns.mean()).fillna(0.0).to_numpy()
        S = LedoitWolf(assume_centered=True).fit(X).covariance_
    else:
        S = returns.cov().fillna(0.0).to_numpy()
    S = np.asarray(S, dtype=float)
    S = 0.5 * (S + S.T)
    # guard against tiny negative eigenvalues so the quadratic form is convex
    S += np.eye(len(S)) * max(0.0, -np.linalg.eigvalsh(S).min()) * 1.01
    return pd.DataFrame(S, index=cols, columns=cols)


def optimize_weights(
    alpha: pd.Series,
    exposures: pd.DataFrame | None = None,
    cov: pd.DataFrame | None = None,
    prev: pd.Series | None = None,
    risk_aversion: float = 1.0,
    max_exposure: float = 0.01,
    lower: float = -0.05,
    upper: float = 0.05,
    gross: float = 1.0,
    net: tuple[float, float] = (0.0, 0.0),
    turnover: float | None = None,
    solver: str = "CLARABEL",
    date=None,
    tol: float = 1e-7,
) -> pd.Series:
    """One date's optimal weights over the instruments of ``alpha`` (NaN alphas are dropped).

    ``exposures``: instruments x factors (z-scored); ``cov``: instruments x instruments, both
    reindexed to alpha's names (a missing exposure or covariance row is an error). ``turnover``
    bounds sum|w - prev| (two-sided) when ``prev`` is given. Long-only: ``lower=0, net=(1, 1)``.
    """
    reals = dict(risk_aversion=(risk_aversion, 0.0), max_exposure=(max_exposure, 0.0),
                 lower=(lower, None), upper=(upper, None), gross=(gross, 0.0),
                 **{"net[0]": (net[0], None), "net[1]": (net[1], None)}, tol=(tol, 0.0))  # fmt: skip
    if turnover is not None:
        reals["turnover"] = (turnover, 0.0)
    check_numbers(reals=reals)  # no NaN or infinite bound reaches the solver
    day = f" on {pd.Timestamp(date):%Y-%m-%d}" if date is not None else ""
    a = alpha.dropna().astype(float)
    names = a.index
    n = len(names)
    if n == 0:
        raise StrategyInputError(f"no instrument has an alpha{day}")
    lo_net, hi_net = net
    if lower > upper or lo_net > hi_net:
        raise InfeasibleWeightsError(f"bounds are crossed: lower={lower} upper={upper} net={net}")
    if n * upper < lo_net or n * lower > hi_net:
        raise InfeasibleWeightsError(
            f"{n} instruments with weights in [{lower}, {upper}] cannot reach net in {net}{day}"
        )
    if min(abs(lo_net), abs(hi_net)) > gross and lo_net * hi_net > 0:
        raise InfeasibleWeightsError(f"net {net} exceeds gross {gross}{day}")
    w = cp.Variable(n)
    cons = [w >= lower, w <= upper, cp.norm1(w) <= gross, cp.sum(w) >= lo_net, cp.sum(w) <= hi_net]
    obj = a.to_numpy() @ w
    X = None
    if exposures is not None and exposures.shape[1] > 0:
        X = exposures.reindex(names)
        bad = X.index[X.isna().any(axis=1)]
        if len(bad):
            raise StrategyInputError(
                f"exposures missing{day} for {len(bad)} instruments, e.g. {list(bad[:5])}"
            )
        cons += [cp.abs(X.to_numpy().T @ w) <= max_exposure]
    if cov is not None:
        missing = names.difference(cov.index)
        if len(missing):
            raise StrategyInputError(
                f"covariance lacks{day} {len(missing)} instruments, e.g. {list(missing[:5])}"
            )
        S = cov.loc[names, names].to_numpy()
        obj = obj - risk_aversion * cp.quad_form(w, cp.psd_wrap(S))
    w0, forced = None, 0.0
    if turnover is not None and prev is not None and prev.abs().sum() > 0:
        w0 = prev.reindex(names).fillna(0.0).to_numpy()
        # names held but no longer scored must be sold: that part of the turnover is forced
        forced = float(prev.drop(names, errors="ignore").abs().sum())
        cons += [cp.norm1(w - w0) <= max(turnover - forced, 0.0)]
    prob = cp.Problem(cp.Maximize(obj), cons)
    try:
        prob.solve(solver=solver)
    except cp.error.SolverError as exc:
        raise InfeasibleWeightsError(f"solver {solver} failed{day}: {exc}") from None
    if prob.status != cp.OPTIMAL or w.value is None:
        raise InfeasibleWeightsError(
            f"portfolio optimisation{day} ended {prob.status!r}: the constraints (bounds "
            f"[{lower}, {upper}], gross {gross}, net {net}, |exposure| <= {max_exposure}, "
            f"turnover {turnover}) cannot be met together"
        )
    out = pd.Series(np.asarray(w.value).ravel(), index=names)
    out[out.abs() < 1e-10] = 0.0
    # trust but verify: a solver "optimal" within its own tolerance must also meet ours
    v = out.to_numpy()
    worst = {
        "bounds": max(lower - v.min(), v.max() - upper),
        "gross": np.abs(v).sum() - gross,
        "net": max(lo_net - v.sum(), v.sum() - hi_net),
    }
    if X is not None:
        worst["exposure"] = np.abs(X.to_numpy().T @ v).max() - max_exposure
    if w0 is not None:
        worst["turnover"] = np.abs(v - w0).sum() + forced - turnover
    broken = {k: float(x) for k, x in worst.items() if x > tol}
    if broken:
        raise InfeasibleWeightsError(
            f"solver {solver}{day} returned weights breaking {broken} (tol {tol})"
        )
    return out


def optimized_book(
    signal: pd.Series | pd.DataFrame,
    exposures: pd.DataFrame,
    returns: pd.DataFrame,
    column: str = "pred_return",
    rebalance_every: int = 5,
    cov_window: int = 60,
    cov_method: str = "shrink",
    factors: list[str] | None = None,
    progress: bool = True,
    **constraints,
) -> pd.DataFrame:
    """Factor-neutral optimised weights over time (wide), re-solved every ``rebalance_every`` dates.

    On each rebalance date t: alpha is the day's cross-sectionally z-scored signal (scaled to
    daily-return units by ``alpha_scale`` = 0.01 unless given), exposures are those of t, the
    covariance uses the ``cov_window`` daily returns ending at t (no look-ahead). Between
    rebalances the previous target is kept, so its exposures drift as the exposures move (use
    ``rebalance_every=1`` for a book neutral on every date). Names lacking an exposure or return history on a
    date are left out of that date's book. ``constraints`` go to :func:`optimize_weights`.
    """
    wide = to_wide(signal, column)
    alpha_scale = constraints.pop("alpha_scale", 0.01)
    if factors is not None:
        exposures = exposures[factors]
    by_date = dict(tuple(exposures.groupby(level=0)))
    returns = returns.reindex(columns=returns.columns.union(wide.columns))
    rows, prev = [], None
    dates = wide.index
    for i, date in enumerate(tqdm(dates, desc="optimise", disable=not progress)):
        if i % rebalance_every and prev is not None:
            rows.append(prev.rename(date))
            continue
        if date not in by_date:
            raise StrategyInputError(f"no factor exposures on {date:%Y-%m-%d}")
        X = design_matrix(by_date[date].droplevel(0), date).drop(
            columns="intercept", errors="ignore"
        )
        hist = returns.loc[:date].iloc[-cov_window:]
        enough = hist.notna().sum() >= max(2, cov_window // 2)
        s = wide.loc[date].dropna()
        names = s.index.intersection(X.index).intersection(enough[enough].index)
        if len(names) < 2:
            raise StrategyInputError(
                f"fewer than 2 instruments with score, exposures and returns on {date:%Y-%m-%d}"
            )
        a = (s[names] - s[names].mean()) / (s[names].std() or 1.0) * alpha_scale
        cov = estimate_covariance(hist[names], cov_method)
        new = optimize_weights(a, X.loc[names], cov, prev=prev, date=date, **constraints)
        prev = new
        rows.append(new.rename(date))
    out = pd.DataFrame(rows).reindex(columns=wide.columns).fillna(0.0)
    out.index = pd.DatetimeIndex(out.index, name="datetime")
    out.columns.name = "instrument"
    return out
