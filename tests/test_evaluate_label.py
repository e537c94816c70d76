"""``evaluate`` scores a signal against the label Qlib's workflow uses: on the same predictions
its IC equals what ``SigAnaRecord`` computes (calc_ic of the prediction against the handler's
raw label ``Ref($close, -2)/Ref($close, -1) - 1``), through the library and through
``kronos-alpha evaluate``. The real-data tests skip when ../shared/data is absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DATA
from kronos_alpha.strategies import evaluate, topk_weights, write_report
from kronos_alpha.strategies.factors import forward_returns, label_text, qlib_label

CN = DATA / "cn_daily_2010_2022"
QLIB_LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
# a deterministic score Qlib computes itself: 20-day momentum, bars at or before t only
MOMENTUM = "$close/Ref($close, 20) - 1"
# spans the CSI300 review of June 2021: 25 members leave after 2021-06-14
START, END = "2021-05-10", "2021-07-09"


def small_panel():
    dates = pd.bdate_range("2021-01-04", periods=8)
    close = pd.DataFrame(
        {
            "A": [10.0, 11, 11, 12.1, 12.1, 13.0, 12.0, 12.5],
            "B": [20.0, 20, 22, 22, 22, 24.2, 23.0, 26.0],
            "C": [5.0, 5.5, 5.0, 5.0, 6.0, 6.0, 6.6, 6.0],
        },
        index=dates,
    )
    volume = pd.DataFrame(1e6, index=dates, columns=close.columns)
    volume.loc[dates[3], "C"] = 0.0  # suspended: a flat bar, as in the CSI300 data
    idx = pd.MultiIndex.from_product([dates, close.columns], names=["datetime", "instrument"])
    panel = pd.DataFrame(
        {"close": close.stack().to_numpy(), "volume": volume.stack().to_numpy()}, index=idx
    )
    return panel, close


def test_qlib_label_is_close_t2_over_close_t1():
    panel, close = small_panel()
    lab = qlib_label(panel)
    want = close.shift(-2) / close.shift(-1) - 1
    pd.testing.assert_frame_equal(lab, want, check_names=False)
    assert lab.loc[close.index[0], "A"] == pytest.approx(11 / 11 - 1)
    assert lab.loc[close.index[1], "A"] == pytest.approx(12.1 / 11 - 1)
    assert lab.iloc[-2:].isna().all().all()  # no close t+2 yet
    assert lab.loc[close.index[1], "C"] == 0.0  # into a flat suspended bar: 0, as in Qlib
    three = qlib_label(panel, horizon=3, delay=0)
    assert three.loc[close.index[2], "B"] == pytest.approx(24.2 / 22 - 1)
    assert three.loc[close.index[1], "A"] == pytest.approx(12.1 / 11 - 1)
    assert label_text() == (
        "close[t+2]/close[t+1] - 1 (Qlib's label, Ref($close, -2)/Ref($close, -1) - 1)"
    )
    assert label_text(3, 0) == "close[t+3]/close[t] - 1 (in Qlib: Ref($close, -3)/$close - 1)"


def test_evaluate_scores_t1_to_t2_and_states_it(tmp_path):
    panel, close = small_panel()
    dates = close.index[:6]
    # a look-ahead "perfect" signal for Qlib's label: IC 1 only when scored t+1 -> t+2
    perfect = (close.shift(-2) / close.shift(-1) - 1).loc[dates]
    old = (close.shift(-1) / close - 1).loc[dates]
    w = topk_weights(perfect.stack().rename("s"), 1, column="s")
    bench = pd.Series(0.001, index=close.index)
    ev = evaluate(w, panel, bench, signal=perfect.stack().rename("s"), column="s")
    assert len(ev.ic) == 6 and ev.ic.min().min() == pytest.approx(1.0)
    assert ev.summary.loc["RankIC", "net"] == pytest.approx(1.0)
    assert ev.label == label_text()
    ev_old = evaluate(w, panel, bench, signal=old.stack().rename("s"), column="s")
    assert ev_old.summary.loc["RankIC", "net"] < 0.9  # t -> t+1 is not what is scored
    # delay 0 is the old t -> t+1 scoring, still reachable on purpose
    ev0 = evaluate(w, panel, bench, signal=old.stack().rename("s"), column="s", delay=0)
    assert ev0.ic["rank_ic"].dropna().min() == pytest.approx(1.0)
    # the benchmark is buy & hold: the book's turnover is not repeated on its row
    s = ev.summary
    assert s.loc["turnover_per_day", "net"] > 0 and np.isnan(s.loc["turnover_per_day", "benchmark"])
    assert np.isnan(s.loc["mean_gross_leverage", "benchmark"])
    text = write_report(ev, tmp_path / "rep").read_text()
    assert f"scored against {label_text()}" in text
    assert "close t -> close t+1" in text
    row = next(line for line in text.splitlines() if line.startswith("| turnover_per_day |"))
    assert row.rstrip().endswith("|  |")  # blank benchmark cell
    csv = pd.read_csv(tmp_path / "rep" / "summary.csv", index_col=0)
    assert csv.loc["RankIC", "net"] == pytest.approx(1.0, abs=1e-12)


def test_evaluate_takes_a_callers_label():
    panel, close = small_panel()
    sig = (close / close.shift(1) - 1).loc[close.index[1:6]].stack().rename("s")
    w = topk_weights(sig, 1, column="s")
    fwd = forward_returns(panel, 2)
    ev = evaluate(w, panel, signal=sig, column="s", horizon=2, label=fwd, label_name="fwd2")
    direct = evaluate(w, panel, signal=sig, column="s", horizon=2, delay=1)
    assert ev.label == "fwd2" and direct.label == label_text(2, 1)
    assert not np.allclose(ev.ic["ic"], direct.ic["ic"].reindex(ev.ic.index))


def test_evaluate_help_shows_the_defaults_and_the_label(capsys):
    from kronos_alpha.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "close[t+1+h]/close[t+1] - 1 (1: Qlib's label) (default: 1)" in text
    assert "Ref($close, -2)/Ref($close, -1) - 1" in text
    for shown in ("(default: csi300)", "(default: topk)", "(default: 50)", "(default: 0.0005)"):
        assert shown in text
    assert "(default: None)" not in text


def test_a_signal_file_is_read_through_the_input_boundary(tmp_path):
    from kronos_alpha.cli.evaluate import read_signal
    from kronos_alpha.inference.panel import InputError

    days = pd.bdate_range("2021-01-04", periods=3)
    rows = pd.DataFrame({"datetime": days.repeat(2).strftime("%Y-%m-%d"),
                         "instrument": ["SH600000", "SZ000001"] * 3,
                         "score": [0.1, -0.2, float("nan"), 0.3, 0.0, 0.5]})  # fmt: skip
    rows.to_csv(tmp_path / "s.csv", sep=";", index=False)
    signal, column = read_signal(str(tmp_path / "s.csv"), None)
    assert column == "score" and len(signal) == 6 and signal.isna().sum() == 1  # NaN: no score
    assert signal.loc[(days[2], "SZ000001")] == 0.5
    bad = rows.astype({"instrument": object, "score": object})
    bad.loc[4, "instrument"] = None  # sort_index raised a TypeError on it
    bad.to_csv(tmp_path / "noinst.csv", index=False)
    with pytest.raises(
        InputError, match="'instrument' names no instrument at data row 4 \\(1 such"
    ):
        read_signal(str(tmp_path / "noinst.csv"), None)
    bad = rows.astype({"score": object})
    bad.loc[3, "score"] = "x"
    bad.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(InputError, match="column 'score' is not numeric at row 3 \\('x'"):
        read_signal(str(tmp_path / "text.csv"), None)


@pytest.fixture(scope="module")
def qlib_run():
    """What a qrun's SignalRecord and SigAnaRecord hold: predictions and the raw label from
    a csi300 handler (DatasetH.prepare(..., col_set="label", data_key=DK_R)), and the IC."""
    pytest.importorskip("qlib")
    if not (CN / "calendars" / "day.txt").is_file():
        pytest.skip(f"real data folder {CN} is absent")
    from kronos_alpha.strategies.panel import init_qlib
    from qlib.contrib.eva.alpha import calc_ic
    from qlib.data.dataset import DatasetH
    from qlib.data.dataset.handler import DataHandlerLP

    init_qlib(CN)
    handler = DataHandlerLP(
        instruments="csi300",
        start_time=START,
        end_time=END,
        data_loader={
            "class": "QlibDataLoader",
            "kwargs": {
                "config": {"feature": ([MOMENTUM], ["MOM20"]), "label": ([QLIB_LABEL], ["LABEL0"])}
            },
        },
    )
    ds = DatasetH(handler, segments={"test": (START, END)})
    pred = ds.prepare("test", col_set="feature", data_key=DataHandlerLP.DK_I)["MOM20"]
    label = ds.prepare("test", col_set="label", data_key=DataHandlerLP.DK_R)
    ic, ric = calc_ic(pred, label.iloc[:, 0])  # SigAnaRecord._generate, verbatim
    return {
        "pred": pred.astype(float).rename("score"),
        "label": label.iloc[:, 0],
        "ic": ic,
        "ric": ric,
    }


def leavers_last_days(pred):
    """(date, name) pairs on a name's last two member days before it leaves the pool."""
    from qlib.data import D

    spans = D.list_instruments(D.instruments("csi300"), start_time=START, end_time=END)
    dates = pred.index.get_level_values("datetime").unique().sort_values()
    out = []
    for name, sp in spans.items():
        last = max(e for _, e in sp)
        if last < dates[-1]:
            out += [(d, name) for d in dates[dates <= last][-2:]]
    return out


