"""Calibrated uncertainty on CSI300: fit on one year, test on the next two (issue 15).

The bundled default checkpoint forecasts a seeded sample of CSI300 members (point-in-time
membership) on weekly decision dates with a 5-bar horizon. ``Forecaster.calibrate`` is fitted
on the fit year's dates; the test years are forecast raw and calibrated, and both are scored
against the realised close[t+5] / close[t] - 1:

- coverage of the central 50 / 80 / 90% intervals (raw: sample quantiles);
- Brier score of prob_up, against the test years' base rate (an oracle constant) and the fit
  year's base rate (the constant one could know at t);
- CRPS (raw: the samples; calibrated: its 99-quantile ensemble) against the historical-
  volatility Gaussian N(0, (60-bar std)^2 * 5) of the walk-forward report.

Prints one JSON object. 1 torch thread unless --threads.

    python benchmarks/calibration.py                    # ~10 minutes on a 2-core CPU
    python benchmarks/calibration.py --tune --instruments 60
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--provider", default=str(ROOT.parent / "shared/data/cn_daily_2010_2022"))
    p.add_argument("--instruments", type=int, default=100)
    p.add_argument("--fit-year", type=int, default=2019)
    p.add_argument("--test-years", type=int, default=2)
    p.add_argument("--horizon", type=int, default=5)
    p.add_argument("--every", type=int, default=5, help="decision dates: every n-th trading day")
    p.add_argument("--sample-count", type=int, default=5)
    p.add_argument("--tune", action="store_true", help="also tune T and top_p on the fit year")
    p.add_argument(
        "--scales",
        default="fitted",
        help="candidate scales, comma-separated (any of ret_std,pred_vol,hist_vol,ewma_vol,blend,fitted)",
    )
    p.add_argument("--drift", default="zero", choices=["zero", "fitted"])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import pandas as pd
    import torch
    from scipy.stats import norm

    torch.set_num_threads(a.threads)
    from kronos_alpha.strategies.forecast_metrics import (
        central_coverage,
        crps_gaussian,
        crps_samples,
        gaussian_interval,
    )
    from kronos_alpha.strategies.panel import init_qlib, load_panel

    from kronos_alpha import Forecaster
    from kronos_alpha.inference.calibration import crps_quantiles, grid_levels
    from kronos_alpha.inference.realised import realised_returns

    init_qlib(a.provider)
    from qlib.data import D

    first, last = f"{a.fit_year}-01-01", f"{a.fit_year + a.test_years}-12-31"
    pool = D.instruments("csi300")
    names = sorted(D.list_instruments(pool, start_time=first, end_time=last, as_list=True))
    rng = np.random.default_rng(0)
    names = sorted(rng.choice(names, min(a.instruments, len(names)), replace=False).tolist())
    start = pd.Timestamp(first) - pd.Timedelta(days=300)
    panel, _ = load_panel(
        a.provider, names, str(start.date()), f"{a.fit_year + a.test_years + 1}-01-31"
    )
    panel = panel[["open", "high", "low", "close", "volume"]]
    cal = pd.DatetimeIndex(D.calendar(start_time=first, end_time=last))[:: a.every]
    fit_dates = cal[cal.year == a.fit_year]
    test_dates = cal[cal.year > a.fit_year]

    fc = Forecaster(horizon=a.horizon, sample_count=a.sample_count, progress=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bundled-checkpoint notice
        fc.calibrate(
            panel, fit_dates, tune=a.tune, scales=tuple(a.scales.split(",")), drift=a.drift
        )
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = fc.forecast(panel, test_dates)
    test_s = time.perf_counter() - t0
    y = realised_returns(panel, table.index, a.horizon)
    close = panel["close"].unstack("instrument")
    vol = (close / close.shift(1) - 1).rolling(60).std().stack().reindex(table.index).to_numpy()
    sigma = vol * np.sqrt(a.horizon)
    ok = np.isfinite(y) & np.isfinite(sigma) & (sigma > 0)
    table, y, sigma = table[ok], y[ok], sigma[ok]
    raw = fc.sample_returns_.to_numpy()[ok]
    calq = fc.calibrated_returns_.to_numpy()[ok]
    up = (y > 0).astype(float)
    past_rate = fc.calibration_report_["up_rate"]  # the fit year's, known at the test's start

    def coverage(level):
        lo, hi = (1 - level) / 2, (1 + level) / 2
        q_raw = np.quantile(raw, [lo, hi], axis=1)
        q_cal = fc.calibrator_.quantiles(table, [lo, hi]).T
        return {
            "raw": central_coverage(*q_raw, y),
            "calibrated": central_coverage(*q_cal, y),
            "hist_vol_gaussian": central_coverage(*gaussian_interval(0 * y, sigma, level), y),
        }

    rate = float(up.mean())
    out = {
        "instruments": len(names),
        "fit_dates": len(fit_dates),
        "test_dates": len(test_dates),
        "test_pairs": int(ok.sum()),
        "horizon": a.horizon,
        "sample_count": a.sample_count,
        "threads": a.threads,
        "scales": a.scales,
        "drift": a.drift,
        "calibration": fc.calibration_report_,
        "coverage": {f"{int(lv * 100)}": coverage(lv) for lv in (0.5, 0.8, 0.9)},
        "coverage_q10_q90_calibrated": central_coverage(table["ret_q10"], table["ret_q90"], y),
        "brier": {
            "raw_prob_up": float(np.mean((table["raw_prob_up"] - up) ** 2)),
            "calibrated_prob_up": float(np.mean((table["prob_up"] - up) ** 2)),
            "hist_vol_gaussian": float(np.mean((1 - norm.cdf(0, 0, sigma) - up) ** 2)),
            "base_rate_test_oracle": rate * (1 - rate),
            "base_rate_fit_year": float(np.mean((past_rate - up) ** 2)),
            "test_up_rate": rate,
            "fit_up_rate": past_rate,
        },
        "crps": {
            "raw": float(crps_samples(raw, y).mean()),
            "calibrated": float(crps_quantiles(calq, y, grid_levels(calq.shape[1])).mean()),
            "hist_vol_gaussian": float(crps_gaussian(0 * y, sigma, y).mean()),
        },
        "seconds": {"calibrate": round(fit_s, 1), "forecast_test": round(test_s, 1)},
    }
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
