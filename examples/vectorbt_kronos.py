"""vectorbt with Kronos: a threshold sweep on one stock and a top-K book on CSI300 stocks.

Offline: bars from the shared Qlib folder (../shared/data/cn_daily_2010_2022), the model from
``--model`` (default: the bundled default checkpoint when the package has one, otherwise the
upstream-tiny fixture in ../shared/fixtures - a tiny test model, so the figures show the
plumbing, not Kronos' skill).

1. ``KronosSignal.run`` forecasts every bar of one stock once; entry thresholds on
   ``pred_return`` and exit thresholds on ``prob_up`` are swept on its outputs (no model
   re-runs) and fed to ``Portfolio.from_signals``.
2. ``topk_portfolio``: the top-K book of ``kronos_alpha.strategies.topk_weights`` over CSI300
   members, rebalanced every ``--every`` days with fees and slippage.

The chart (``--out``, default runs/vectorbt_kronos.png) puts the two side by side: every
swept rule's value against buy and hold of the stock, and the book's value against CSI300
and an equal-weight hold of its universe.

    python examples/vectorbt_kronos.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import vectorbt as vbt
from kronos_alpha.adapters.vectorbt import YEAR_FREQ, KronosSignal, topk_portfolio
from kronos_alpha.strategies.panel import init_qlib, load_panel

from kronos_alpha.charts import plot_lines
from kronos_alpha.files import save_figure
from kronos_alpha.inference.forecaster import Forecaster
from kronos_alpha.sample_data import shared_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_folder() / "data" / "cn_daily_2010_2022"
FIXTURE = shared_folder() / "fixtures" / "upstream-tiny"
DEFAULT = ROOT / "kronos_alpha" / "assets" / "default"
FIELDS = ["open", "high", "low", "close", "volume"]


def wide(panel: pd.DataFrame) -> list[pd.DataFrame]:
    return [panel[f].unstack("instrument") for f in FIELDS]


def csi300_members(start: str, end: str, n: int) -> list[str]:
    """The first n (by code) stocks that were CSI300 members over the whole span."""
    init_qlib(DATA)
    from qlib.data import D

    spans = D.list_instruments(D.instruments("csi300"), start_time=start, end_time=end)
    whole = [
        name
        for name, periods in spans.items()
        if any(a <= pd.Timestamp(start) and b >= pd.Timestamp(end) for a, b in periods)
    ]
    return sorted(whole)[:n]


def chart(stock, pf, close, pf_book, book_close, bench, book_title):
    """Left: each swept (entry, exit) rule's value on ``stock`` against buy and hold; right:
    the top-K book against CSI300 and an equal-weight hold of the universe (all from 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    value = pf.value() / pf.init_cash
    colours = plt.get_cmap("viridis")(
        np.linspace(0, 0.85, value.columns.get_level_values(0).nunique())
    )
    enter = {a: colours[i] for i, a in enumerate(value.columns.get_level_values(0).unique())}
    curves, styles = {}, {}
    for a, b in value.columns:
        name = f"enter pred_return > {a:.1%}, exit prob_up < {b:.0%}"
        curves[name] = value[(a, b)]
        styles[name] = {"color": enter[a], "linestyle": "-" if b == value.columns.levels[1][-1] else "--",
                        "linewidth": 1.1}  # fmt: skip
    curves["buy & hold"] = close / close.iloc[0]
    styles["buy & hold"] = {"color": "black", "linewidth": 1.8}
    plot_lines(left, curves, styles=styles, ylabel="value (start = 1)",
               title=f"{stock}: the swept rules (one forecast run)\nfees 15 bp + slippage 5 bp a trade")  # fmt: skip
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=7, frameon=False)
    book = pf_book.value() / pf_book.init_cash
    hold = (book_close / book_close.bfill().iloc[0]).mean(axis=1)
    plot_lines(right, {"top-K book": book, "CSI300 (SH000300)": (1 + bench).cumprod(),
                       f"equal-weight hold of the {book_close.shape[1]} names": hold},
               styles={"CSI300 (SH000300)": {"color": "grey"},
                       f"equal-weight hold of the {book_close.shape[1]} names": {"color": "#ff8f00"}},
               ylabel="value (start = 1)", title=book_title)  # fmt: skip
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stock", default="SH600519")
    ap.add_argument("--start", default="2020-01-01")
    ap.add_argument("--end", default="2021-06-30")
    ap.add_argument("--book-start", default="2021-01-01")
    ap.add_argument("--book-end", default="2021-06-30")
    ap.add_argument("--stocks", type=int, default=20, help="CSI300 members in the book's universe")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--every", type=int, default=5, help="rebalance every N trading days")
    ap.add_argument("--model", default=None, help="zoo name, Hub id or folder")
    ap.add_argument("--lookback", type=int, default=32)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--cache-dir", default=None, help="forecast cache (reruns are instant)")
    ap.add_argument("--out", default="runs/vectorbt_kronos.png", help="the chart")
    args = ap.parse_args(argv)
    vbt.settings.returns["year_freq"] = YEAR_FREQ  # daily stock bars: 252 trading days a year

    if args.model:
        model, tokenizer, label = args.model, None, args.model
    elif DEFAULT.is_dir():
        model, tokenizer, label = str(DEFAULT), None, "bundled default checkpoint"
    else:
        model, tokenizer = str(FIXTURE / "model"), str(FIXTURE / "tokenizer")
        label = "upstream-tiny test fixture"
    fc = Forecaster(model=model, tokenizer=tokenizer, cache_dir=args.cache_dir, progress=True)
    run_kw = dict(lookback=args.lookback, horizon=args.horizon, sample_count=args.samples)

    # 1. threshold sweep on one stock
    t0 = time.perf_counter()
    one, _ = load_panel(DATA, [args.stock], args.start, args.end)
    o, h, lo, c, v = wide(one)
    c_one = c
    sig = KronosSignal.run(o, h, lo, c, v, forecaster=fc, **run_kw)
    forecast_s = time.perf_counter() - t0
    enter_at, exit_at = [0.0, 0.005, 0.01, 0.02], [0.3, 0.6]  # prob_up moves in 1/samples steps
    combos = pd.MultiIndex.from_product(
        [enter_at, exit_at], names=["enter_above", "exit_prob_below"]
    )
    # thresholds work on the outputs: the model ran once above
    entries = pd.concat(
        [sig.pred_return_above(a).iloc[:, 0] for a, _ in combos], axis=1, keys=combos
    )
    exits = pd.concat([sig.prob_up_below(b).iloc[:, 0] for _, b in combos], axis=1, keys=combos)
    pf = vbt.Portfolio.from_signals(
        c.iloc[:, 0], entries, exits, fees=0.0015, slippage=0.0005, freq="1D", init_cash=1e6
    )
    sweep = pd.DataFrame(
        {
            "total_return_pct": pf.total_return() * 100,
            "sharpe": pf.sharpe_ratio(),
            # positive, as vectorbt's own stats() "Max Drawdown [%]" below reports it
            "max_drawdown_pct": -pf.max_drawdown() * 100,
            "trades": pf.trades.count(),
        }
    ).round(3)
    hold = float(c.iloc[-1, 0] / c.iloc[0, 0] - 1) * 100

    # 2. top-K book over CSI300 members
    t1 = time.perf_counter()
    names = csi300_members(args.book_start, args.book_end, args.stocks)
    history = (pd.Timestamp(args.book_start) - pd.offsets.BDay(int(args.lookback * 1.6))).date()
    book, bench = load_panel(DATA, names, str(history), args.book_end)
    o, h, lo, c, v = wide(book)
    bsig = KronosSignal.run(o, h, lo, c, v, forecaster=fc, **run_kw)
    pred = bsig.pred_return.loc[args.book_start :]
    pred.columns = pred.columns.get_level_values(-1)
    pf_book, weights = topk_portfolio(
        c.loc[args.book_start :], pred, k=args.k, n_drop=1, every=args.every,
        fees=0.0015, slippage=0.0005, init_cash=1e6,
    )  # fmt: skip
    stats = pf_book.stats()
    bench = bench.loc[args.book_start :].fillna(0)
    result = {
        "model": fc.source_,
        "sweep": {
            "stock": args.stock,
            "bars": len(one),
            "forecast_seconds": round(forecast_s, 1),
            "buy_and_hold_pct": round(hold, 3),
            "table": {
                f"enter>{a} exit_prob<{b}": row.to_dict() for (a, b), row in sweep.iterrows()
            },
        },
        "book": {
            "universe": len(names),
            "k": args.k,
            "rebalances": len(weights),
            "seconds": round(time.perf_counter() - t1, 1),
            "stats": {
                k: (round(float(x), 4) if isinstance(x, (int, float, np.number)) else str(x))
                for k, x in stats.items()
                if k
                in (
                    "Start",
                    "End",
                    "Total Return [%]",
                    "Benchmark Return [%]",
                    "Max Drawdown [%]",
                    "Total Fees Paid",
                    "Total Trades",
                    "Win Rate [%]",
                    "Sharpe Ratio",
                    "Sortino Ratio",
                    "Calmar Ratio",
                )
            },  # fmt: skip
            "csi300_return_pct": round(float((1 + bench).prod() - 1) * 100, 3),
        },
    }
    title = (f"top {args.k} of {len(names)} CSI300 members by pred_return, rebalanced every "
             f"{args.every} days\nsame costs; model {label}")  # fmt: skip
    fig = chart(args.stock, pf, c_one.iloc[:, 0], pf_book, c.loc[args.book_start :], bench, title)
    result["chart"] = str(save_figure(args.out, fig, dpi=80))
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
