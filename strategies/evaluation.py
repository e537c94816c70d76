"""Evaluating a signal and the book built from it: IC, quantiles, performance, costs, exposures.

Two timings, each stated in the report:
- Signal metrics (IC, RankIC, ICIR, quantile spreads) score the signal of date t against one
  label, ``factors.qlib_label``: by default close[t+2]/close[t+1] - 1, Qlib's label
  ``Ref($close, -2)/Ref($close, -1) - 1``, so the IC equals Qlib's ``SigAnaRecord`` IC on the
  same predictions. ``horizon`` sets the bars the label spans, ``delay`` the bars from t to
  its first close; a caller may pass its own ``label`` instead (the walk-forward does).
- Book returns: a weight row at date t is held over the next bar, so it earns the daily
  return of t+1 (close t -> close t+1), as if traded at the close of t. Returns are reported
  on the date they are earned. Between weight dates the last target is held (rebalanced back
  to target daily). A held name with no return on a bar (suspended) earns 0, as its price did
  not move. Costs: each rebalance trades sum|w_t - w_{t-1}| of capital and pays
  (commission + slippage) on it, taken from the next bar.
The benchmark column is buy & hold: its turnover and leverage rows are NaN (blank in the
report), not the book's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd

from kronos_alpha.files import save_figure, write_text

from .errors import StrategyInputError, check_numbers
from .factors import daily_returns, label_text, qlib_label
from .signal import to_long, to_wide

PERIODS = 252


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured; ``summary`` is the side-by-side table."""

    summary: pd.DataFrame
    returns: pd.DataFrame
    turnover: pd.Series
    ic: pd.DataFrame | None = None
    quantile_returns: pd.DataFrame | None = None
    exposures: pd.DataFrame | None = None
    label: str | None = None  # what the signal metrics were scored against, in words
    # the forecast distribution's calibration (forecast_calibration.from_forecast_table)
    calibration: dict | None = None


def performance(returns: pd.Series, benchmark: pd.Series | None = None) -> dict:
    """Annualised return, volatility, Sharpe, max drawdown, Calmar, IR (empyrical-reloaded)."""
    r = returns.dropna()
    out = {
        "annual_return": empyrical.annual_return(r, annualization=PERIODS),
        "annual_volatility": empyrical.annual_volatility(r, annualization=PERIODS),
        "sharpe": empyrical.sharpe_ratio(r, annualization=PERIODS),
        "max_drawdown": empyrical.max_drawdown(r),
        "calmar": empyrical.calmar_ratio(r, annualization=PERIODS),
    }
    if benchmark is not None:
        b = benchmark.reindex(r.index).fillna(0.0)
        out["information_ratio"] = empyrical.excess_sharpe(r, b) * np.sqrt(PERIODS)
        out["excess_annual_return"] = out["annual_return"] - empyrical.annual_return(
            b, annualization=PERIODS
        )
    return {k: float(v) for k, v in out.items()}


def signal_ic(signal: pd.DataFrame, label: pd.DataFrame) -> pd.DataFrame:
    """Daily IC and RankIC of a wide signal against a wide label, via Qlib's calc_ic."""
    from qlib.contrib.eva.alpha import calc_ic

    pred = to_long(signal, "pred", drop_zero=False)
    lab = to_long(label.reindex_like(signal), "label", drop_zero=False)
    ic, ric = calc_ic(pred, lab, date_col="datetime", dropna=True)
    return pd.DataFrame({"ic": ic, "rank_ic": ric})


def quantile_returns(signal: pd.DataFrame, fwd: pd.DataFrame, n_quantiles: int = 5) -> pd.DataFrame:
    """Mean label ``fwd`` of each signal quantile per date (Q1 lowest ... Qn highest)."""
    ranks = signal.rank(axis=1, pct=True, method="first")
    q = np.ceil(ranks * n_quantiles).clip(1, n_quantiles)
    fwd = fwd.reindex_like(signal)
    cols = {f"Q{i}": fwd.where(q == i).mean(axis=1) for i in range(1, n_quantiles + 1)}
    out = pd.DataFrame(cols)
    out["long_short"] = out[f"Q{n_quantiles}"] - out["Q1"]
    return out


