"""``kronos-alpha forecast``: bars from a CSV/parquet file (or the bundled sample) -> a
forecast table and a PNG chart.

Calibration (``Forecaster.calibrate``): ``--calibrate-dates START:END`` and/or
``--calibrate-every N`` choose past decision dates of the input to fit on, ``--calibrator
PATH`` loads a saved fit instead, ``--save-calibrator PATH`` writes the fit (JSON). The table
then holds the calibrated ret_qNN / ret_median / ret_std / prob_up and the raw_* sample
statistics; the JSON report's ``calibration`` says whether, which scale and which span.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kronos_alpha.inference.panel import TIME_COLUMNS
from kronos_alpha.inference.settings import ForecastSettings

from . import DefaultsHelpFormatter
from .calibration import add_calibration_args, calibrate_from_args, check_calibration_args

INSTRUMENT_COLS = ("instrument", "ticker", "symbol", "code")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
# The command's defaults are ForecastSettings' except one: a one-off forecast of a few windows
# can afford 20 sampled paths (the library's 5 are sized for panels of thousands of windows),
# and its quantiles and the chart's fan of paths need them.
DEFAULTS = ForecastSettings(sample_count=20)
# ForecastSettings fields set by an option of the same dest; return_paths and progress follow
# --chart and --quiet.
SETTING_ARGS = (
    "lookback", "horizon", "sample_count", "T", "top_p", "seed", "device", "dtype", "cache_dir",
    "calendar", "int8", "cuda_graphs",
)  # fmt: skip
SAMPLE_CALENDAR = "XNYS"  # the bundled sample: US stocks (NYSE/Nasdaq share the holidays)


def register(sub) -> None:
    p = sub.add_parser(
        "forecast",
        help="forecast returns from a CSV/parquet file or the bundled sample, with a chart",
        formatter_class=DefaultsHelpFormatter,
        description=(
            "Forecast close-to-close returns over --horizon bars for the chosen decision times. "
            "Input: a CSV or parquet file with a time column (datetime/timestamps/date), open high "
            "low close [volume amount] and optionally an instrument column; or --sample TICKER "
            "(daily AAPL/GOOG/IBM/MSFT 2000-2013 from bokeh-sampledata). Without --model the Hub's "
            "kronos-small is used, or offline the small checkpoint bundled with the package. "
            "The forecast settings' defaults are kronos_alpha's ForecastSettings, except --samples."
        ),
    )
    d = DEFAULTS
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", "-i", help="CSV or parquet file of bars")
    src.add_argument("--sample", help="bundled sample ticker(s), comma separated (default: AAPL)")
    p.add_argument(
        "--model", help="zoo name, Hub id or folder (default: kronos-small / offline default)"
    )
    p.add_argument("--tokenizer", help="tokenizer folder or Hub id, when --model does not imply it")
    p.add_argument("--lookback", type=int, default=d.lookback, help="bars of context")
    p.add_argument("--horizon", type=int, default=d.horizon, help="bars to forecast")
    p.add_argument(
        "--samples", dest="sample_count", metavar="N", type=int, default=d.sample_count,
        help="sampled paths per forecast",
    )  # fmt: skip
    p.add_argument("--T", type=float, default=d.T, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling mass")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--date", action="append", help="decision time (repeatable); default: the last bar"
    )
    when.add_argument("--last", type=int, default=1, help="forecast at each of the last N bars")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument(
        "--dtype", default=d.dtype, help="float32, bf16 or fp16 (cuda) (default: float32)"
    )
    p.add_argument(
        "--int8", action="store_true", help="int8 weights for the predictor (CPU, opt-in)"
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="replay each step as CUDA graphs (CUDA, opt-in)"
    )
    p.add_argument("--cache-dir", default=d.cache_dir, help="forecast cache folder (default: none)")
    p.add_argument(
        "--calendar", default=d.calendar, metavar="CAL",
        help="where the future bar times come from: an exchange-calendars name (XSHG, XNYS, "
        "XHKG, 24/7, ...), a calendar file (one date a line, e.g. Qlib's calendars/day.txt "
        "with the coming sessions), 'business' (weekdays) or 'panel' (the file's own later "
        "rows: look-ahead-prone). Default: the exchange the instrument codes name (SH600000, "
        "600000.SH -> XSHG), XNYS for --sample, else business days with a warning",
    )  # fmt: skip
    p.add_argument("--out", "-o", default="forecast.csv", help="table file, .csv or .parquet")
    p.add_argument(
        "--chart",
        default=None,
        help="PNG chart of one forecast (default: beside --out, named like it; '' for none)",
    )
    p.add_argument("--chart-instrument", help="instrument to chart (default: the first)")
    p.add_argument("--context", type=int, default=60, help="bars of context drawn in the chart")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default: the cores not busy now, at least 1; on a busy 2-core "
        "machine two threads can run 20x slower than one)",
    )  # fmt: skip
    add_calibration_args(p)
    p.set_defaults(func=run)


def choose_threads(asked: int | None) -> tuple[int, str]:
    """(torch threads, why): the user's number, else the cores the load average leaves free."""
    import os

    cores = os.cpu_count() or 1
    if asked is not None:
        if asked < 1:
            raise ValueError(f"--threads must be at least 1, got {asked}")
        return asked, "--threads"
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):
        return 1, "one (the load average is unknown)"
    free = max(1, min(cores, int(cores - busy + 0.5)))
    return free, f"auto: {cores} core(s), load average {busy:.2f}"


