"""The walk-forward's probabilistic scores: is each Kronos model's h-bar return distribution
calibrated, against the historical-volatility Gaussian (``forecast_calibration`` has the
definitions)?

On the (t, instrument) pairs that every Kronos model forecast and whose realised return
``factors.forward_returns`` exists (clipped daily returns; NaN across a suspension):
- raw models (kronos_zero_shot, kronos_finetuned): their sampled returns, prob_up = the
  share of samples above 0, intervals from the samples' empirical quantiles (linear);
- calibrated models: the 99 calibrated quantiles (``Forecaster.calibrated_returns_``),
  prob_up = 1 - the calibrated CDF at 0, intervals from the grid (hazen: its levels);
- hist_vol_gaussian: N(0, (sigma_60 sqrt(h))^2), prob_up 0.5;
- the past base rate known at t: the up-share of the universe's h-bar returns (members
  traded at their decision date) over the last ``kronos.calibration.days`` bars whose
  outcomes are realised at t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import forecast_calibration as fcal
from ..factors import forward_returns
from ..forecast_metrics import central_coverage
from .config import CALIBRATED

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def collect_prob_up(results: list[dict]) -> pd.DataFrame:
    parts = [r["prob_up"] for r in results if "prob_up" in r]
    return pd.concat(parts).sort_index() if parts else pd.DataFrame()


def scored_rows(samples: dict, vol: pd.Series, data, cfg):
    """(index, y, sigma) of the pairs scored: in every model's samples, with y and sigma."""
    h = cfg["windows"]["horizon"]
    fwd = forward_returns(data.panel, h).stack(future_stack=True)
    fwd.index.names = ["datetime", "instrument"]
    common = None
    for s in samples.values():
        common = s.index if common is None else common.intersection(s.index)
    y = fwd.reindex(common)
    sigma = vol.reindex(common) * np.sqrt(h)
    ok = y.notna() & sigma.notna() & (sigma > 0)
    idx = common[ok.to_numpy()]
    return idx, y[idx].to_numpy(), sigma[idx].to_numpy()


def past_rate(data, cfg, idx: pd.MultiIndex) -> np.ndarray:
    h = cfg["windows"]["horizon"]
    fwd = forward_returns(data.panel, h).reindex(data.calendar)
    eligible = data.members & data.traded.reindex(columns=data.members.columns, fill_value=False)
    rate = fcal.past_up_rate(fwd.reindex(columns=eligible.columns), h,
                             cfg["kronos"]["calibration"]["days"], eligible)  # fmt: skip
    return rate.reindex(idx.get_level_values("datetime")).to_numpy()


def probabilistic(samples: dict, prob_up: pd.DataFrame, vol: pd.Series, data, cfg):
    """(calibration table, coverage-by-level curves, reliability, PIT densities)."""
    if not samples:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    idx, y, sigma = scored_rows(samples, vol, data, cfg)
    dists = {}
    for name, s in samples.items():
        calibrated = name in CALIBRATED
        p = prob_up[name].reindex(idx).to_numpy() if name in prob_up else None
        dists[name] = fcal.Dist("ensemble", prob_up=p, members=s.reindex(idx).to_numpy(),
                                method="hazen" if calibrated else "linear")  # fmt: skip
    mu = np.zeros_like(y)
    dists[fcal.GAUSSIAN] = fcal.Dist("gaussian", prob_up=np.full_like(y, 0.5), mu=mu, sigma=sigma)
    h = cfg["windows"]["horizon"]
    dates = idx.get_level_values("datetime")
    table = fcal.calibration_table(dists, y, past_rate(data, cfg, idx), dates=dates, lag=h - 1)
    curves = {
        name: [central_coverage(*d.interval(a), y) for a in LEVELS] for name, d in dists.items()
    }
    return (
        table,
        pd.DataFrame(curves, index=list(LEVELS)),
        fcal.reliability(dists, y),
        fcal.pit_histograms(dists, y),
    )
