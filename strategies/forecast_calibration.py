"""Is a forecast distribution calibrated? Coverage, CRPS, Brier, reliability and PIT, with charts.

Shared by the walk-forward report and the ``evaluate`` report. Each model is a
:class:`Dist` on the same (t, instrument) rows, scored against realised h-bar returns ``y``:

- ``ensemble``: equally weighted members per row (Kronos's sampled returns, or the calibrated
  forecaster's 99 quantiles at levels (i + 0.5) / 99). Central intervals are the members'
  empirical quantiles (``method``: "linear" for samples, as the walk-forward's coverage80
  always was; "hazen" for a quantile grid, whose plotting positions are its levels); CRPS is
  the ensemble estimator (``forecast_metrics.crps_samples``).
- ``quantiles``: a few named quantile columns (a forecast table's ret_qNN): intervals only at
  the levels the columns give, and instead of the CRPS the quantile score
  2 x mean pinball loss over those levels (a coarse CRPS; every model in the table is then
  scored at the same levels).
- ``gaussian``: N(mu, sigma^2) (the historical-volatility baseline, mu = 0).

Probabilities: ``prob_up`` per row, P(R > 0), against the outcome 1{y > 0}. For the Gaussian
with mu = 0 it is 0.5 on every row (Brier 0.25): the baseline knows no direction. Brier scores
of two constant references: the test period's own up-frequency (known only afterwards, an
in-sample constant) and the past up-frequency known at t (``past_up_rate``).

PIT (probability integral transform, P(R <= y) under the forecast; uniform when calibrated):
Gaussian Phi((y - mu) / sigma); an ensemble's empirical CDF randomised within the cell of y's
rank, (rank + U) / (m + 1), so that a calibrated m-member ensemble gives a flat histogram
(the plain rank / m piles up at 0 and 1 for few members); quantile columns: uniform within
the levels of the two quantiles y falls between (0 and 1 beyond the outer ones), so the
histogram is flat when each cell between quantiles holds its share. U is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from .forecast_metrics import (
    central_coverage,
    crps_gaussian,
    crps_samples,
    gaussian_interval,
    newey_west_tstat,
)

COVERAGE_LEVELS = (0.5, 0.8, 0.9)
BINS = 10
GAUSSIAN = "hist_vol_gaussian"


@dataclass
class Dist:
    """One model's forecast distribution on the scored rows (see the module docstring)."""

    kind: str  # "ensemble", "quantiles" or "gaussian"
    prob_up: np.ndarray | None = None
    members: np.ndarray | None = None  # ensemble (n, m) / quantiles (n, L)
    levels: np.ndarray | None = None  # quantiles: their levels (L,)
    method: str = "linear"  # ensemble intervals: np.quantile method
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None

    def interval(self, level: float):
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        if self.kind == "gaussian":
            return gaussian_interval(self.mu, self.sigma, level)
        if self.kind == "ensemble":
            x = np.asarray(self.members, np.float64)
            return tuple(np.quantile(x, [lo_q, hi_q], axis=1, method=self.method))
        have = {round(float(v), 6): j for j, v in enumerate(self.levels)}
        if round(lo_q, 6) not in have or round(hi_q, 6) not in have:
            return None
        return self.members[:, have[round(lo_q, 6)]], self.members[:, have[round(hi_q, 6)]]

    def crps(self, y: np.ndarray, levels=None) -> np.ndarray:
        """CRPS per row; with ``levels``, the quantile score at those levels instead."""
        if levels is not None:
            q = self.quantiles_at(levels)
            d = y[:, None] - q
            return 2 * np.mean(np.maximum(levels * d, (levels - 1) * d), axis=1)
        if self.kind == "gaussian":
            return crps_gaussian(self.mu, self.sigma, y)
        if self.kind == "ensemble":
            return crps_samples(self.members, y)
        raise ValueError("quantile columns have no CRPS: score them at their levels")

    def quantiles_at(self, levels) -> np.ndarray:
        levels = np.asarray(levels, np.float64)
        if self.kind == "gaussian":
            return self.mu[:, None] + self.sigma[:, None] * norm.ppf(levels)[None, :]
        if self.kind == "ensemble":
            x = np.asarray(self.members, np.float64)
            return np.quantile(x, levels, axis=1, method=self.method).T
        return np.stack([np.interp(levels, self.levels, row) for row in self.members])

    def pit(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        u = rng.uniform(size=len(y))
        if self.kind == "gaussian":
            return norm.cdf((y - self.mu) / self.sigma)
        if self.kind == "ensemble":
            x = np.asarray(self.members, np.float64)
            below = (x < y[:, None]).sum(axis=1)
            ties = (x == y[:, None]).sum(axis=1)
            rank = below + np.floor(u * (ties + 1))  # a tie takes a random rank among equals
            return (rank + rng.uniform(size=len(y))) / (x.shape[1] + 1)
        lv = np.concatenate([[0.0], np.asarray(self.levels, np.float64), [1.0]])
        q = np.sort(np.asarray(self.members, np.float64), axis=1)
        cell = (q < y[:, None]).sum(axis=1)  # y between quantiles cell - 1 and cell
        return lv[cell] + u * (lv[cell + 1] - lv[cell])


def brier(p, outcome) -> float:
    p, o = np.asarray(p, np.float64), np.asarray(outcome, np.float64)
    ok = np.isfinite(p) & np.isfinite(o)
    return float(np.mean((p[ok] - o[ok]) ** 2)) if ok.any() else float("nan")


def past_up_rate(fwd: pd.DataFrame, horizon: int, days: int, eligible=None) -> pd.Series:
    """Per date t of ``fwd`` (wide: dates x instruments, the h-bar return stored at its
    decision date), the share of positive returns among decision dates d with
    t - h - days <= d <= t - h - 1 (bars): the up-frequency of the last ``days`` bars whose
    outcomes are realised at t. ``eligible``: the cells that count (default: every
    non-NaN one). NaN where none is."""
    ok = fwd.notna()
    if eligible is not None:
        ok &= eligible.reindex_like(fwd).fillna(False).astype(bool)
    up = ((fwd > 0) & ok).sum(axis=1).to_numpy(np.float64)
    n = ok.sum(axis=1).to_numpy(np.float64)
    cu, cn = np.concatenate([[0], np.cumsum(up)]), np.concatenate([[0], np.cumsum(n)])
    p = np.arange(len(fwd))
    hi = np.clip(p - horizon, 0, len(fwd))  # exclusive: d <= p - h - 1
    lo = np.clip(p - horizon - days, 0, len(fwd))
    count = cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(count > 0, (cu[hi] - cu[lo]) / count, np.nan)
    return pd.Series(rate, index=fwd.index)


def calibration_table(
    dists: dict,
    y: np.ndarray,
    past_rate=None,
    base: str | None = GAUSSIAN,
    levels=None,
    dates=None,
    lag: int = 0,
) -> pd.DataFrame:
    """Rows: every model, then the base-rate references. Columns: coverage at 50/80/90% (where
    the model gives that interval), CRPS (with ``levels``: the quantile score there), skill
    against ``base`` (1 - CRPS / base's), Brier of prob_up, pairs. With ``dates`` (each row's
    decision date), ``CRPS_diff_t_NW``: the Newey-West t-statistic (``lag``) of the per-date
    mean CRPS difference model - base (negative: the model is better), so a small skill can
    be told from noise."""
    y = np.asarray(y, np.float64)
    up = (y > 0).astype(np.float64)
    rows = {}
    scores = {name: d.crps(y, levels) for name, d in dists.items()}
    for name, d in dists.items():
        row = {}
        for a in COVERAGE_LEVELS:
            iv = d.interval(a)
            row[f"coverage{int(a * 100)}"] = np.nan if iv is None else central_coverage(*iv, y)
        row["CRPS"] = float(np.mean(scores[name]))
        row["Brier"] = brier(d.prob_up, up) if d.prob_up is not None else np.nan
        row["pairs"] = float(len(y))
        rows[name] = row
    table = pd.DataFrame(rows).T
    if base in table.index:
        table.insert(4, "CRPS_skill_vs_histvol", 1 - table["CRPS"] / table.loc[base, "CRPS"])
        if dates is not None:
            by_date = {
                name: pd.Series(scores[name] - scores[base]).groupby(np.asarray(dates)).mean()
                for name in dists
                if name != base
            }
            t = {name: newey_west_tstat(v.to_numpy(), lag)[2] for name, v in by_date.items()}
            table.insert(5, "CRPS_diff_t_NW", pd.Series(t))
    freq = float(up.mean())
    rows = {
        "base rate: test-period frequency (in-sample)": {"Brier": brier(np.full_like(up, freq), up)}
    }
    if past_rate is not None:
        past = np.asarray(past_rate, np.float64)
        rows["base rate: past frequency known at t"] = {"Brier": brier(past, up)}
    extra = pd.DataFrame(rows).T.assign(pairs=float(len(y)))
    return pd.concat([table, extra])


def reliability(dists: dict, y: np.ndarray, bins: int = BINS) -> pd.DataFrame:
    """Per model and prob_up bin (equal widths on [0, 1]): mean predicted, realised
    frequency of y > 0, rows."""
    up = (np.asarray(y, np.float64) > 0).astype(np.float64)
    out = []
    edges = np.linspace(0, 1, bins + 1)
    for name, d in dists.items():
        if d.prob_up is None:
            continue
        p = np.asarray(d.prob_up, np.float64)
        b = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
        for k in range(bins):
            m = b == k
            if m.any():
                out.append({"model": name, "bin": k, "predicted": p[m].mean(),
                            "realised": up[m].mean(), "rows": int(m.sum())})  # fmt: skip
    return pd.DataFrame(out)


def pit_histograms(dists: dict, y: np.ndarray, bins: int = BINS, seed: int = 0) -> pd.DataFrame:
    """Density of the PIT in ``bins`` equal bins per model (1 everywhere when calibrated)."""
    y = np.asarray(y, np.float64)
    cols = {}
    for name, d in dists.items():
        pit = d.pit(y, np.random.default_rng(seed))
        counts = np.histogram(np.clip(pit, 0, 1), bins=bins, range=(0, 1))[0]
        cols[name] = counts / max(len(y), 1) * bins
    return pd.DataFrame(cols, index=[f"{k / bins:.1f}-{(k + 1) / bins:.1f}" for k in range(bins)])


def charts(rel: pd.DataFrame, pit: pd.DataFrame, save, colour=None) -> None:
    """reliability.png (prob_up: predicted vs realised, rows per bin) and pit.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colour = colour or {}
    if not rel.empty:
        fig, (ax, bx) = plt.subplots(
            2, 1, figsize=(6.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly reliable")
        width = 1 / BINS / (rel["model"].nunique() + 1)
        for j, (name, g) in enumerate(rel.groupby("model", sort=False)):
            ax.plot(g["predicted"], g["realised"], "o-", label=name, color=colour.get(name))
            bx.bar(g["bin"] / BINS + (j + 0.5) * width, g["rows"], width=width,
                   color=colour.get(name), label=name)  # fmt: skip
        ax.set_ylabel("realised frequency of R > 0")
        ax.set_title("Reliability of prob_up")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        bx.set_xlabel("predicted P(R > 0) (bins of 0.1)")
        bx.set_ylabel("rows")
        bx.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        save(fig, "reliability.png")
    if not pit.empty:
        n = pit.shape[1]
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), sharey=True, squeeze=False)
        x = np.arange(pit.shape[0]) / pit.shape[0]
        for ax, name in zip(axes[0], pit.columns):
            ax.bar(x, pit[name], width=1 / pit.shape[0], align="edge", color=colour.get(name),
                   edgecolor="white")  # fmt: skip
            ax.axhline(1, color="k", lw=0.8, ls="--")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("PIT")
        axes[0][0].set_ylabel("density (1 = calibrated)")
        save(fig, "pit.png")


def markdown(table: pd.DataFrame, rel: pd.DataFrame, pit: pd.DataFrame, fmt_table) -> list[str]:
    """The report section's lines (``fmt_table``: the report's markdown_table)."""
    lines = [
        fmt_table(table),
        "",
        "PIT histogram (density per bin; 1 = calibrated; U-shaped = too narrow, hump = too wide):",
        "",
        fmt_table(pit.T),
        "",
        "Reliability of prob_up (rows per bin, realised frequency of R > 0 / mean predicted):",
        "",
    ]
    if rel.empty:
        return lines + ["(no prob_up)"]
    cells = rel.assign(cell=[f"{r:.2f} / {p:.2f} ({n})" for r, p, n in
                             zip(rel["realised"], rel["predicted"], rel["rows"])])  # fmt: skip
    wide = cells.pivot(index="model", columns="bin", values="cell").fillna("")
    wide = wide.reindex(pd.unique(rel["model"]))  # the models' order, not the alphabet
    wide.columns = [f"{k / BINS:.1f}-{(k + 1) / BINS:.1f}" for k in wide.columns]
    head = "| | " + " | ".join(wide.columns) + " |"
    lines += [head, "|---" * (wide.shape[1] + 1) + "|"]
    lines += [f"| {i} | " + " | ".join(row) + " |" for i, row in zip(wide.index, wide.to_numpy())]
    return lines


# -- a forecast table (the evaluate report) ------------------------------------------------
def quantile_levels(columns) -> dict:
    """{level: column} of a forecast table's ret_qNN columns (raw_ ones not included)."""
    out = {}
    for c in columns:
        if c.startswith("ret_q"):
            try:
                out[float(c[5:]) / 100] = c
            except ValueError:
                continue
    return dict(sorted(out.items()))