def model_label(source: str) -> str:
    """A short name for a chart's footer: a folder's name, not its full local path."""
    path = Path(str(source))
    if path.is_dir():
        from kronos_alpha.model.zoo import DEFAULT_DIR

        return (
            "the bundled default checkpoint"
            if path.resolve() == DEFAULT_DIR.resolve()
            else path.name
        )
    return str(source)


def calibrated_note(rows) -> str:
    """The chart title's calibrated figures (its own are the drawn samples'), or ''."""
    if "raw_prob_up" not in rows or not {"ret_q10", "ret_q90"} <= set(rows):
        return ""
    r = rows.iloc[-1]
    return (
        f" (calibrated: 10-90% [{r['ret_q10']:+.2%}, {r['ret_q90']:+.2%}], "
        f"P(up) {r['prob_up']:.0%})"
    )


def settings_from(args) -> ForecastSettings:
    """The one ForecastSettings of a run: the command's defaults with the options given."""
    return DEFAULTS.replace(
        **{k: getattr(args, k) for k in SETTING_ARGS},
        return_paths=args.chart != "",  # None: the default chart beside --out
        progress=not args.quiet,
    )


def read_bars(path: str):
    """A file of bars -> a dict {instrument: frame indexed by time}.

    Column names go through the input boundary (``panel.clean_columns``: lower case, without
    Qlib's ``$``; two columns that collide are an error); the time column is the first of
    ``panel.TIME_COLUMNS`` present, parsed by ``panel.to_datetime_index``.
    """
    import pandas as pd

    from kronos_alpha.adapters.qlib.sources import read_table, refuse_empty_codes
    from kronos_alpha.inference.panel import InputError, clean_columns, to_datetime_index

    f = Path(path)
    if not f.is_file():
        raise FileNotFoundError(f"input file {path!r} does not exist")
    problems: list[str] = []  # qlib-data build's reading: empty, not UTF-8, broken, named
    df = read_table(f, problems)
    if df is None:
        raise InputError(problems[0])
    if not len(df):
        raise InputError(f"{path}: no bars (a header and no rows)")
    df = clean_columns(df, path, features_only=False)
    time_col = next((c for c in TIME_COLUMNS if c in df.columns), None)
    if time_col is None and isinstance(df.index, pd.DatetimeIndex):  # parquet: bars by time
        df = clean_columns(df.reset_index(), path, features_only=False)
        time_col = df.columns[0]
    if time_col is None:
        raise InputError(
            f"{path}: no time column; expected one of {list(TIME_COLUMNS)}, found {list(df.columns)}"
        )
    df[time_col] = to_datetime_index(df[time_col], f"{path}: column {time_col!r}")
    inst_col = next((c for c in INSTRUMENT_COLS if c in df.columns), None)
    if inst_col is None:
        return {f.stem: df.set_index(time_col)}
    refuse_empty_codes(df[inst_col], path)
    return {
        str(k): g.drop(columns=inst_col).set_index(time_col)
        for k, g in df.groupby(inst_col, sort=True)
    }


