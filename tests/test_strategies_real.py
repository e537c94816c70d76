"""kronos_alpha.strategies on a CSI300 subset of ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED

pytest.importorskip("qlib")

DATA = SHARED / "data" / "cn_daily_2010_2022"
if not (DATA / "calendars" / "day.txt").is_file():
    pytest.skip(f"real data folder {DATA} is absent", allow_module_level=True)

from kronos_alpha.strategies import (  # noqa: E402
    daily_returns,
    evaluate,
    factor_exposures,
    optimized_book,
    realised_exposures,
    residualize,
    topk_weights,
)
from kronos_alpha.strategies.panel import load_panel  # noqa: E402

from kronos_alpha.cli import main  # noqa: E402

START, END = "2020-09-01", "2021-03-31"


@pytest.fixture(scope="module")
def real():
    import qlib  # noqa: F401
    from kronos_alpha.strategies.panel import init_qlib
    from qlib.data import D

    init_qlib(DATA)
    pool = D.list_instruments(
        D.instruments("csi300"), start_time="2021-01-04", end_time="2021-01-04", as_list=True
    )
    names = sorted(pool)[:36]
    panel, bench = load_panel(DATA, names, START, END)
    exp = factor_exposures(panel, bench, beta_window=40, momentum_window=40, momentum_skip=5)
    close = panel["close"].unstack()
    reversal = -(close / close.shift(5) - 1)  # 5-day reversal: bars at or before t only
    dates = close.index[(close.index >= "2021-01-04") & (close.index <= "2021-02-26")]
    signal = reversal.loc[dates].stack().rename("score").to_frame()
    return {
        "panel": panel,
        "bench": bench,
        "exp": exp,
        "signal": signal,
        "dates": dates,
        "names": names,
    }


def test_real_neutral_book_exposures_within_bound(real):
    eps = 0.02
    w = optimized_book(
        real["signal"],
        real["exp"],
        daily_returns(real["panel"]),
        column="score",
        rebalance_every=1,
        max_exposure=eps,
        lower=-0.08,
        upper=0.08,
        progress=False,
    )
    got = realised_exposures(w, real["exp"])
    assert got.abs().to_numpy().max() <= eps + 1e-6
    raw = realised_exposures(topk_weights(real["signal"], 8, column="score"), real["exp"])
    assert raw.abs().to_numpy().max() > 5 * eps


def test_real_residual_signal_and_evaluation(real):
    res = residualize(real["signal"], real["exp"], column="score")
    X = real["exp"].loc[real["dates"][10]].assign(one=1.0)
    r = res.loc[real["dates"][10]].dropna()
    assert np.abs(X.loc[r.index].T.to_numpy() @ r.to_numpy()).max() < 1e-8
    w = topk_weights(res, 8, n_drop=2, hold_period=3)
    ev = evaluate(w, real["panel"], real["bench"], signal=res, exposures=real["exp"])
    assert ((w > 0).sum(axis=1) == 8).all()
    assert ev.returns.index[0] > real["dates"][0] and len(ev.ic) == len(real["dates"]) - 0
    assert ev.summary.loc["turnover_per_day", "net"] > 0
    assert ev.summary.loc["annual_return", "net"] < ev.summary.loc["annual_return", "gross"]


def test_real_evaluate_cli(real, tmp_path):
    sig = real["signal"].reset_index()
    path = tmp_path / "signal.csv"
    sig.to_csv(path, index=False)
    out = tmp_path / "report"
    rc = main(
        [
            "evaluate",
            "--signal",
            str(path),
            "--provider-uri",
            str(DATA),
            "--market",
            ",".join(real["names"]),
            "--topk",
            "6",
            "--n-drop",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = (out / "report.md").read_text()
    assert "information_ratio" in text and "RankIC" in text
    assert "scored against close[t+2]/close[t+1] - 1 (Qlib's label" in text
    assert (out / "exposures.png").is_file() and (out / "drawdown.png").is_file()
    rc = main(
        [
            "evaluate",
            "--signal",
            str(path),
            "--provider-uri",
            str(DATA),
            "--market",
            ",".join(real["names"]),
            "--book",
            "neutral",
            "--residualize",
            "--max-weight",
            "0.1",
            "--horizon",
            "3",
            "--out",
            str(tmp_path / "neutral"),
        ]
    )
    assert rc == 0
    text = (tmp_path / "neutral" / "report.md").read_text()
    assert "scored against close[t+4]/close[t+1] - 1" in text
    bad = tmp_path / "bad.csv"
    sig.drop(columns="instrument").to_csv(bad, index=False)
    assert main(["evaluate", "--signal", str(bad), "--provider-uri", str(DATA)]) == 1


def test_real_qlib_backtest_with_topk_strategy_config(real):
    """The strategy loads from a config dict exactly as from a PortAnaRecord YAML."""
    from qlib.backtest import backtest

    strategy = {
        "class": "TopKWeightStrategy",
        "module_path": "kronos_alpha.adapters.qlib",
        "kwargs": {"signal": real["signal"], "topk": 6, "n_drop": 2, "hold_period": 3},
    }
    executor = {
        "class": "SimulatorExecutor",
        "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True, "verbose": False},
    }
    pm, _ = backtest(
        start_time="2021-01-05",
        end_time="2021-02-26",
        strategy=strategy,
        executor=executor,
        benchmark="SH000300",
        account=1e8,
        exchange_kwargs={
            "freq": "day",
            "limit_threshold": 0.095,
            "deal_price": "close",
            "codes": real["names"],
            "open_cost": 0.0005,
            "close_cost": 0.0015,
            "min_cost": 5,
        },
    )
    report, positions = pm["1day"]
    counts = [len(positions[d].get_stock_list()) for d in report.index]
    # the target always holds 6; Qlib's exchange blocks some trades (price limits, suspension),
    # so on a few days the executed book holds 6 +/- n_drop names
    assert counts[-1] == 6 and 4 <= min(counts[1:]) and max(counts) <= 8
    assert sum(c == 6 for c in counts) >= 0.6 * len(counts)
    assert (report["turnover"].iloc[1:] > 0).any()
    assert (report["cash"] / report["account"]).iloc[
        -1
    ] < 0.1  # invested (risk_degree 0.95), not cash
