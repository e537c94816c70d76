"""A cross-section of CSI300 stocks: forecast every member's 10-day return on a few dates,
rank them, and compare with what happened (rank IC). Reads the Qlib provider folder in
../shared/data directly from its binary files (the data are not shipped with the package).

    python examples/forecast_panel.py --model /path/to/checkpoint --stocks 60 --dates 4

Only bars at or before each decision date enter its forecast; the later bars are read for
the comparison alone. The chart (``--out``, default runs/forecast_panel.png) shows, for each
date side by side, every stock's forecast against what happened, with its 10-90% band.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha import Forecaster
from kronos_alpha.files import save_figure
from kronos_alpha.inference.settings import ForecastSettings
from kronos_alpha.model.zoo import DEFAULT_DIR
from kronos_alpha.sample_data import shared_folder  # noqa: E402

DATA = shared_folder() / "data" / "cn_daily_2010_2022"
FIELDS = ("open", "high", "low", "close", "volume")


def read_calendar(root: Path) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.read_csv(root / "calendars" / "day.txt", header=None)[0])


def members(root: Path, day: pd.Timestamp) -> list[str]:
    spans = pd.read_csv(
        root / "instruments" / "csi300.txt", sep="\t", header=None, names=["code", "start", "end"]
    )
    live = spans[(pd.to_datetime(spans.start) <= day) & (pd.to_datetime(spans.end) >= day)]
    return sorted(live.code.unique())


def read_stock(root: Path, code: str, calendar: pd.DatetimeIndex) -> pd.DataFrame:
    """Qlib .day.bin files: float32, first value = start index in the calendar."""
    cols = {}
    for field in FIELDS:
        raw = np.fromfile(root / "features" / code.lower() / f"{field}.day.bin", dtype="<f4")
        start = int(raw[0])
        cols[field] = pd.Series(raw[1:], index=calendar[start : start + len(raw) - 1])
    return pd.DataFrame(cols).astype(float)


def chart(table: pd.DataFrame, bands: list[str], h: int, source: str):
    """One panel per decision date: each stock's predicted h-day return (with its band of
    sampled returns) against the realised one; the rank IC in the panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = list(table.groupby(level="datetime"))
    fig, axes = plt.subplots(1, len(days), figsize=(3.6 * len(days) + 1, 4.2), sharey=True,
                             squeeze=False)  # fmt: skip
    lo, hi = bands
    for ax, (t, day) in zip(axes[0], days, strict=True):
        day = day.dropna(subset=["pred_return", "realised"])
        ic = day["pred_return"].corr(day["realised"], method="spearman")
        x = day["pred_return"].to_numpy()
        err = np.abs(np.vstack([x - day[lo].to_numpy(), day[hi].to_numpy() - x]))
        ax.errorbar(x, day["realised"], xerr=err, fmt="none", ecolor="#9ecae1", elinewidth=0.7,
                    label=f"{lo[5:]}-{hi[5:]}% of sampled returns")  # fmt: skip
        ax.scatter(x, day["realised"], s=14, color="#1f4e79", zorder=3, label="a stock")
        ax.axhline(0, color="grey", linewidth=0.7)
        ax.axvline(0, color="grey", linewidth=0.7)
        ax.set_title(f"{t:%Y-%m-%d}: rank IC {ic:+.3f} ({len(day)} stocks)", fontsize=9)
        ax.set_xlabel(f"predicted {h}-day return (mean path)", fontsize=8)
        ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        ax.grid(alpha=0.25)
    axes[0, 0].set_ylabel(f"realised {h}-day return")
    axes[0, 0].legend(loc="upper left", fontsize=7, framealpha=0.85)
    fig.suptitle(f"CSI300 members, forecast at each date and what followed; model {source}",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default=None, help="zoo name, Hub id or folder (default: kronos-small / offline)"
    )
    p.add_argument("--stocks", type=int, default=40, help="how many CSI300 members (default 40)")
    p.add_argument(
        "--dates", type=int, default=3, help="decision dates, 20 trading days apart (default 3)"
    )
    p.add_argument("--end", default="2022-10-31", help="last decision date (default 2022-10-31)")
    p.add_argument("--cache-dir", default=None, help="forecast cache (reruns are instant)")
    p.add_argument(
        "--out", default="runs/forecast_panel.png", help="the chart (default %(default)s)"
    )
    args = p.parse_args()
    if not DATA.is_dir():
        print(f"skipped: the CSI300 data folder {DATA} is absent (see ../shared/data/README.md)")
        return 0

    calendar = read_calendar(DATA)
    end = calendar[calendar.searchsorted(pd.Timestamp(args.end), side="right") - 1]
    pos = calendar.get_loc(end)
    dates = calendar[[pos - 20 * k for k in range(args.dates)][::-1]]
    codes = members(DATA, dates[0])[: args.stocks]
    bars = {c: read_stock(DATA, c, calendar) for c in codes}
    settings = ForecastSettings(lookback=90, horizon=10, sample_count=5, cache_dir=args.cache_dir)
    fc = Forecaster(model=args.model, settings=settings)
    h = settings.horizon
    table = fc.forecast({c: b.loc[:end] for c, b in bars.items()}, dates=dates)
    print(f"{len(table)} forecasts for {len(codes)} stocks on {len(dates)} dates with {fc.source_}")
    print(
        "report:",
        {
            k: fc.report[k]
            for k in ("requested", "computed", "from_cache", "skipped", "suspended_bars_dropped")
        },
    )

    # What happened next (evaluation only): the realised h-day close-to-close return.
    def realised(t, code):
        s = bars[code]["close"].dropna()
        i = s.index.get_indexer([t])[0]
        return s.iloc[i + h] / s.iloc[i] - 1 if 0 <= i and i + h < len(s) else np.nan

    table["realised"] = [realised(t, c) for t, c in table.index]
    bands = [settings.quantile_columns[0], settings.quantile_columns[-1]]  # ret_q10, ret_q90
    for t, day in table.groupby(level="datetime"):
        ic = day["pred_return"].corr(day["realised"], method="spearman")
        top = day.sort_values("pred_return", ascending=False)
        print(f"\n{t:%Y-%m-%d}: rank IC {ic:+.3f}; top 5 by pred_return:")
        print(
            top.head(5)[["pred_return", *bands, "prob_up", "pred_vol", "realised"]]
            .round(4)
            .to_string()
        )
    source = str(fc.source_)
    if Path(source).resolve() == DEFAULT_DIR.resolve():
        source = "the bundled default checkpoint (a demonstration, not Kronos-small)"
    elif Path(source).is_dir():
        source = Path(source).name  # a local folder: its name, not the machine's path
    out = save_figure(args.out, chart(table, bands, h, source), dpi=90)
    print(f"\nchart: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