def test_evaluate_ic_equals_sig_ana_record_ic(qlib_run):
    from kronos_alpha.strategies.panel import load_panel

    pred = qlib_run["pred"]
    assert leavers_last_days(pred), "the slice should hold names leaving the pool"
    names = sorted(pred.index.get_level_values("instrument").unique())
    # each name's full history, as Qlib's label reads it (also past a name's last member day)
    panel, bench = load_panel(CN, names, START, "2021-07-31")
    sig = pred.dropna()
    w = topk_weights(sig, 30, column="score")
    ev = evaluate(w, panel, bench, signal=sig, column="score")
    want_ic, want_ric = qlib_run["ic"].dropna(), qlib_run["ric"].dropna()
    assert len(want_ic) >= 35 and want_ic.abs().mean() > 0.02
    pd.testing.assert_index_equal(ev.ic.index, want_ic.index, check_names=False)
    assert np.abs(ev.ic["ic"].to_numpy() - want_ic.to_numpy()).max() < 1e-6
    assert np.abs(ev.ic["rank_ic"].to_numpy() - want_ric.to_numpy()).max() < 1e-6
    assert abs(ev.summary.loc["IC", "net"] - qlib_run["ic"].mean()) < 1e-6
    assert abs(ev.summary.loc["RankIC", "net"] - qlib_run["ric"].mean()) < 1e-6
    icir = qlib_run["ic"].mean() / qlib_run["ic"].std()
    assert abs(ev.summary.loc["ICIR", "net"] - icir) < 1e-6
    # the test can fail: the old t -> t+1 scoring is far from Qlib's IC on these predictions
    old = evaluate(w, panel, bench, signal=sig, column="score", label=forward_returns(panel, 1))
    assert abs(old.summary.loc["IC", "net"] - qlib_run["ic"].mean()) > 1e-3


