"""The walk-forward report: every model against every metric, with charts.

Per model, over all windows' decision dates:
- IC / RankIC (Qlib's calc_ic, via ``evaluation.evaluate``) of the score against the h-bar
  forward return close t -> close t+h (``factors.forward_returns``, given to ``evaluate`` as
  its label: not its Qlib t+1 -> t+2 default, as these books trade at the close of t), with
  Newey-West t-statistics (lag h - 1 observations: conservative when decisions are spaced by
  more than one bar);
- a long-only top-K book (``topk_weights``) evaluated by ``evaluate`` with costs (net) and
  without (gross), against the benchmark;
- for Kronos, the probabilistic quality of the h-bar return distribution from the sampled
  paths (raw models) or the 99 calibrated quantiles (calibrated models): coverage of the
  central 50, 80 and 90% intervals, the ensemble CRPS, the Brier score of prob_up against
  two base rates, a reliability diagram and a PIT histogram (``probabilistic``,
  ``forecast_calibration``), against a Gaussian with zero mean and the historical
  volatility of the last ``hist_vol_window`` bars (scaled by sqrt(h)), on the same
  (t, instrument) pairs;
- lgb_alpha158_kronos against lgb_alpha158: the paired RankIC difference date by date with
  its Newey-West t (``stacked_vs_lgb.csv``).
Realised returns are ``factors.forward_returns`` (daily returns clipped at 30%, NaN across a
suspension); pairs without one are left out of the probabilistic metrics.

Files in the output folder: ``report.md``, the PNG charts, ``table.csv`` (the table),
``calibration.csv`` (the calibration section's table) and ``signals.parquet`` (every
model's score at every (t, instrument) pair).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.files import atomic_write, write_parquet, write_text

from .. import forecast_calibration as fcal
from ..evaluation import evaluate, figure_saver, markdown_table
from ..factors import forward_returns
from ..forecast_metrics import ideal_sample_coverage, newey_west_tstat
from ..topk import topk_weights
from .config import MODELS
from .probabilistic import collect_prob_up, probabilistic


def collect(results: list[dict]) -> tuple[pd.DataFrame, dict, pd.Series]:
    signals = pd.concat([r["signals"] for r in results]).sort_index()
    samples = {}
    for name in [m for m in MODELS if m.startswith("kronos")]:
        parts = [r["samples"][name] for r in results if name in r["samples"]]
        if parts:
            samples[name] = pd.concat(parts).sort_index()
    vol = pd.concat([r["hist_vol"] for r in results]).sort_index()
    return signals, samples, vol


def signal_rows(signals, data, cfg) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    h = cfg["windows"]["horizon"]
    p = cfg["portfolio"]
    rows, curves, ics = {}, {}, {}
    bench_row = None
    label = forward_returns(data.panel, h)
    for name in signals.columns:
        sig = signals[name].dropna()
        weights = topk_weights(sig, p["topk"], n_drop=p["n_drop"], hold_period=p["hold_period"])
        ev = evaluate(
            weights,
            data.panel,
            benchmark=data.benchmark,
            signal=sig,
            commission=p["commission"],
            slippage=p["slippage"],
            horizon=h,
            label=label,
            label_name=f"close[t+{h}]/close[t] - 1 (forward_returns)",
        )
        ic_m, _, ic_t = newey_west_tstat(ev.ic["ic"], h - 1)
        ric_m, _, ric_t = newey_west_tstat(ev.ic["rank_ic"], h - 1)
        s = ev.summary
        rows[name] = {
            "IC": ic_m,
            "IC_t_NW": ic_t,
            "RankIC": ric_m,
            "RankIC_t_NW": ric_t,
            "ICIR": s.loc["ICIR", "net"],
            "dates": float(ev.ic["rank_ic"].notna().sum()),
            "ann_ret_gross": s.loc["annual_return", "gross"],
            "ann_ret_net": s.loc["annual_return", "net"],
            "excess_net": s.loc["excess_annual_return", "net"],
            "sharpe_net": s.loc["sharpe", "net"],
            "IR_net": s.loc["information_ratio", "net"],
            "maxDD_net": s.loc["max_drawdown", "net"],
            "turnover_day": s.loc["turnover_per_day", "net"],
        }
        curves[name] = ev.returns["net"]
        ics[name] = ev.ic["rank_ic"]
        if bench_row is None:
            curves["benchmark"] = ev.returns["benchmark"]
            bench_row = {
                "ann_ret_gross": s.loc["annual_return", "benchmark"],
                "ann_ret_net": s.loc["annual_return", "benchmark"],
                "sharpe_net": s.loc["sharpe", "benchmark"],
                "maxDD_net": s.loc["max_drawdown", "benchmark"],
            }
    if bench_row is not None:
        rows["benchmark (buy & hold)"] = bench_row
    return pd.DataFrame(rows).T, curves, pd.DataFrame(ics)


def paired_vs(ics: pd.DataFrame, base: str, lag: int) -> pd.DataFrame:
    """Mean RankIC difference of each model minus ``base`` on their common dates, NW t."""
    rows = {}
    for name in ics.columns:
        if name == base:
            continue
        diff = (ics[name] - ics[base]).dropna()
        m, _, t = newey_west_tstat(diff, lag)
        rows[name] = {"RankIC_diff": m, "t_NW": t, "dates": float(len(diff))}
    return pd.DataFrame(rows).T


def charts(curves, ics, calib, folder: Path, rel=None, pit=None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import empyrical
    import matplotlib.pyplot as plt

    names = []
    save = figure_saver(folder, names)
    palette = plt.get_cmap("tab10").colors
    order = [*MODELS, "hist_vol_gaussian"]
    colour = {m: palette[i % len(palette)] for i, m in enumerate(order)} | {"benchmark": "black"}

    def legend(ax):  # outside the axes: it never covers a line
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for name, r in curves.items():
        empyrical.cum_returns(r.fillna(0.0)).plot(
            ax=ax, lw=1.6 if name.startswith("kronos") else 1.0, label=name,
            ls="--" if name == "benchmark" else "-", color=colour.get(name),
        )  # fmt: skip
    ax.set_title("Cumulative return of the top-K books, net of costs")
    legend(ax)
    save(fig, "cumulative_returns.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    roll = ics.rolling(12, min_periods=4).mean()
    for name in roll.columns:
        roll[name].plot(ax=ax, lw=1.0, color=colour.get(name), label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title("RankIC through time (rolling mean of 12 decision dates)")
    legend(ax)
    save(fig, "ic_through_time.png")

    if not calib.empty:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="nominal")
        for name in calib.columns:
            ax.plot(calib.index, calib[name], "o-", label=name, color=colour.get(name))
        ax.set_xlabel("nominal central-interval level")
        ax.set_ylabel("empirical coverage")
        ax.set_title("Calibration of the h-bar return intervals")
        legend(ax)
        save(fig, "calibration.png")
    if rel is not None and pit is not None:
        fcal.charts(rel, pit, save, colour)  # reliability.png, pit.png
    return names


def write_walk_forward_report(results: list[dict], data, cfg: dict, out: Path) -> dict:
    out = Path(out)
    signals, samples, vol = collect(results)
    table, curves, ics = signal_rows(signals, data, cfg)
    prob, calib, rel, pit = probabilistic(samples, collect_prob_up(results), vol, data, cfg)
    if not prob.empty:
        for name in prob.index.intersection([*MODELS, fcal.GAUSSIAN]):
            for col in ("coverage80", "CRPS", "CRPS_skill_vs_histvol"):
                table.loc[name, col] = prob.loc[name, col]
    table = table.reindex(columns=[c for c in TABLE_COLUMNS if c in table.columns])
    pngs = charts(curves, ics, calib, out, rel, pit)
    base = "kronos_zero_shot" if "kronos_zero_shot" in ics.columns else ics.columns[0]
    lag = cfg["windows"]["horizon"] - 1
    paired = paired_vs(ics, base, lag)
    stacked = stacked_pairs(ics, lag)
    if not stacked.empty:
        atomic_write(out / "stacked_vs_lgb.csv", lambda f: stacked.to_csv(f))
    if not prob.empty:
        atomic_write(out / "calibration.csv", lambda f: prob.to_csv(f))
    atomic_write(out / "table.csv", lambda f: table.to_csv(f))
    write_parquet(out / "signals.parquet", signals)
    w, p, k = cfg["windows"], cfg["portfolio"], cfg["kronos"]
    first, last = results[0]["window"], results[-1]["window"]
    lines = [
        "# Walk-forward evaluation",
        "",
        f"Out-of-sample {first['test'][0]:%Y-%m-%d} .. {last['test'][1]:%Y-%m-%d}: "
        f"{len(results)} windows (RollingGen, step {w['step']} bars, train {w['train_days']} + "
        f"valid {w['valid_days']} bars, purge {w['horizon'] + 1} bars before each later segment), "
        f"decisions every {w['decision_every']} bars, label horizon {w['horizon']} bars.",
        f"Universe: {cfg['data']['market']} members at t (point in time) among "
        f"{len(data.names)} instruments, traded at t, with a Kronos forecast; "
        f"benchmark {cfg['data']['benchmark']}.",
        f"Books: long-only top-{p['topk']}, equal weight, costs {p['commission']} + "
        f"{p['slippage']} per unit traded. Kronos: {k['model']}, lookback {k['lookback']}, "
        f"{k['sample_count']} sampled paths.",
        "",
        "## Every model x every metric",
        "",
        "IC/RankIC: mean over decision dates; *_t_NW: Newey-West t-statistic "
        f"(lag {w['horizon'] - 1}). Returns annualised (252); net = after costs. coverage80 / "
        "CRPS: h-bar return distribution (nominal coverage 0.80; CRPS lower is better; skill "
        "> 0 beats the historical-volatility Gaussian).",
        f"With {k['sample_count']} sampled paths even a perfectly calibrated sampler covers "
        f"only about {ideal_sample_coverage(k['sample_count']):.2f} with its empirical 10%-90% "
        "quantiles (simulated, Gaussian): read Kronos's coverage80 against that; the sample "
        "CRPS has no such bias.",
        "",
        markdown_table(table),
        "",
        f"## RankIC of each model minus {base}, date by date (Newey-West t)",
        "",
        markdown_table(paired) if not paired.empty else "(one model only)",
        "",
        *stacked_lines(stacked, results, lag),
        *calibration_lines(prob, rel, pit, cfg, results),
        "## Windows",
        "",
        "| window | train | valid | test | decisions | LightGBM fit | fine-tune | calibration "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        win, fits = r["window"], r["fits"]

        def seg(key, win=win):
            return f"{win[key][0]:%Y-%m-%d}..{win[key][1]:%Y-%m-%d}"

        lgb = fits.get("lgb_alpha158")
        ft = fits.get("kronos_finetuned")
        lgb_s = f"w{lgb['fitted_in_window']} it {lgb['best_iteration']}" if lgb else ""
        ft_s = ""
        if ft:
            ft_s = f"w{ft['fitted_in_window']}"
            if ft.get("val_loss_best") is not None:
                ft_s += f" val {ft['val_loss_before']:.3f}->{ft['val_loss_best']:.3f}"
        cal = fits.get("kronos_calibrated") or {}
        cal_s = ""
        if "calibrator" in cal:
            cal_s = f"{cal['first_date']}..{cal['last_date']} ({cal['dates']} dates) {cal['scale']}"
        lines.append(
            f"| {win['index']} | {seg('train')} | {seg('valid')} | {seg('test')} | "
            f"{len(win['dates'])} | {lgb_s} | {ft_s} | {cal_s} | {r['seconds']} |"
        )
    lines += [""] + [f"![{n}]({n})" for n in pngs] + [""]
    path = write_text(out / "report.md", "\n".join(lines))
    return {"report": str(path), "table": table, "paired": paired, "charts": pngs,
            "calibration": prob, "stacked": stacked}  # fmt: skip


STACKED_PAIRS = (
    ("lgb_alpha158_kronos", "lgb_alpha158"),  # what stacking Kronos gives, all told
    ("lgb_alpha158_kronos", "lgb_alpha158_sparse"),  # the features, on the very same rows
    ("lgb_alpha158_sparse", "lgb_alpha158"),  # the sparser rows and their parameters
)


def stacked_pairs(ics: pd.DataFrame, lag: int) -> pd.DataFrame:
    """Paired RankIC differences of the stacked baselines, one row per pair "a - b"."""
    rows = []
    for a, b in STACKED_PAIRS:
        if {a, b} <= set(ics.columns):
            rows.append(paired_vs(ics[[b, a]], b, lag).rename(index={a: f"{a} - {b}"}))
    return pd.concat(rows) if rows else pd.DataFrame()


def stacked_lines(stacked: pd.DataFrame, results: list[dict], lag: int) -> list[str]:
    """The lgb_alpha158_kronos vs lgb_alpha158 section (empty without both)."""
    if stacked.empty:
        return []
    infos = [r["fits"]["lgb_alpha158_kronos"] for r in results if "lgbk_model" in r]
    info = infos[-1] if infos else {}
    pca = info.get("pca")
    rows = [i["train_rows"] for i in infos]
    plain = [r["fits"]["lgb_alpha158"]["train_rows"] for r in results if "lgb_model" in r]
    return [
        "## lgb_alpha158_kronos against lgb_alpha158 (RankIC differences, date by date)",
        "",
        f"Alpha158 plus {len(info.get('kronos_columns', []))} Kronos feature columns "
        f"({', '.join(info.get('kronos_columns', []))})"
        + (f", the PCs keeping {np.sum(pca['explained_variance_ratio']):.2f} of the embedding's "
           "variance (PCA fitted on the train segment)" if pca else "")
        + f". Train rows per fit: {np.mean(rows):.0f} on the sparse date grid, against "
        f"{np.mean(plain):.0f} every day for lgb_alpha158 (mean over {len(rows)} fits); "
        f"lambda_l1 / lambda_l2 {info.get('lambda_l1', float('nan')):.1f} / "
        f"{info.get('lambda_l2', float('nan')):.1f} (Qlib's divided by the grid step). "
        "lgb_alpha158_sparse: Alpha158 alone on the same rows with the same parameters.",
        f"Newey-West lag {lag}. A positive difference: the first model ranks better.",
        "",
        markdown_table(stacked),
        "",
    ]  # fmt: skip


def calibration_lines(prob, rel, pit, cfg: dict, results: list[dict]) -> list[str]:
    """The calibration section: coverage 50/80/90, CRPS, Brier vs base rates, PIT, reliability."""
    if prob.empty:
        return []
    c = cfg["kronos"]["calibration"]
    cals = [r["fits"]["kronos_calibrated"] for r in results if "kronos_calibrated" in r["fits"]]
    cals = [x for x in cals if "calibrator" in x]
    scales = pd.Series([x["scale"] for x in cals]).value_counts().to_dict() if cals else {}
    coef = [x["calibrator"].get("coef") for x in cals if x["scale"] == "fitted"]
    fitted = (
        " The fitted scale's mean elasticities (pred_vol, hist_vol, ewma_vol): "
        + ", ".join(f"{v:.2f}" for v in np.mean(coef, axis=0)[1:])
        + "."
        if coef
        else ""
    )
    lines = [
        "## Calibration of the h-bar return distribution",
        "",
        f"Calibrated models: each window calibrates (Forecaster.calibrate) on the decision-grid "
        f"dates of the last {c['days']} bars whose outcomes close[t+{cfg['windows']['horizon']}] "
        "are realised before its test starts (rolling, purge = horizon), tune "
        f"{c['tune']}; scales chosen: {scales}. Their signal is pred_return, unchanged by "
        f"calibration (same IC and book as the raw model).{fitted}",
        "Members scored: raw = the sampled returns (intervals: their empirical quantiles), "
        "calibrated = 99 calibrated quantiles; hist_vol_gaussian = N(0, (sigma_60 sqrt(h))^2), "
        "whose prob_up is 0.5. Brier of prob_up against 1{R > 0}; base rates: the test period's "
        "own up-frequency (an in-sample constant) and the up-frequency of the universe over the "
        f"last {c['days']} bars with realised outcomes, known at t.",
        "",
    ]
    return lines + fcal.markdown(prob, rel, pit, markdown_table) + [""]


TABLE_COLUMNS = [
    "IC",
    "IC_t_NW",
    "RankIC",
    "RankIC_t_NW",
    "ICIR",
    "dates",
    "ann_ret_gross",
    "ann_ret_net",
    "excess_net",
    "sharpe_net",
    "IR_net",
    "maxDD_net",
    "turnover_day",
    "coverage80",
    "CRPS",
    "CRPS_skill_vs_histvol",
]
