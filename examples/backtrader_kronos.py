"""A backtrader strategy trading on the Kronos indicator over several CSI300 stocks.

Offline: bars from the shared Qlib folder (../shared/data/cn_daily_2010_2022), the model from
``--model`` (default: the bundled default checkpoint when the package has one, otherwise the
upstream-tiny fixture in ../shared/fixtures - a tiny test model, so the figures show the
plumbing, not Kronos' skill). Prints SharpeRatio, DrawDown and Returns analyzer figures and
saves a PNG: the book's value against equal-weight buy and hold, then each stock's close with
the strategy's fills and the days it held the stock. The chart is drawn with matplotlib from
what the strategy recorded (backtrader 1.9.78's own ``cerebro.plot`` has no date axis at this
size and its labels overlap).

    python examples/backtrader_kronos.py --out runs/backtrader_kronos.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: set the backend and import pyplot before cerebro.plot
import backtrader as bt  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from kronos_alpha.adapters.backtrader import Kronos  # noqa: E402
from kronos_alpha.strategies.panel import load_panel  # noqa: E402

from kronos_alpha.charts import plot_lines, plot_trades  # noqa: E402
from kronos_alpha.files import save_figure  # noqa: E402
from kronos_alpha.inference.forecaster import Forecaster  # noqa: E402
from kronos_alpha.sample_data import shared_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_folder() / "data" / "cn_daily_2010_2022"
FIXTURE = shared_folder() / "fixtures" / "upstream-tiny"
DEFAULT = ROOT / "kronos_alpha" / "assets" / "default"


class KronosLongOnly(bt.Strategy):
    """Holds 1/N of the book in each stock whose forecast is up with enough conviction."""

    params = (("forecaster", None), ("enter", 0.005), ("prob", 0.6), ("lookback", 48))

    def __init__(self):
        self.kronos = {
            d: Kronos(d, forecaster=self.p.forecaster, lookback=self.p.lookback) for d in self.datas
        }
        # for the chart: the book's value and the names held each day, and every fill
        self.values, self.held = [], []
        self.fills = {d._name: {"buy": [], "sell": []} for d in self.datas}

    def notify_order(self, order):
        if order.status == order.Completed:
            side = "buy" if order.isbuy() else "sell"
            when = bt.num2date(order.executed.dt).date()
            self.fills[order.data._name][side].append((when, order.executed.price))

    def next(self):
        day = self.datas[0].datetime.date(0)
        self.values.append((day, self.broker.getvalue()))
        self.held.append({d._name: self.getposition(d).size > 0 for d in self.datas} | {"": day})
        share = 0.95 / len(self.datas)
        for d, k in self.kronos.items():
            if k.pred_return[0] != k.pred_return[0]:  # NaN: warm-up or a suspended bar
                continue
            held = self.getposition(d).size > 0
            if not held and k.pred_return[0] > self.p.enter and k.prob_up[0] >= self.p.prob:
                self.order_target_percent(d, target=share)
            elif held and k.pred_return[0] < 0:
                self.order_target_percent(d, target=0.0)


def chart(strat, panel, cash: float, model: str):
    """The book against equal-weight buy and hold, then one panel per stock (close, fills,
    days held), on one date axis."""
    book = pd.Series(dict(strat.values), name="Kronos long-only (backtrader)")
    book.index = pd.DatetimeIndex(book.index)
    close = panel["close"].unstack("instrument").reindex(book.index)
    hold = (close / close.bfill().iloc[0]).mean(axis=1) * cash
    held = pd.DataFrame(strat.held).set_index("")
    held.index = pd.DatetimeIndex(held.index)
    names = list(close.columns)
    fig, axes = plt.subplots(len(names) + 1, 1, figsize=(11, 3.2 + 1.6 * len(names)), sharex=True,
                             gridspec_kw={"height_ratios": [2] + [1] * len(names)})  # fmt: skip
    plot_lines(axes[0], {book.name: book / 1e6, "equal-weight buy & hold": hold / 1e6},
               ylabel="value (CNY m)", styles={"equal-weight buy & hold": {"color": "grey"}},
               title=f"{len(names)} CSI300 stocks {book.index[0]:%Y-%m-%d} .. "
               f"{book.index[-1]:%Y-%m-%d}, costs 15 bp a side; model {model}")  # fmt: skip
    for ax, name in zip(axes[1:], names, strict=True):
        f = strat.fills[name]
        plot_trades(ax, close[name], f["buy"], f["sell"], held=held[name], name=name)
        ax.set_ylabel("adj. close", fontsize=8)
    # one legend for the stock panels, between the book and the first stock
    axes[1].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, fontsize=8, frameon=False)
    fig.align_ylabels(axes)
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instruments", default="SH600000,SH600036,SH601318,SZ000001,SZ000002")
    ap.add_argument("--start", default="2020-01-01")
    ap.add_argument("--end", default="2021-06-30")
    ap.add_argument("--model", default=None, help="zoo name, Hub id or folder")
    ap.add_argument("--lookback", type=int, default=48)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--cache-dir", default=None, help="forecast cache (reruns are instant)")
    ap.add_argument("--out", default="runs/backtrader_kronos.png")
    args = ap.parse_args(argv)

    if args.model:
        model, tokenizer, label = args.model, None, args.model
    elif DEFAULT.is_dir():
        model, tokenizer, label = str(DEFAULT), None, "bundled default checkpoint"
    else:
        model, tokenizer = str(FIXTURE / "model"), str(FIXTURE / "tokenizer")
        label = "upstream-tiny test fixture"
    fc = Forecaster(model=model, tokenizer=tokenizer, horizon=args.horizon,
                    sample_count=args.samples, cache_dir=args.cache_dir, progress=True)  # fmt: skip

    panel, _ = load_panel(DATA, args.instruments, args.start, args.end)
    cerebro = bt.Cerebro(stdstats=False)  # no observers: the chart is drawn below
    for name, df in panel.groupby(level="instrument"):
        feed = bt.feeds.PandasData(dataname=df.droplevel("instrument"), openinterest=None)
        cerebro.adddata(feed, name=name)
    cerebro.addstrategy(KronosLongOnly, forecaster=fc, lookback=args.lookback)
    cerebro.broker.setcash(1_000_000)
    cerebro.broker.setcommission(commission=0.0015)
    cerebro.addanalyzer(bt.analyzers.SharpeRatio, _name="sharpe", timeframe=bt.TimeFrame.Days,
                        annualize=True, factor=252, riskfreerate=0.0)  # fmt: skip
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="drawdown")
    cerebro.addanalyzer(bt.analyzers.Returns, _name="returns", tann=252)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")

    start = time.perf_counter()
    strat = cerebro.run()[0]
    seconds = time.perf_counter() - start
    dd = strat.analyzers.drawdown.get_analysis()
    rets = strat.analyzers.returns.get_analysis()
    trades = strat.analyzers.trades.get_analysis()
    result = {
        "model": fc.source_,
        "instruments": sorted(panel.index.get_level_values("instrument").unique()),
        "bars": int(panel.index.get_level_values("datetime").nunique()),
        "forecaster_report": {
            k: next(iter(strat.kronos.values())).forecaster.report.get(k)
            for k in ("requested", "computed", "from_cache", "skipped", "seconds")
        },
        "sharpe_ratio": strat.analyzers.sharpe.get_analysis()["sharperatio"],
        "max_drawdown_pct": dd["max"]["drawdown"],
        "max_drawdown_len": dd["max"]["len"],
        "total_return_log": rets["rtot"],
        "annual_return": rets["rnorm"],
        "trades_closed": trades.get("total", {}).get("closed", 0),
        "final_value": cerebro.broker.getvalue(),
        "run_seconds": round(seconds, 1),
    }
    out = save_figure(args.out, chart(strat, panel, cerebro.broker.startingcash, label), dpi=80)
    result["plot"] = str(out)
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