def evaluate(
    weights: pd.DataFrame,
    panel: pd.DataFrame,
    benchmark: pd.Series | None = None,
    signal: pd.Series | pd.DataFrame | None = None,
    column: str = "pred_return",
    exposures: pd.DataFrame | None = None,
    commission: float = 0.0005,
    slippage: float = 0.0005,
    n_quantiles: int = 5,
    horizon: int = 1,
    delay: int = 1,
    label: pd.DataFrame | None = None,
    label_name: str | None = None,
    end=None,
) -> Evaluation:
    """Evaluate a weight book (wide, see ``signal.py``) on the panel, with and without costs.

    ``benchmark``: daily benchmark return by date. ``signal`` adds IC/RankIC/ICIR and the
    quantile spreads, scored against ``label`` (wide, date x instrument, stored at t; default
    ``qlib_label(panel, horizon, delay)``, Qlib's label for horizon 1, delay 1), named
    ``label_name`` in ``Evaluation.label`` and the report. ``quantile_spread_annual`` is the
    mean top-minus-bottom label times 252 / ``horizon``. ``exposures`` (long, factor columns)
    adds the book's realised exposure sum_i w_i x_i per date.
    The book holds each weight row until the next one, and its last row for one bar: returns
    end at the first bar after the last weight date, so a panel that runs on (for a label,
    say) adds no days of stale holdings. ``end`` (a date) holds the last row until then
    instead, for a sparse book whose last rebalance has a known holding period.
    """
    check_numbers(
        {"n_quantiles": (n_quantiles, 2), "horizon": (horizon, 1), "delay": (delay, 0)},
        {"commission": (commission, 0.0), "slippage": (slippage, 0.0)},
    )
    if weights.empty:
        raise StrategyInputError("the weight book is empty")
    if weights.isna().any().any():
        raise StrategyInputError("the weight book has NaN weights (use 0 for no position)")
    if np.isinf(weights.to_numpy(dtype=float)).any():
        raise StrategyInputError("the weight book has infinite weights")
    ret = daily_returns(panel)
    unknown = weights.columns.difference(ret.columns)
    held_unknown = [c for c in unknown if (weights[c] != 0).any()]
    if held_unknown:
        raise StrategyInputError(
            f"weights hold instruments absent from the panel: {held_unknown[:5]}"
        )
    dates = ret.index[(ret.index >= weights.index[0])]
    if end is None:  # the last row's one bar: the first bar after it
        after = dates[dates > weights.index[-1]]
        end = after[0] if len(after) else weights.index[-1]
    dates = dates[dates <= pd.Timestamp(end)]
    held = weights.reindex(columns=ret.columns, fill_value=0.0).reindex(dates).ffill()
    traded = held.diff().abs().sum(axis=1)
    traded.iloc[0] = held.iloc[0].abs().sum()
    gross = (held.shift(1) * ret.reindex(dates).fillna(0.0)).sum(axis=1).iloc[1:]
    cost = (traded * (commission + slippage)).shift(1).iloc[1:]
    frame = pd.DataFrame({"gross": gross, "net": gross - cost})
    bench = None
    if benchmark is not None:
        bench = pd.Series(benchmark, dtype=float)
        bench.index = pd.DatetimeIndex(bench.index)
        frame["benchmark"] = bench.reindex(frame.index)
        if frame["benchmark"].isna().all():
            raise StrategyInputError("benchmark returns share no dates with the book")
    cols = {"gross": performance(frame["gross"], bench), "net": performance(frame["net"], bench)}
    if bench is not None:
        cols["benchmark"] = performance(frame["benchmark"])
    summary = pd.DataFrame(cols)
    # the book's rows; the benchmark (buy & hold) has no turnover of its own: NaN there
    summary.loc["turnover_per_day", ["gross", "net"]] = traded.mean()
    summary.loc["mean_gross_leverage", ["gross", "net"]] = held.abs().sum(axis=1).mean()
    ev = Evaluation(summary=summary, returns=frame, turnover=traded)
    if signal is not None:
        sig = to_wide(signal, column)
        if label is None:
            label = qlib_label(panel, horizon, delay)
            label_name = label_name or label_text(horizon, delay)
        ev.label = label_name or "the caller's label"
        ev.ic = signal_ic(sig, label)
        ev.quantile_returns = quantile_returns(sig, label, n_quantiles)

        def ratio(x):
            return x.mean() / x.std() if x.std() > 0 else float("nan")

        ic_stats = {
            "IC": ev.ic["ic"].mean(),
            "ICIR": ratio(ev.ic["ic"]),
            "RankIC": ev.ic["rank_ic"].mean(),
            "RankICIR": ratio(ev.ic["rank_ic"]),
            "quantile_spread_annual": ev.quantile_returns["long_short"].mean() * PERIODS / horizon,
        }
        for k, v in ic_stats.items():
            summary.loc[k, ["gross", "net"]] = float(v)
    if exposures is not None:
        ev.exposures = realised_exposures(weights, exposures)
        for k, v in ev.exposures.abs().mean().items():
            summary.loc[f"mean_abs_exposure_{k}", ["gross", "net"]] = float(v)
    return ev