def run(args) -> int:
    import pandas as pd

    from kronos_alpha.files import atomic_write, check_target, save_figure, write_parquet
    from kronos_alpha.inference import distributed
    from kronos_alpha.inference.forecaster import Forecaster
    from kronos_alpha.inference.frames import split_panel

    if args.chart is None:  # the chart goes where the table goes, not into the cwd
        args.chart = str(Path(args.out).with_suffix(".png"))
    settings = settings_from(args)  # a bad setting fails before any data is read
    if Path(args.out).suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"--out {args.out!r}: the table is written as .csv or .parquet")
    for flag, target in (("--out", args.out), ("--chart", args.chart)):
        if target:
            check_target(target, flag)
    check_calibration_args(args)
    threads, why = choose_threads(args.threads)
    import torch

    torch.set_num_threads(threads)
    distributed.init_from_env()
    if args.input:
        panel = read_bars(args.input)
    else:
        from kronos_alpha.sample_data import load_panel

        panel = load_panel([t.strip() for t in (args.sample or "AAPL").split(",") if t.strip()])
    frames = split_panel(panel)
    if settings.calendar is None and not args.input:
        settings = settings.replace(calendar=SAMPLE_CALENDAR)
    fc = Forecaster(model=args.model, tokenizer=args.tokenizer, settings=settings)
    times = pd.DatetimeIndex(sorted(set().union(*(df.index for df in frames.values()))))
    dates = args.date if args.date else times[-max(1, args.last) :]
    calibration = calibrate_from_args(args, fc, frames, times, dates)
    table = fc.forecast(frames, dates=dates)
    if distributed.rank() != 0:
        return 0
    if table.empty:  # nothing to write: say why, and fail
        raise ValueError(
            f"no forecast: every requested window was skipped {fc.report['skipped']} "
            f"(lookback {fc.report['lookback']}, min_history {fc.report['min_history']})"
        )
    out = Path(args.out)
    if out.suffix.lower() in (".parquet", ".pq"):
        write_parquet(out, table)
    else:
        atomic_write(out, lambda f: table.to_csv(f))
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(
            table.drop(columns=[c for c in table.columns if c.startswith("close_h")])
            .round(5)
            .to_string()
        )
    report = {"table": str(out), **fc.report, "threads": threads, "threads_chosen": why,
              "calibration": calibration}  # fmt: skip
    if args.save_calibrator:
        report["calibrator_saved"] = str(args.save_calibrator)
    print(json.dumps(report, default=str), file=sys.stderr)
    if args.chart:
        import matplotlib

        matplotlib.use("Agg")
        from kronos_alpha.charts import plot_forecast

        name = args.chart_instrument or table.index.get_level_values("instrument")[0]
        rows = (
            table.xs(name, level="instrument")
            if name in table.index.get_level_values("instrument")
            else None
        )
        if rows is None:
            raise ValueError(
                f"--chart-instrument {name!r} has no forecast; have {sorted(set(table.index.get_level_values(1)))}"
            )
        t = rows.index[-1]
        future, paths = fc.paths_[(t, name)]
        hist = frames[name].loc[:t]
        after = frames[name].loc[t:].iloc[1 : 1 + settings.horizon]  # a past date: what happened
        fig = plot_forecast(
            hist,
            future,
            paths,
            title=f"{name} at {t:%Y-%m-%d %H:%M}".replace(" 00:00", "") + calibrated_note(rows),
            context=args.context,
            actual=after,
            ylabel="price (as given)"
            if args.input
            else "price (USD, split- and dividend-adjusted)",
        )
        label = f"model: {model_label(fc.source_)}"
        if calibration["calibrated"]:  # the chart draws the sampled paths, the table more
            label += f"; paths and fan: raw samples (calibration scale {calibration['scale']})"
        fig.text(0.99, 0.01, label, ha="right", va="bottom", fontsize=7, color="grey")
        save_figure(args.chart, fig)
        print(f"chart: {args.chart}", file=sys.stderr)
    return 0
