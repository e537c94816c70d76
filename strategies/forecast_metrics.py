"""Small statistics for honest signal and forecast evaluation.

- :func:`newey_west_tstat`: t-statistic of a mean under autocorrelation (Newey-West HAC,
  Bartlett weights). statsmodels is not a dependency of the project, so the estimator is
  written out here (a dozen lines) and tested against a hand-computed case.
- :func:`crps_samples`: the sample-based CRPS estimator E|X - y| - 0.5 E|X - X'| of an
  ensemble forecast (Gneiting & Raftery 2007, eq. 21), computed from sorted samples.
- :func:`crps_gaussian`: closed-form CRPS of a normal forecast, for the baseline.
- :func:`central_coverage`: share of outcomes inside the central interval of each level.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def newey_west_tstat(x, lag: int) -> tuple[float, float, float]:
    """(mean, Newey-West standard error, t-statistic) of the series ``x`` (NaN dropped).

    Long-run variance S = g0 + 2 sum_{j=1..lag} (1 - j/(lag+1)) g_j with autocovariances
    g_j = 1/n sum_t e_t e_{t-j}; the variance of the mean is S / n (as statsmodels' HAC on a
    constant, without small-sample correction). ``lag`` 0 is the plain iid standard error
    (with 1/n). Overlapping h-period labels make ``lag = h - 1`` the usual choice.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    if n < 2:
        return (float(x.mean()) if n else float("nan"), float("nan"), float("nan"))
    mean = x.mean()
    e = x - mean
    s = e @ e / n
    for j in range(1, min(lag, n - 1) + 1):
        s += 2 * (1 - j / (lag + 1)) * (e[j:] @ e[:-j]) / n
    se = float(np.sqrt(s / n)) if s > 0 else float("nan")
    return float(mean), se, float(mean / se) if se > 0 else float("nan")


def crps_samples(samples, y) -> np.ndarray:
    """CRPS per row of ``samples`` (n, m) against outcomes ``y`` (n,): lower is better.

    E|X - y| - 0.5 E|X - X'| over the m samples, with E|X - X'| from the sorted samples:
    (2 / m^2) sum_i (2i - m - 1) x_(i).
    """
    s = np.sort(np.asarray(samples, dtype=np.float64), axis=1)
    y = np.asarray(y, dtype=np.float64)
    m = s.shape[1]
    first = np.abs(s - y[:, None]).mean(axis=1)
    coef = 2 * np.arange(1, m + 1) - m - 1
    spread = 2.0 / m**2 * (s * coef).sum(axis=1)
    return first - 0.5 * spread


def crps_gaussian(mu, sigma, y) -> np.ndarray:
    """Closed-form CRPS of N(mu, sigma^2) at y: sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]."""
    mu, sigma, y = (np.asarray(a, dtype=np.float64) for a in (mu, sigma, y))
    z = (y - mu) / sigma
    return sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))


def central_coverage(lower, upper, y) -> float:
    """Share of outcomes y with lower <= y <= upper (NaN rows ignored)."""
    lower, upper, y = (np.asarray(a, dtype=np.float64) for a in (lower, upper, y))
    ok = np.isfinite(lower) & np.isfinite(upper) & np.isfinite(y)
    if not ok.any():
        return float("nan")
    return float(((y[ok] >= lower[ok]) & (y[ok] <= upper[ok])).mean())


def sample_interval(samples, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of each row of samples (empirical quantiles, linear)."""
    lo, hi = np.quantile(
        np.asarray(samples, np.float64), [(1 - level) / 2, (1 + level) / 2], axis=1
    )
    return lo, hi


def gaussian_interval(mu, sigma, level: float) -> tuple[np.ndarray, np.ndarray]:
    z = norm.ppf((1 + level) / 2)
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    return mu - z * sigma, mu + z * sigma


def ideal_sample_coverage(m: int, level: float = 0.8, draws: int = 100_000) -> float:
    """Coverage of the empirical central ``level`` interval of m samples when the outcome is
    one more draw from the same (Gaussian) distribution: below ``level`` for small m, the
    mark a perfectly calibrated m-sample forecast reaches (seeded simulation)."""
    rng = np.random.default_rng(0)
    s = rng.standard_normal((draws, m))
    return central_coverage(*sample_interval(s, level), rng.standard_normal(draws))
