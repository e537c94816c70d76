"""Qlib's EnhancedIndexingStrategy on the shared CSI300 data: a risk-neutral book, end to end.

    python examples/qlib/enhanced_indexing_csi300.py                     # 2021, into ./enhanced_indexing_run
    python examples/qlib/enhanced_indexing_csi300.py --start 2021-01-04 --end 2021-03-31 --run-dir /tmp/ei

The shared data is read-only and has no index weights, so the example first makes a writable
copy of the instruments it needs (every CSI300 member of the run, plus SH000300) under
``--run-dir``/qlib, then runs the same command a user would::

    kronos-alpha qlib-data weights RUN_DIR/qlib --market csi300 --benchmark CSI300EW

which writes ``$csi300_weight`` (equal weights over each day's members: the data has no market
cap; ``--cap-field`` takes one where a folder has it) and, from them, the benchmark series
CSI300EW (the equal-weighted members' index, dividends reinvested as Qlib's adjusted close
has them). The backtest is scored against CSI300EW because that is the index the optimiser
tracks; SH000300 (cap-weighted, price only) is printed alongside. A second run with the same
``--run-dir`` reuses the copy.

Signal: 20-day momentum, close_s / close_s-20 - 1, known at the close of s and traded on the
next day; an honest baseline, not Kronos (``--signal`` reads a parquet of Kronos predictions,
indexed by datetime and instrument, e.g. from KronosModel). Risk model:
``write_riskmodel_files`` (beta on CSI300EW, size, momentum, volatility, liquidity; 60-day
factor covariance), its universe each day's members. Optimiser: Qlib's defaults (lamb 1,
turnover <= 0.2 a day, |w - wb| <= 1%) and |active exposure| <= ``--bound`` per style factor,
solved by ECOS (``CheckedEnhancedIndexingStrategy`` refuses to run without it, and refuses a
failed solve rather than quietly holding cash). Dealt at the close, 5 bp to buy, 15 bp to
sell, 9.5% limit moves.

The copy holds the members of the run only, so its weights are the index's (those members
with data) on the run's days, not on earlier ones.

Measured on the 2-core CPU box, 2021 (243 trading days; 343 members over 2020-2021, 243-297
a day): copy 2-6 s, weights 1 s, risk model + backtest 33-39 s, 48 s in all (wall clock).
It printed, against CSI300EW after costs: return 6.97% a year (x238, Qlib's convention), benchmark 5.42%, excess
-2.76%, information ratio -0.32, tracking error 8.8%, max drawdown of the excess -9.4%,
turnover 0.18 a day, 78 names held, 94% invested (SH000300 fell 6.2% over the run).
Active style exposures, mean |.| over days: optimiser's book 0.07-0.10, max 0.10 on every
factor (the bound); held book 0.07-0.09, max 0.14-0.19 on days limit moves left orders
unfilled. Momentum as a signal lost money in 2021; the point here is the book's risk, which
stays where the optimiser puts it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from kronos_alpha.adapters.qlib.enhanced import enhanced_indexing_backtest, market_members
from kronos_alpha.adapters.qlib.subset import copy_provider
from kronos_alpha.adapters.qlib.weights import write_weights

from kronos_alpha.sample_data import shared_folder

DATA = shared_folder() / "data" / "cn_daily_2010_2022"
BENCH = "CSI300EW"


def prepare(src: Path, folder: Path, history_start: str, end: str) -> None:
    """The writable copy with $csi300_weight and CSI300EW (skipped when already there)."""
    if (folder / "features" / BENCH.lower() / "close.day.bin").exists():
        print(f"reusing {folder}")
        return
    cal = pd.DatetimeIndex(pd.read_csv(src / "calendars" / "day.txt", header=None)[0])
    members = market_members(src, "csi300", cal).loc[history_start:end]
    codes = [c for c in members.columns[members.any()] if (src / "features" / c.lower()).is_dir()]
    t = time.time()
    copy_provider(src, folder, codes + ["SH000300"])
    print(f"copied {len(codes)} members + SH000300 into {folder} ({time.time() - t:.0f} s)")
    t = time.time()
    report = write_weights(folder, "csi300", benchmark=BENCH)
    per_day = market_members(folder, "csi300", cal).loc[history_start:end].sum(axis=1)
    print(
        f"wrote $csi300_weight for {report.members} instruments ({per_day.min()}-{per_day.max()} "
        f"members a day from {history_start}) and {BENCH} ({time.time() - t:.0f} s)"
    )


def exposure_table(run) -> pd.DataFrame:
    """Mean over days: the benchmark's and the held book's exposures, and the active ones."""
    styles = [n for n in run.factor_names if n != "intercept"]
    bench = pd.DataFrame({d: s["benchmark"] @ s[styles] for d, s in run.strategy.steps.items()}).T
    held = run.exposures.xs("held", level="kind")[styles]
    target = run.exposures.xs("target", level="kind")[styles]
    bound = pd.Series(run.f_dev[: len(styles)], index=styles)
    return pd.DataFrame(
        {
            "benchmark": bench.mean(),
            "book (held)": (bench + held).mean(),
            "active target mean|.|": target.abs().mean(),
            "active target max|.|": target.abs().max(),
            "active held mean|.|": held.abs().mean(),
            "active held max|.|": held.abs().max(),
            "bound": bound,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default=str(DATA), help="the (read-only) source provider folder")
    ap.add_argument("--run-dir", default="enhanced_indexing_run")
    ap.add_argument("--start", default="2021-01-04")
    ap.add_argument("--end", default="2021-12-31")
    ap.add_argument("--history-start", default="2020-01-02", help="bars for exposures from")
    ap.add_argument("--bound", type=float, default=0.1, help="|active exposure| per style factor")
    ap.add_argument("--signal", help="parquet of scores indexed by (datetime, instrument)")
    args = ap.parse_args()

    t0 = time.time()
    run_dir = Path(args.run_dir)
    folder = run_dir / "qlib"
    prepare(Path(args.data), folder, args.history_start, args.end)
    signal = None
    if args.signal:
        signal = pd.read_parquet(args.signal).iloc[:, 0].rename("score")
    t = time.time()
    run = enhanced_indexing_backtest(
        folder,
        run_dir / "riskmodel",
        args.start,
        args.end,
        args.history_start,
        market="csi300",
        benchmark=BENCH,
        signal=signal,
        style_bound=args.bound,
    )
    print(f"risk model + backtest: {time.time() - t:.0f} s")
    from qlib.data import D

    sh = D.features(["SH000300"], ["$close"], args.start, args.end)["$close"]
    head = run.headline()
    head["SH000300 return over the run"] = float(sh.iloc[-1] / sh.iloc[0] - 1)
    head["mean names held"] = float(
        pd.Series([len(p.get_stock_list()) for p in run.positions.values()]).mean()
    )
    head["mean invested"] = float(run.invested().mean())
    print(f"\nheadline ({args.start} .. {args.end}, against {BENCH}, after costs)")
    for k, v in head.items():
        print(f"  {k:32s} {v: .4f}" if isinstance(v, float) else f"  {k:32s} {v}")
    print("\nfactor exposures (cross-sectional z units), mean over days")
    print(exposure_table(run).round(4).to_string())
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
