"""How the calibrator's default scale was chosen: rolling calibrations on development dates.

The dates (2013-2015) lie before every test span the README reports (2016-2022 walk-forward,
2020-2021 calibration benchmark). The bundled default checkpoint forecasts 100 CSI300
members (seed 1, point-in-time membership) on weekly dates with the walk-forward's settings
(lookback 90, 8 samples, horizon 5). From 2014 on, every block of 4 decision dates is
calibrated (``inference.calibration.fit``) on the 50 dates before it whose outcome is
realised (purged by the horizon), once per candidate set of scales, and scored by CRPS
(99 calibrated quantiles) against the 60-bar historical-volatility Gaussian N(0, 5 sigma^2).

Prints one JSON object: CRPS and skill per candidate set, and the scales chosen.

    python benchmarks/calibration_scales.py      # ~4 minutes on 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {
    "hist_vol": ("hist_vol",),
    "ewma_vol": ("ewma_vol",),
    "fitted (the default)": ("fitted",),
    "held-out choice among the four older scales": ("ret_std", "pred_vol", "hist_vol", "blend"),
    "held-out choice among all six": (
        "ret_std", "pred_vol", "hist_vol", "ewma_vol", "blend", "fitted",
    ),
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--provider", default=str(ROOT.parent / "shared/data/cn_daily_2010_2022"))
    p.add_argument("--instruments", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import pandas as pd
    import torch

    torch.set_num_threads(a.threads)
    from kronos_alpha.strategies.forecast_metrics import crps_gaussian
    from kronos_alpha.strategies.panel import init_qlib, load_panel

    from kronos_alpha import Forecaster
    from kronos_alpha.inference.calibration import crps_quantiles, fit, grid_levels
    from kronos_alpha.inference.realised import realised_returns

    init_qlib(a.provider)
    from qlib.data import D

    first, last, horizon = "2013-01-01", "2015-12-31", 5
    pool = D.instruments("csi300")
    names = sorted(D.list_instruments(pool, start_time=first, end_time=last, as_list=True))
    rng = np.random.default_rng(1)
    names = sorted(rng.choice(names, min(a.instruments, len(names)), replace=False).tolist())
    panel, _ = load_panel(a.provider, names, "2012-01-01", "2016-02-28")
    panel = panel[["open", "high", "low", "close", "volume"]]
    dates = pd.DatetimeIndex(D.calendar(start_time=first, end_time=last))[::5]
    fc = Forecaster(horizon=horizon, sample_count=8, lookback=90, progress=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the bundled-checkpoint notice
        table = fc.forecast(panel, dates)
    forecast_s = time.perf_counter() - t0
    y = realised_returns(panel, table.index, horizon)
    close = panel["close"].unstack("instrument")
    vol = (close / close.shift(1) - 1).rolling(60).std().stack().reindex(table.index).to_numpy()
    ok = np.isfinite(y) & np.isfinite(vol) & (vol > 0)
    table, y, sigma = table[ok], y[ok], vol[ok] * np.sqrt(horizon)

    times = table.index.get_level_values("datetime")
    grid = times.unique().sort_values()
    levels = grid_levels()
    total, chosen, rows = Counter(), {k: Counter() for k in CANDIDATES}, 0
    for start in range(52, len(grid), 4):  # 52 weekly dates: the first year is calibration only
        test = times.isin(grid[start : start + 4])
        past = times.isin(grid[max(0, start - 51) : start - 1])  # one date purged: h = 5 bars
        total["gaussian"] += crps_gaussian(0, sigma[test], y[test]).sum()
        for name, scales in CANDIDATES.items():
            cal = fit(table[past], y[past], horizon, {}, "", scales=scales)
            q = cal.quantile_grid(table[test])
            total[name] += crps_quantiles(q, y[test], levels).sum()
            chosen[name][cal.scale] += 1
        rows += int(test.sum())
    gauss = total["gaussian"] / rows
    out = {
        "instruments": len(names),
        "decision_dates": len(grid),
        "scored_pairs": rows,
        "gaussian_crps": round(gauss, 6),
        "candidates": {
            name: {
                "crps": round(total[name] / rows, 6),
                "vs_gaussian_pct": round(100 * (total[name] / rows / gauss - 1), 2),
                "chosen": dict(chosen[name]),
            }
            for name in CANDIDATES
        },
        "threads": a.threads,
        "forecast_s": round(forecast_s, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
