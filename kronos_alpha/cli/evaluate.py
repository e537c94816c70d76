"""``kronos-alpha evaluate``: build a book from a signal file and write an evaluation report.

IC, RankIC and the quantile spreads score the signal of day t against Qlib's label
close[t+2]/close[t+1] - 1, i.e. Ref($close, -2)/Ref($close, -1) - 1 (--horizon sets the bars
it spans, from close t+1), so on the predictions of a qrun they equal its SigAnaRecord IC.
The label reads each signal name's closes from its full history, also after it leaves the
pool, as Qlib's handler does. The book's returns keep their own timing: weights of day t
earn close t -> close t+1. A forecast table (ret_qNN, prob_up, hist_vol: ``kronos-alpha
forecast``'s output) also gets a calibration section scored against close[t+h]/close[t] - 1
with h = --horizon (the forecast's own horizon).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import DefaultsHelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="IC/RankIC, top-K or neutral book performance with and without costs, report",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--signal", required=True, help="parquet or CSV with datetime, instrument, score columns"
    )
    p.add_argument("--column", default=None, help="score column (default: pred_return, else score)")
    p.add_argument(
        "--provider-uri", required=True, help="Qlib provider folder with the price panel"
    )
    p.add_argument(
        "--market",
        default="csi300",
        help="Qlib instrument pool or comma-separated instruments",
    )
    p.add_argument("--benchmark", default="SH000300", help="benchmark instrument")
    p.add_argument("--region", default="cn", help="Qlib region")
    p.add_argument(
        "--horizon",
        type=int,
        default=1,
        help="bars the IC label spans: close[t+1+h]/close[t+1] - 1 (1: Qlib's label)",
    )
    p.add_argument(
        "--book",
        choices=["topk", "long-short", "neutral"],
        default="topk",
        help="topk: long-only top-K; long-short: top/bottom-K; neutral: factor-neutral optimiser",
    )
    p.add_argument("--topk", type=int, default=50, help="names held long (and short)")
    p.add_argument(
        "--n-drop",
        type=int,
        default=None,
        help="names sold per rebalance, TopkDropout-style (default: every name that left the top K)",
    )
    p.add_argument(
        "--hold-period", type=int, default=1, help="rebalances a bought name is held at least"
    )
    p.add_argument(
        "--turnover-cap",
        type=float,
        default=None,
        help="max one-way turnover 0.5 * sum|w_t - w_t-1| per rebalance (default: no cap)",
    )
    p.add_argument(
        "--weighting", choices=["equal", "score"], default="equal", help="weights of held names"
    )
    p.add_argument(
        "--residualize", action="store_true", help="neutralise the signal by regression first"
    )
    p.add_argument(
        "--max-exposure", type=float, default=0.05, help="neutral book: |factor exposure| bound"
    )
    p.add_argument("--max-weight", type=float, default=0.05, help="neutral book: |w_i| bound")
    p.add_argument(
        "--rebalance-every", type=int, default=5, help="neutral book: bars between solves"
    )
    p.add_argument(
        "--commission", type=float, default=0.0005, help="cost per unit of capital traded"
    )
    p.add_argument(
        "--slippage", type=float, default=0.0005, help="slippage per unit of capital traded"
    )
    p.add_argument(
        "--warmup-days",
        type=int,
        default=200,
        help="calendar days loaded before the signal for factors",
    )
    p.add_argument("--out", default="evaluation_report", help="report folder")
    p.set_defaults(func=run)


def read_signal(path: str, column: str | None):
    """(the score column of a signal file as a (datetime, instrument) Series, its name),
    through the input boundary: the file read as qlib-data and forecast read theirs, the
    times parsed and the scores read as numbers with the bad row named, every row with an
    instrument. NaN scores stay: "no score on that date"."""
    import pandas as pd

    from kronos_alpha.adapters.qlib.sources import read_table, refuse_empty_codes
    from kronos_alpha.inference.panel import InputError, numeric_matrix, to_datetime_index

    f = Path(path)
    if not f.is_file():
        raise FileNotFoundError(f"signal file not found: {f}")
    problems: list[str] = []
    df = read_table(f, problems, code_names=["instrument"])
    if df is None:
        raise InputError(problems[0])
    if isinstance(df.index, pd.MultiIndex):
        df = df.reset_index()
    missing = {"datetime", "instrument"} - set(df.columns)
    if missing:
        raise InputError(f"{f}: missing columns {sorted(missing)}; has {list(df.columns)}")
    if column is None:
        column = next((c for c in ("pred_return", "score") if c in df.columns), None)
        if column is None:
            raise InputError(f"{f}: no pred_return or score column; pass --column")
    if column not in df.columns:
        raise InputError(f"{f}: no column {column!r}; has {list(df.columns)}")
    refuse_empty_codes(df["instrument"], str(f))
    times = to_datetime_index(df["datetime"], f"{f}: column 'datetime'")
    if times.hasnans:
        raise InputError(
            f"{f}: column 'datetime' is empty at data row {int(times.isna().argmax())}"
        )
    scores = numeric_matrix(df, [column], str(f))[:, 0]
    index = pd.MultiIndex.from_arrays([times, df["instrument"].astype(str)],
                                      names=["datetime", "instrument"])  # fmt: skip
    return pd.Series(scores, index=index, name=column).sort_index(), column


def run(args) -> int:
    import pandas as pd

    from kronos_alpha.strategies import (
        evaluate,
        factor_exposures,
        long_short_weights,
        optimized_book,
        residualize,
        topk_weights,
        write_report,
    )
    from kronos_alpha.strategies.factors import daily_returns, label_text, qlib_label
    from kronos_alpha.strategies.panel import load_panel

    if args.horizon < 1:
        raise ValueError(f"--horizon must be >= 1; got {args.horizon}")
    signal, column = read_signal(args.signal, args.column)
    dates = signal.index.get_level_values("datetime")
    start = (dates.min() - pd.Timedelta(days=args.warmup_days)).strftime("%Y-%m-%d")
    # calendar days past the last signal date: enough for close t+1+horizon over holidays
    end = (dates.max() + pd.Timedelta(days=14 + 2 * args.horizon)).strftime("%Y-%m-%d")
    panel, bench = load_panel(
        args.provider_uri, args.market, start, end, args.benchmark, args.region
    )
    # the label from each signal name's full history: a pool panel ends a name where it
    # leaves the pool, Qlib's label reads its closes after that
    names = sorted(signal.index.get_level_values("instrument").unique())
    history, _ = load_panel(
        args.provider_uri, names, dates.min().strftime("%Y-%m-%d"), end, args.benchmark, args.region
    )
    label = qlib_label(history, args.horizon)
    exposures = factor_exposures(panel, bench)
    sig = signal.rename("score")
    if args.residualize:
        sig = residualize(sig, exposures, column="score")
    if args.book in ("topk", "long-short"):
        book = topk_weights if args.book == "topk" else long_short_weights
        w = book(
            sig,
            args.topk,
            args.n_drop,
            args.hold_period,
            args.turnover_cap,
            args.weighting,
            column="score",
        )
    else:
        w = optimized_book(
            sig,
            exposures,
            daily_returns(panel),
            column="score",
            rebalance_every=args.rebalance_every,
            max_exposure=args.max_exposure,
            lower=-args.max_weight,
            upper=args.max_weight,
        )
    ev = evaluate(
        w,
        panel,
        bench,
        signal=sig,
        column="score",
        exposures=exposures,
        commission=args.commission,
        slippage=args.slippage,
        horizon=args.horizon,
        label=label,
        label_name=label_text(args.horizon),
    )
    # a forecast table (ret_qNN, prob_up, hist_vol columns): its distribution's calibration
    from kronos_alpha.strategies.forecast_calibration import from_forecast_table

    f = Path(args.signal)
    table = pd.read_parquet(f) if f.suffix in (".parquet", ".pq") else pd.read_csv(f)
    if not isinstance(table.index, pd.MultiIndex):
        table = table.assign(datetime=pd.to_datetime(table["datetime"]))
        table = table.set_index(["datetime", "instrument"])
    realised = qlib_label(history, args.horizon, delay=0)  # close[t+h]/close[t] - 1
    past = qlib_label(panel, args.horizon, delay=0)
    ev.calibration = from_forecast_table(table.sort_index(), realised, args.horizon, past=past)
    path = write_report(
        ev, args.out, title=f"{Path(args.signal).name}: {args.book} book ({column})"
    )
    print(
        json.dumps(
            {"report": str(path), "summary": ev.summary.round(4).to_dict()}, indent=1, default=str
        )
    )
    return 0
