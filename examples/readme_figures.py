"""Regenerate the README's pictures from the bundled default checkpoint and sample data.

    python examples/readme_figures.py            # writes examples/figures/forecast.png and backtest.png

Offline and deterministic (seed 0, one torch thread). The bars are bokeh-sampledata's daily
AAPL, GOOG, IBM and MSFT (split- and dividend-adjusted); the model is the small checkpoint
bundled with the package, a demonstration rather than Kronos-small, so the pictures show what
the tools draw, not Kronos' skill. It was trained on these stocks up to 2010 and selected on
2011 to March 2013: the dates below lie in its validation span, so nothing here is out of
sample (the sample data end in March 2013).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless; pyplot before backtrader, as its plotting needs
import backtrader as bt  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from kronos_alpha.adapters.backtrader import Kronos  # noqa: E402

from kronos_alpha import Forecaster  # noqa: E402
from kronos_alpha.charts import plot_forecast  # noqa: E402
from kronos_alpha.files import save_figure  # noqa: E402
from kronos_alpha.model.zoo import DEFAULT_DIR  # noqa: E402
from kronos_alpha.sample_data import TICKERS, load_panel  # noqa: E402

ADJUSTED = "price (USD, split- and dividend-adjusted)"


def forecast_figure(panel: dict, out: Path) -> Path:
    """One forecast at a past date, with the realised closes that followed."""
    fc = Forecaster(model=str(DEFAULT_DIR), lookback=90, horizon=10, sample_count=30,
                    calendar="XNYS", return_paths=True, progress=False)  # fmt: skip
    bars = panel["AAPL"]
    t = pd.Timestamp("2012-10-01")
    fc.forecast({"AAPL": bars}, dates=[t])
    future, paths = fc.paths_[(t, "AAPL")]
    after = bars.loc[t:].iloc[1:11]
    fig = plot_forecast(bars.loc[:t], future, paths, title="AAPL at 2012-10-01 (in-sample span)",
                        actual=after, ylabel=ADJUSTED)  # fmt: skip
    fig.set_size_inches(9, 4.2)
    return save_figure(out, fig, dpi=80)


class KronosLongOnly(bt.Strategy):
    """Holds 1/N of the book in each stock whose 5-day forecast is up with conviction."""

    params = (("forecaster", None),)

    def __init__(self):
        self.k = {d: Kronos(d, forecaster=self.p.forecaster) for d in self.datas}
        self.values = []

    def next(self):
        self.values.append((self.datas[0].datetime.date(0), self.broker.getvalue()))
        for d, k in self.k.items():
            if k.pred_return[0] != k.pred_return[0]:  # NaN: warm-up
                continue
            held = self.getposition(d).size > 0
            if not held and k.pred_return[0] > 0.002 and k.prob_up[0] >= 0.6:
                self.order_target_percent(d, target=0.95 / len(self.datas))
            elif held and k.pred_return[0] < 0:
                self.order_target_percent(d, target=0.0)


def backtest_figure(panel: dict, out: Path) -> Path:
    """The backtrader strategy's book against equal-weight buy and hold, with a date axis."""
    fc = Forecaster(model=str(DEFAULT_DIR), lookback=60, horizon=5, sample_count=8,
                    calendar="XNYS", progress=False)  # fmt: skip
    cerebro = bt.Cerebro(stdstats=False)
    span = slice("2011-01-01", "2012-12-31")
    for name in TICKERS:
        cerebro.adddata(bt.feeds.PandasData(dataname=panel[name].loc[span]), name=name)
    cerebro.addstrategy(KronosLongOnly, forecaster=fc)
    cerebro.broker.setcash(1_000_000)
    cerebro.broker.setcommission(commission=0.001)
    strat = cerebro.run()[0]
    book = pd.Series(dict(strat.values)).rename("Kronos long-only (backtrader)")
    book.index = pd.DatetimeIndex(book.index)
    closes = pd.DataFrame({n: panel[n]["close"].loc[span] for n in TICKERS}).reindex(book.index)
    hold = (closes / closes.iloc[0]).mean(axis=1) * book.iloc[0]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=80)
    ax.plot(book.index, book / 1e6, color="#1f4e79", linewidth=1.6, label=book.name)
    ax.plot(hold.index, hold / 1e6, color="grey", linewidth=1.2, label="equal-weight buy & hold")
    ax.set_ylabel("book value (USD m)")
    ax.set_title(f"{', '.join(TICKERS)} 2011-2012, costs 10 bp (the checkpoint's validation "
                 "span: not out of sample)", fontsize=10)  # fmt: skip
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return save_figure(out, fig, dpi=80)


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "figures"), help="folder for the PNGs"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    panel = load_panel()
    out = Path(args.out)
    written = [
        forecast_figure(panel, out / "forecast.png"),
        backtest_figure(panel, out / "backtest.png"),
    ]
    for p in written:
        print(f"{p} ({p.stat().st_size // 1024} KiB)")
    return written


if __name__ == "__main__":
    main()
