"""Forecast one instrument and chart it: AAPL daily bars from the bundled sample
(bokeh-sampledata), 90 bars of context, 10 bars ahead, 30 sampled paths.

    python examples/forecast_single.py                       # default model (Hub or offline)
    python examples/forecast_single.py --model kronos-small --date 2012-09-19 --out aapl.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

from kronos_alpha import Forecaster  # noqa: E402
from kronos_alpha.charts import plot_forecast  # noqa: E402
from kronos_alpha.files import save_figure  # noqa: E402
from kronos_alpha.inference.settings import ForecastSettings  # noqa: E402
from kronos_alpha.sample_data import load_stock  # noqa: E402

SETTINGS = ForecastSettings(lookback=90, horizon=10, sample_count=30, return_paths=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ticker", default="AAPL", help="AAPL, GOOG, IBM or MSFT")
    p.add_argument(
        "--model", default=None, help="zoo name, Hub id or folder (default: kronos-small / offline)"
    )
    p.add_argument("--date", default=None, help="decision time (default: the last bar)")
    p.add_argument("--out", default="forecast_single.png")
    args = p.parse_args()

    bars = load_stock(args.ticker)
    t = bars.index[-1] if args.date is None else bars.index[bars.index.get_indexer([args.date])[0]]
    fc = Forecaster(model=args.model, settings=SETTINGS)
    h = SETTINGS.horizon
    table = fc.forecast({args.ticker: bars}, dates=[t])
    row = table.loc[(t, args.ticker)]
    print(f"{args.ticker} at {t:%Y-%m-%d} with {fc.source_}:")
    print(row.round(4).to_string())
    future, paths = fc.paths_[(t, args.ticker)]
    after = bars.loc[t:].iloc[1 : 1 + h]
    if len(after) == h:  # a past date: show what happened, for comparison
        print(f"realised {h}-bar return: {after['close'].iloc[-1] / bars.loc[t, 'close'] - 1:+.4f}")
    fig = plot_forecast(
        bars.loc[:t], future, paths, title=f"{args.ticker} at {t:%Y-%m-%d}", actual=after
    )
    save_figure(args.out, fig)
    print(f"chart: {args.out}")


if __name__ == "__main__":
    main()