def from_forecast_table(
    table: pd.DataFrame, realised: pd.DataFrame, horizon: int, past=None, days: int = 250
) -> dict | None:
    """The calibration section of a forecast table (``Forecaster.forecast``'s columns, indexed
    (datetime, instrument)) against ``realised`` (wide, close[t+h]/close[t] - 1 stored at t):
    None when the table has no ret_qNN columns. Models: the table's distribution ("forecast",
    or "calibrated" and "raw" when it has raw_ columns) and, with a hist_vol column, the
    zero-mean Gaussian with hist_vol sqrt(h). Quantile columns give no CRPS: every model is
    scored by the quantile score at the table's levels. ``past`` (wide returns like
    ``realised``, over a longer history) gives the past base rate known at t."""
    qs = quantile_levels(table.columns)
    if not qs:
        return None
    y = realised.stack(future_stack=True)
    y.index.names = ["datetime", "instrument"]
    y = y.reindex(table.index)
    ok = y.notna().to_numpy()
    rows, y = table[ok], y[ok].to_numpy(np.float64)
    if len(y) == 0:
        return None
    levels = np.array(list(qs))
    calibrated = all(f"raw_{c}" in rows.columns for c in qs.values())
    dists = {}
    for name, prefix in (
        (("calibrated", ""), ("raw", "raw_")) if calibrated else (("forecast", ""),)
    ):
        prob = rows.get(f"{prefix}prob_up")
        dists[name] = Dist(
            "quantiles",
            prob_up=None if prob is None else prob.to_numpy(np.float64),
            members=rows[[prefix + c for c in qs.values()]].to_numpy(np.float64),
            levels=levels,
        )
    if "hist_vol" in rows.columns:
        sigma = rows["hist_vol"].to_numpy(np.float64) * np.sqrt(horizon)
        good = np.isfinite(sigma) & (sigma > 0)
        if good.all():
            dists[GAUSSIAN] = Dist("gaussian", prob_up=np.full(len(y), 0.5),
                                   mu=np.zeros(len(y)), sigma=sigma)  # fmt: skip
    past_rate = None
    if past is not None:
        rate = past_up_rate(past, horizon, days)
        past_rate = rate.reindex(rows.index.get_level_values("datetime")).to_numpy()
    table_out = calibration_table(dists, y, past_rate, levels=levels)
    return {
        "table": table_out.rename(
            columns={"CRPS": "quantile_score", "CRPS_skill_vs_histvol": "QS_skill_vs_histvol"}
        ),
        "reliability": reliability(dists, y),
        "pit": pit_histograms(dists, y),
        "levels": [float(v) for v in levels],
        "horizon": int(horizon),
        "days": int(days),
    }


def section_lines(section: dict, fmt_table) -> list[str]:
    """The evaluate report's calibration section."""
    h, lv = section["horizon"], ", ".join(f"{v:g}" for v in section["levels"])
    lines = [
        "## Calibration of the forecast distribution",
        "",
        f"Scored against close[t+{h}]/close[t] - 1 (h = --horizon: it must be the forecast's "
        f"horizon). The table's quantiles ({lv}) give the coverage of the central intervals they "
        "bound and, instead of the CRPS, the quantile score (2 x mean pinball loss at those "
        "levels; every model scored at the same levels; skill > 0 beats the historical-"
        "volatility Gaussian N(0, (hist_vol sqrt(h))^2), whose prob_up is 0.5). Brier of prob_up "
        "against 1{R > 0}; base rates: the period's own up-frequency (in-sample) and the "
        f"up-frequency of the pool over the last {section['days']} bars with realised outcomes, "
        "known at t. PIT: uniform within the quantile cell y falls in.",
        "",
    ]
    return lines + markdown(section["table"], section["reliability"], section["pit"], fmt_table)