def test_cli_evaluate_ic_equals_sig_ana_record_ic(qlib_run, tmp_path):
    """The door a user takes with a qrun's predictions: --market csi300 (a pool whose panel
    ends a name where it leaves), the label from each name's full history."""
    from kronos_alpha.cli import main

    path = tmp_path / "pred.parquet"
    qlib_run["pred"].dropna().reset_index().to_parquet(path)
    out = tmp_path / "report"
    argv = ["evaluate", "--signal", str(path), "--provider-uri", str(CN), "--market", "csi300"]
    rc = main([*argv, "--topk", "30", "--warmup-days", "60", "--out", str(out)])
    assert rc == 0
    ic = pd.read_csv(out / "ic.csv", index_col=0, parse_dates=True)
    want = qlib_run["ic"].dropna()
    assert np.abs(ic["ic"].to_numpy() - want.reindex(ic.index).to_numpy()).max() < 1e-6
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert abs(summary.loc["IC", "net"] - qlib_run["ic"].mean()) < 1e-6
    assert abs(summary.loc["RankIC", "net"] - qlib_run["ric"].mean()) < 1e-6
    assert np.isnan(summary.loc["turnover_per_day", "benchmark"])
    assert f"scored against {label_text()}" in (out / "report.md").read_text()


def test_cli_evaluate_adds_the_calibration_section_for_a_forecast_table(qlib_run, tmp_path):
    """A forecast table (ret_qNN, prob_up, hist_vol) gets coverage, quantile score, Brier,
    reliability and PIT; its distribution here is the Gaussian baseline's own, so the two
    score alike (the section compares like with like). A plain score file gets none."""
    from scipy.stats import norm

    from kronos_alpha.cli import main

    h = 5
    pred = qlib_run["pred"].dropna()
    table = pd.DataFrame({"pred_return": pred, "hist_vol": 0.02, "prob_up": 0.5})
    for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95):
        table[f"ret_q{q * 100:g}"] = 0.02 * np.sqrt(h) * norm.ppf(q)
    path = tmp_path / "forecast.parquet"
    table.reset_index().to_parquet(path)
    out = tmp_path / "report"
    argv = ["evaluate", "--signal", str(path), "--provider-uri", str(CN), "--horizon", str(h)]
    assert main([*argv, "--topk", "30", "--warmup-days", "60", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Calibration of the forecast distribution" in text
    assert "close[t+5]/close[t] - 1" in text
    for png in ("reliability.png", "pit.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in text
    cal = pd.read_csv(out / "calibration.csv", index_col=0)
    f, g = cal.loc["forecast"], cal.loc["hist_vol_gaussian"]
    for col in ("coverage50", "coverage80", "coverage90", "quantile_score", "Brier"):
        assert f[col] == pytest.approx(g[col], rel=1e-6), col
    assert 0 < f["coverage80"] < 1 and f["Brier"] == pytest.approx(0.25)
    assert cal.loc["forecast", "pairs"] > 0.9 * len(pred)
    # a plain score file: no distribution, no section
    plain = tmp_path / "score.parquet"
    pred.rename("score").reset_index().to_parquet(plain)
    out2 = tmp_path / "report2"
    argv = ["evaluate", "--signal", str(plain), "--provider-uri", str(CN)]
    assert main([*argv, "--topk", "30", "--warmup-days", "60", "--out", str(out2)]) == 0
    assert "Calibration" not in (out2 / "report.md").read_text()
    assert not (out2 / "calibration.csv").exists()