def realised_exposures(weights: pd.DataFrame, exposures: pd.DataFrame) -> pd.DataFrame:
    """sum_i w_i x_{i,f} per date and factor; names held without an exposure count as 0."""
    rows = {}
    by_date = dict(tuple(exposures.groupby(level=0)))
    for date, w in weights.iterrows():
        w = w[w != 0]
        if date not in by_date or w.empty:
            continue
        X = by_date[date].droplevel(0).reindex(w.index).fillna(0.0)
        rows[date] = X.T @ w
    out = pd.DataFrame(rows).T
    out.index.name = "datetime"
    return out


COUNT_COLUMNS = ("dates", "pairs", "windows", "names", "trades")  # printed as whole numbers


def markdown_table(df: pd.DataFrame, fmt: str = "{:.4f}") -> str:
    head = "| | " + " | ".join(map(str, df.columns)) + " |"
    sep = "|---" * (df.shape[1] + 1) + "|"
    fmts = [("{:.0f}" if c in COUNT_COLUMNS else fmt) for c in df.columns]
    body = [
        f"| {i} | "
        + " | ".join("" if pd.isna(v) else f.format(v) for f, v in zip(fmts, row))
        + " |"
        for i, row in zip(df.index, df.to_numpy())
    ]
    return "\n".join([head, sep, *body])


def figure_saver(folder: Path, names: list[str]):
    """save(fig, name): a tight PNG at 110 dpi in ``folder`` (written atomically), the figure
    closed, the name kept."""
    import matplotlib.pyplot as plt

    def save(fig, name: str) -> None:
        fig.tight_layout()
        save_figure(Path(folder) / name, fig, dpi=110)
        plt.close(fig)
        names.append(name)

    return save


def write_report(ev: Evaluation, folder: str | Path, title: str = "Strategy evaluation") -> Path:
    """Markdown report plus PNG charts (cumulative returns vs benchmark, drawdown, exposures,
    turnover) in ``folder``, with ``summary.csv`` (the table at full precision) and, for a
    signal, ``ic.csv`` (daily IC and RankIC); returns the path of ``report.md``. With
    ``ev.calibration`` (a forecast table's distribution, ``forecast_calibration``) also its
    section: coverage, quantile score, Brier against base rates, ``reliability.png``,
    ``pit.png`` and ``calibration.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    r = ev.returns.fillna(0.0)
    charts = []
    save = figure_saver(folder, charts)

    fig, ax = plt.subplots(figsize=(9, 4))
    empyrical.cum_returns(r).plot(ax=ax)
    ax.set_title("Cumulative return")
    ax.set_ylabel("return")
    save(fig, "cumulative_returns.png")

    fig, ax = plt.subplots(figsize=(9, 3))
    wealth = empyrical.cum_returns(r[["gross", "net"]], starting_value=1.0)
    (wealth / wealth.cummax() - 1).plot(ax=ax)
    ax.set_title("Drawdown")
    save(fig, "drawdown.png")

    if ev.exposures is not None and not ev.exposures.empty:
        fig, ax = plt.subplots(figsize=(9, 4))
        ev.exposures.plot(ax=ax, lw=0.8)
        ax.set_title("Realised factor exposures of the book")
        save(fig, "exposures.png")

    fig, ax = plt.subplots(figsize=(9, 3))
    ev.turnover.plot(ax=ax, lw=0.8)
    ax.set_title("Turnover (sum |w_t - w_t-1|)")
    save(fig, "turnover.png")

    if ev.quantile_returns is not None:
        fig, ax = plt.subplots(figsize=(9, 4))
        empyrical.cum_returns(ev.quantile_returns.fillna(0.0)).plot(ax=ax, lw=0.9)
        ax.set_title("Cumulative label by signal quantile")
        save(fig, "quantiles.png")

    lines = [
        f"# {title}",
        "",
        f"Period: {r.index[0]:%Y-%m-%d} .. {r.index[-1]:%Y-%m-%d} ({len(r)} bars)",
        "",
    ]
    lines += ["## Summary (gross = before costs, net = after commission + slippage)", ""]
    lines += [
        "Book returns: weights of date t held over close t -> close t+1 (traded at the close "
        "of t). The benchmark is buy & hold: no turnover or leverage of its own (blank).",
        "",
    ]
    if ev.label is not None:
        lines += [f"IC, RankIC and quantile spreads scored against {ev.label}.", ""]
    lines += [markdown_table(ev.summary), ""]
    if ev.calibration is not None:
        from .forecast_calibration import charts as calibration_charts
        from .forecast_calibration import section_lines

        calibration_charts(ev.calibration["reliability"], ev.calibration["pit"], save)
        lines += [*section_lines(ev.calibration, markdown_table), ""]
        write_text(folder / "calibration.csv", ev.calibration["table"].to_csv())
    for name in charts:
        lines += [f"![{name}]({name})", ""]
    write_text(folder / "summary.csv", ev.summary.to_csv())
    if ev.ic is not None:
        write_text(folder / "ic.csv", ev.ic.to_csv())
    return write_text(folder / "report.md", "\n".join(lines))
