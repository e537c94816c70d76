"""CSI300 2019-2022: a signal before and after risk neutralisation, side by side.

    python examples/strategies_neutralization.py                       # baseline signal
    python examples/strategies_neutralization.py --signal preds.parquet --column pred_return

Without --signal the example uses an honest BASELINE, not Kronos: the 5-day reversal
-(close_t / close_{t-5} - 1), which uses bars at or before t only. (Running Kronos over four
years of CSI300 is too slow for a CPU; produce a file with `kronos-alpha forecast` instead.)

IC / RankIC score the signal of t against Qlib's label close[t+2]/close[t+1] - 1 (as
`kronos-alpha evaluate` and Qlib's SigAnaRecord do; here from the pool panel, so a name's last
two member days before it leaves CSI300 have no label).

Books compared (all decided at the close of t, earning t -> t+1, costs 5 bp + 5 bp per unit
traded):
  raw top-K        long-only top 50 of the raw signal, n_drop 5
  residual top-K   long-only top 50 of the signal residualised on beta/size/momentum/vol/liquidity
  neutral L/S      cvxpy long-short book, |factor exposure| <= 0.05, |w| <= 2%, gross 1, net 0,
                   turnover <= 0.5 per weekly rebalance, Qlib shrinkage covariance

Writes each book's report, comparison.md and comparison.png (side by side: the books'
cumulative net returns against CSI300, and each book's mean |realised factor exposure|) under
--out (default runs/strategies_neutralization).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from kronos_alpha.strategies import (
    daily_returns,
    evaluate,
    factor_exposures,
    optimized_book,
    residualize,
    topk_weights,
    write_report,
)
from kronos_alpha.strategies.evaluation import markdown_table
from kronos_alpha.strategies.panel import load_panel

from kronos_alpha.charts import date_axis
from kronos_alpha.files import save_figure, write_text

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cn_daily_2010_2022"


def baseline_signal(panel: pd.DataFrame) -> pd.Series:
    close = panel["close"].unstack()
    traded = panel["volume"].unstack() > 0
    rev = -(close / close.shift(5) - 1)
    return rev.where(traded).stack().dropna().rename("score")


def chart(evs: dict, exp_table: pd.DataFrame, title: str):
    """Side by side: each book's cumulative net return with CSI300's, and each book's mean
    |realised exposure| per factor (grouped bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), width_ratios=[1.5, 1])
    colours = dict(zip(evs, plt.get_cmap("tab10").colors, strict=False))
    for name, ev in evs.items():
        wealth = (1 + ev.returns["net"].fillna(0.0)).cumprod() - 1
        left.plot(wealth.index, wealth, label=f"{name} (net)", color=colours[name], linewidth=1.3)
    bench = (1 + next(iter(evs.values())).returns["benchmark"].fillna(0.0)).cumprod() - 1
    left.plot(bench.index, bench, label="CSI300", color="black", linewidth=1.0, linestyle="--")
    left.axhline(0, color="grey", linewidth=0.6)
    left.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    left.set_ylabel("cumulative return")
    left.set_title("cumulative return after costs", fontsize=10)
    date_axis(left)
    left.grid(alpha=0.25)
    left.legend(loc="upper left", fontsize=8, framealpha=0.85)
    width = 0.8 / exp_table.shape[1]
    x = range(len(exp_table))
    for i, name in enumerate(exp_table.columns):
        right.bar([k + (i - (exp_table.shape[1] - 1) / 2) * width for k in x], exp_table[name],
                  width, label=name, color=colours[name])  # fmt: skip
    right.set_xticks(list(x), list(exp_table.index), fontsize=8)
    right.set_ylabel("mean |exposure| (z-score x weight)")
    right.set_title("realised factor exposure of each book", fontsize=10)
    right.grid(alpha=0.25, axis="y")
    right.legend(loc="upper left", fontsize=8, framealpha=0.85)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--provider-uri", default=str(DATA))
    ap.add_argument("--signal", help="parquet/CSV with datetime, instrument and a score column")
    ap.add_argument("--column", default="pred_return")
    ap.add_argument("--start", default="2019-01-01")
    ap.add_argument("--end", default="2022-12-30")
    ap.add_argument("--topk", type=int, default=50)
    ap.add_argument("--out", default="runs/strategies_neutralization", help="report folder")
    args = ap.parse_args()

    panel, bench = load_panel(args.provider_uri, "csi300", "2018-03-01", args.end)
    exposures = factor_exposures(panel, bench)
    if args.signal:
        from kronos_alpha.cli.evaluate import read_signal

        signal, _ = read_signal(args.signal, args.column)
        label = f"signal file {args.signal} ({args.column})"
    else:
        signal = baseline_signal(panel)
        label = "BASELINE 5-day reversal (not Kronos)"
    signal = signal.loc[args.start : args.end].dropna().rename("score")
    # keep names with a complete exposure row: residuals/optimiser need them, and the raw book
    # must face the same universe for a fair comparison (the count dropped is printed)
    complete = exposures.dropna().index
    kept = signal.index.intersection(complete)
    print(
        f"signal: {label}; {len(signal)} scores, {len(signal) - len(kept)} dropped for missing exposures"
    )
    signal = signal.loc[kept]

    residual = residualize(signal, exposures, column="score")
    books = {
        "raw top-K": (topk_weights(signal, args.topk, n_drop=5, column="score"), signal),
        "residual top-K": (topk_weights(residual, args.topk, n_drop=5), residual),
        "neutral L/S": (
            optimized_book(
                signal,
                exposures,
                daily_returns(panel),
                column="score",
                rebalance_every=5,
                max_exposure=0.05,
                lower=-0.02,
                upper=0.02,
                gross=1.0,
                net=(0.0, 0.0),
                turnover=0.5,
            ),
            signal,
        ),
    }
    rows, exp_rows, evs = {}, {}, {}
    out = Path(args.out)
    for name, (w, sig) in books.items():
        ev = evs[name] = evaluate(w, panel, bench, signal=sig, column="score", exposures=exposures)
        write_report(ev, out / name.replace(" ", "_").replace("/", ""), title=f"{label}: {name}")
        s = ev.summary
        rows[name] = {
            "IC": s.loc["IC", "gross"],
            "RankIC": s.loc["RankIC", "gross"],
            "ICIR": s.loc["ICIR", "gross"],
            "ann_return_gross": s.loc["annual_return", "gross"],
            "ann_return_net": s.loc["annual_return", "net"],
            "ann_vol_net": s.loc["annual_volatility", "net"],
            "sharpe_net": s.loc["sharpe", "net"],
            "max_dd_net": s.loc["max_drawdown", "net"],
            "calmar_net": s.loc["calmar", "net"],
            "IR_net_vs_CSI300": s.loc["information_ratio", "net"],
            "turnover_per_day": s.loc["turnover_per_day", "net"],
        }
        exp_rows[name] = ev.exposures.abs().mean()
        if (
            name == "neutral L/S"
        ):  # the bound holds on rebalance dates; the held book drifts between
            on_rebalance = ev.exposures.loc[w.index[::5]].abs().to_numpy().max()
            print(f"neutral L/S: max |exposure| on rebalance dates {on_rebalance:.5f} (bound 0.05)")
    bench_perf = ev.summary["benchmark"]
    table = pd.DataFrame(rows)
    exp_table = pd.DataFrame(exp_rows)
    pd.set_option("display.width", 140)
    print(f"\n{label}, CSI300 {args.start}..{args.end}, costs 10 bp per unit traded\n")
    print(table.round(4).to_string())
    print("\nmean |realised exposure| of each book (z-score units x weight)\n")
    print(exp_table.round(4).to_string())
    print(
        f"\nCSI300 benchmark: annual return {bench_perf['annual_return']:.4f}, vol "
        f"{bench_perf['annual_volatility']:.4f}, sharpe {bench_perf['sharpe']:.4f}, max dd "
        f"{bench_perf['max_drawdown']:.4f}"
    )
    write_text(
        out / "comparison.md",
        f"# {label}, CSI300 {args.start}..{args.end}\n\n{markdown_table(table)}\n\n"
        f"## mean |realised exposure|\n\n{markdown_table(exp_table)}\n\n"
        "![the books side by side](comparison.png)\n",
    )
    fig = chart(
        evs, exp_table, f"{label}, CSI300 {args.start}..{args.end}, costs 10 bp per unit traded"
    )
    save_figure(out / "comparison.png", fig, dpi=80)
    print(f"\nreports in {out}/")


if __name__ == "__main__":
    main()
