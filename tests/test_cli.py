"""The command line: one ForecastSettings from the options, the input boundary's column names,
one-line errors, and --help showing the defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kronos_alpha.cli import build_parser, main
from kronos_alpha.cli.forecast import DEFAULTS, read_bars, settings_from
from kronos_alpha.inference.frames import split_panel
from kronos_alpha.inference.panel import InputError
from kronos_alpha.inference.settings import ForecastSettings


def test_forecast_options_build_one_settings_with_the_library_defaults():
    args = build_parser().parse_args(["forecast"])
    s = settings_from(args)
    # one set of defaults: ForecastSettings', but more paths for a one-off forecast and chart
    assert s == ForecastSettings(sample_count=20, return_paths=True) and DEFAULTS.sample_count == 20
    args = build_parser().parse_args(
        ["forecast", "--lookback", "32", "--samples", "4", "--top-p", "0.5", "--chart", "", "-q"]
    )
    s = settings_from(args)
    assert (s.lookback, s.sample_count, s.top_p, s.return_paths, s.progress) == (
        32, 4, 0.5, False, False,
    )  # fmt: skip
    assert s.int8 is False
    assert settings_from(build_parser().parse_args(["forecast", "--int8"])).int8 is True


def test_forecast_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["forecast", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = ForecastSettings()
    assert f"bars of context (default: {d.lookback})" in text
    assert f"nucleus sampling mass (default: {d.top_p})" in text
    assert "paths per forecast (default: 20)" in text
    assert "(default: None)" not in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lookback", "1"], "lookback must be at least 2, got 1"),
        (["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (["--dtype", "int8"], "dtype must be one of"),
    ],
)
def test_bad_settings_are_one_line_errors_before_any_data_is_read(argv, message, capsys, tmp_path):
    missing = str(tmp_path / "nope.csv")  # never read: the settings fail first
    assert main(["forecast", "-i", missing, *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("kronos-alpha forecast: error: ") and message in err[0]
    )


def bars_csv(tmp_path, columns) -> str:
    rng = np.random.default_rng(0)
    n = 30
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    body = {"Date": pd.bdate_range("2021-01-04", periods=n).strftime("%Y-%m-%d")}
    body.update({c: close * (1 + 0.001 * i) for i, c in enumerate(columns)})
    df = pd.concat([pd.DataFrame(body).assign(Ticker=t) for t in ("AAA", "BBB")])
    path = tmp_path / "bars.csv"
    df.to_csv(path, index=False)
    return str(path)


def test_read_bars_uses_the_input_boundarys_column_names(tmp_path, capsys):
    path = bars_csv(tmp_path, ["$Open", "$High", "$Low", "$Close", "$Volume"])
    frames = read_bars(path)
    assert sorted(frames) == ["AAA", "BBB"]
    assert list(frames["AAA"].columns) == ["open", "high", "low", "close", "volume"]
    assert isinstance(frames["AAA"].index, pd.DatetimeIndex) and len(frames["AAA"]) == 30
    assert list(split_panel(frames)["BBB"].columns) == ["open", "high", "low", "close", "volume"]
    clash = bars_csv(tmp_path, ["open", "high", "low", "close", "Close"])
    with pytest.raises(InputError, match="'close' and 'Close' are both 'close'"):
        read_bars(clash)
    assert main(["forecast", "-i", clash, "-q"]) == 1
    assert "are both 'close'" in capsys.readouterr().err


def test_read_bars_names_rows_without_an_instrument_and_reads_other_separators(tmp_path):
    df = pd.read_csv(bars_csv(tmp_path, ["open", "high", "low", "close", "volume"]))
    for sep, name in (("\t", "x.tsv"), (";", "x.csv")):  # a spreadsheet's export, say
        df.to_csv(tmp_path / name, sep=sep, index=False)
        frames = read_bars(str(tmp_path / name))
        assert sorted(frames) == ["AAA", "BBB"] and len(frames["BBB"]) == 30
    blank = df.astype({"Ticker": object})
    blank.loc[[3, 40], "Ticker"] = ""  # read back as NaN: groupby dropped these rows
    blank.to_csv(tmp_path / "blank.csv", index=False)
    with pytest.raises(InputError, match="'ticker' names no instrument at data row 3 "
                                         "\\(2 such row"):  # fmt: skip
        read_bars(str(tmp_path / "blank.csv"))
    offsets = df.iloc[:2].assign(Date=["2024-03-08 09:30:00-05:00", "2024-03-11 09:30:00-04:00"])
    offsets.to_csv(tmp_path / "dst.csv", index=False)
    with pytest.raises(InputError, match="mixes time zones.*daylight saving"):
        read_bars(str(tmp_path / "dst.csv"))


def test_read_bars_takes_a_parquet_indexed_by_time(tmp_path):
    pytest.importorskip("pyarrow")
    idx = pd.DatetimeIndex(pd.bdate_range("2021-01-04", periods=5), name="Datetime")
    df = pd.DataFrame({c: np.arange(5.0) + 1 for c in ("Open", "High", "Low", "Close")}, idx)
    df.to_parquet(tmp_path / "x.parquet")
    frames = read_bars(str(tmp_path / "x.parquet"))
    assert list(frames) == ["x"] and frames["x"].index.equals(idx.rename("datetime"))


def test_info_resolves_zoo_names_and_folders_as_forecast_does(capsys, monkeypatch):
    import json

    import kronos_alpha.model.hub as hub
    from kronos_alpha.model.zoo import DEFAULT_DIR

    assert main(["info", "--model", str(DEFAULT_DIR)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"]["parameters"] > 0 and info["tokenizer"]["parameters"] > 0
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    assert main(["info", "--model", "kronos-small"]) == 1  # resolved to its Hub id, offline
    err = capsys.readouterr().err.strip()
    assert "'NeoQuasar/Kronos-small' cannot be downloaded" in err and "\n" not in err


def test_an_unavailable_device_is_a_one_line_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert main(["forecast", "--sample", "AAPL", "--device", "cuda", "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "kronos-alpha forecast: error: device 'cuda' is not available: this torch build has no CUDA; use device='cpu'"
    )


def test_a_forecast_with_nothing_to_forecast_fails_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "f.csv"
    argv = ["forecast", "--sample", "AAPL", "--date", "2000-03-10", "--out", str(out)]
    assert main([*argv, "--chart", "", "-q"]) == 1
    err = capsys.readouterr().err
    assert "no forecast: every requested window was skipped" in err and "'short_history': 1" in err
    assert not out.exists()


def test_threads_are_chosen_reported_and_overridable(tmp_path, capsys, monkeypatch):
    import json
    import os

    from kronos_alpha.cli.forecast import choose_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.8, 1.0, 1.0))
    assert choose_threads(None) == (1, "auto: 2 core(s), load average 1.80")  # a busy box: one
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert choose_threads(None)[0] == 2
    assert choose_threads(3) == (3, "--threads")
    out = tmp_path / "f.csv"
    assert (
        main(
            [
                "forecast",
                "--sample",
                "AAPL",
                "--out",
                str(out),
                "--chart",
                "",
                "-q",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert report["threads"] == 1 and report["threads_chosen"] == "--threads"


# -- calibration: fit on past dates, save, load, refuse ------------------------------------------
CAL_ARGS = ["--lookback", "16", "--horizon", "3", "--samples", "4", "--calendar", "business",
            "--chart", "", "-q", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A random tiny model and tokenizer saved as folders, and a CSV of two instruments' bars."""
    import torch
    from conftest import TINY_MODEL, TINY_TOKENIZER, make_panel

    from kronos_alpha import Kronos, KronosTokenizer

    root = tmp_path_factory.mktemp("cli_calibration")
    torch.manual_seed(0)
    Kronos(**TINY_MODEL).eval().save_pretrained(root / "model")
    KronosTokenizer(**TINY_TOKENIZER).eval().save_pretrained(root / "tokenizer")
    panel = make_panel(2, 120, names=["AAA", "BBB"], seed=4, sigma=0.015)
    long = pd.concat({n: df for n, df in panel.items()}, names=["ticker", "date"]).reset_index()
    long.to_csv(root / "bars.csv", index=False)
    model = ["--model", str(root / "model"), "--tokenizer", str(root / "tokenizer")]
    return root, panel, ["-i", str(root / "bars.csv"), *model, *CAL_ARGS]


def forecast_cli(argv, capsys) -> tuple[int, dict | None, str]:
    import json

    code = main(["forecast", *argv])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    return code, (json.loads(last) if last.startswith("{") else None), err


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "the file is empty (not even a header)"),
        (b"date,open,high,low,close\n", "no bars (a header and no rows)"),
        (b"date,open,high,low,close\n2021-01-04,1,1,1,\xff\n", "not UTF-8 text (byte b'\\xff'"),
        (
            b"date,open,high,low,close\n2021-01-04,1,1,1,1\nsoon,1,1,1,1\n",
            "column 'date' are not timestamps ('soon' at position 1; 1 such value(s))",
        ),
    ],
)
def test_an_unreadable_input_file_is_named_with_the_reason(tmp_path, capsys, content, problem):
    f = tmp_path / "bars.csv"
    f.write_bytes(content)
    code, _, err = forecast_cli(["-i", str(f), "--chart", "", "-q"], capsys)
    assert code == 1 and f"error: {f}: {problem}" in err


def test_the_chart_goes_beside_the_table_not_into_the_working_folder(
    tiny_run, tmp_path, capsys, monkeypatch
):
    root, _, base = tiny_run
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = [a for a in base if a != "--chart"]
    argv.remove("")  # CAL_ARGS' "--chart ''": here the default chart
    out = tmp_path / "tables" / "f.csv"
    out.parent.mkdir()
    code, report, err = forecast_cli([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    assert f"chart: {out.with_suffix('.png')}" in err
    assert out.with_suffix(".png").stat().st_size > 10_000 and list(cwd.iterdir()) == []


def test_forecast_calibrates_on_a_date_range_saves_and_loads_the_calibrator(
    tiny_run, tmp_path, capsys
):
    import json

    from kronos_alpha.inference.calibration import Calibrator
    from kronos_alpha.inference.forecaster import Forecaster

    root, panel, base = tiny_run
    times = next(iter(panel.values())).index
    span = f"{times[20]:%Y-%m-%d}:{times[80]:%Y-%m-%d}"
    out, saved = tmp_path / "fit.csv", tmp_path / "cal.json"
    argv = [*base, "--last", "5", "--out", str(out), "--calibrate-dates", span]
    code, report, err = forecast_cli([*argv, "--save-calibrator", str(saved)], capsys)
    assert code == 0, err
    cal = report["calibration"]
    assert report["calibrated"] is True and cal["calibrated"] and cal["source"] == "fitted"
    assert cal["first_date"] == str(times[20]) and cal["last_date"] == str(times[80])
    assert cal["realised_end"] == str(times[83]) and cal["pairs"] == 2 * 61 and cal["dates"] == 61
    assert cal["scale"] == "fitted" and len(cal["coef"]) == 4 and cal["horizon"] == 3
    assert (
        f"calibration: fitted, scale {cal['scale']}, decision dates {times[20]:%Y-%m-%d} .. " in err
    )
    # the table: calibrated columns and the raw_ ones, equal to the library's for the same fit
    got = pd.read_csv(out, index_col=[0, 1], parse_dates=[0])
    assert {"ret_q10", "raw_ret_q10", "prob_up", "raw_prob_up", "ret_std", "raw_ret_std"} <= set(
        got
    )
    fc = Forecaster(str(root / "model"), str(root / "tokenizer"), lookback=16, horizon=3,
                    sample_count=4, calendar="business", progress=False)  # fmt: skip
    want = fc.calibrate(panel, times[20:81]).forecast(panel, times[-5:])
    np.testing.assert_allclose(got[want.columns].to_numpy(), want.to_numpy(), rtol=1e-12)
    assert not np.allclose(got["ret_q10"], got["raw_ret_q10"])
    assert Calibrator.load(saved) == fc.calibrator_ and report["calibrator_saved"] == str(saved)
    assert json.loads(saved.read_text())["format"] == "kronos-alpha calibrator"
    # the saved calibrator, loaded: the same table, and the report names the file
    loaded = tmp_path / "loaded.csv"
    code, report, err = forecast_cli(
        [*base, "--last", "5", "--out", str(loaded), "--calibrator", str(saved)], capsys
    )
    assert code == 0, err
    assert report["calibration"]["source"] == str(saved) and report["calibration"]["pairs"] == 122
    pd.testing.assert_frame_equal(
        pd.read_csv(loaded, index_col=[0, 1]), pd.read_csv(out, index_col=[0, 1])
    )
    # without calibration the report says so and the table has no raw_ columns
    code, report, _ = forecast_cli([*base, "--out", str(tmp_path / "raw.csv")], capsys)
    assert code == 0 and report["calibration"] == {"calibrated": False}
    assert not [c for c in pd.read_csv(tmp_path / "raw.csv").columns if c.startswith("raw_")]


def test_calibrate_every_alone_ends_before_the_first_forecast_date(tiny_run, tmp_path, capsys):
    _, panel, base = tiny_run
    times = next(iter(panel.values())).index
    first = times[-10]  # forecasts at the last 10 bars: outcomes up to `first` only
    for every in (1, 3):
        argv = [*base, "--last", "10", "--out", str(tmp_path / "f.csv")]
        code, report, err = forecast_cli([*argv, "--calibrate-every", str(every)], capsys)
        assert code == 0, err
        cal = report["calibration"]
        requested = times[
            : len(times) - 10 - 3 + 1 : every
        ]  # bar 0 .. the last realised by `first`
        assert cal["dates"] == len(requested) and cal["last_date"] == str(requested[-1])
        assert cal["first_date"] == str(requested[requested >= times[15]][0])  # warm-up skipped
        assert "inside the calibration span" not in err  # out of sample: no warning
        if every == 1:  # the outcome of the last date is the first decision's bar, no later
            assert cal["realised_end"] == str(first)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--calibrate-dates", "2020-02-03:"], None),  # the open end: fine (contrast)
        (
            ["--calibrate-dates", "2020-02-03:2020-06-16"],
            "decision date 2020-06-12 00:00:00 has no realised 3-bar return",
        ),
        (["--calibrate-dates", "2020-02-03"], "--calibrate-dates must be START:END"),
        (["--calibrate-dates", "2020-03-02:2020-02-03"], "START 2020-03-02 00:00:00 is after END"),
        (["--calibrate-every", "0"], "--calibrate-every must be at least 1"),
        (["--save-calibrator", "x.json"], "--save-calibrator needs a calibration"),
        (["--tune"], "--tune needs a calibration"),
        (["--calibrator", "x.json", "--calibrate-every", "2"], "give one or the other"),
        (["--calibrator", "nope.json"], "calibrator file not found: nope.json"),
    ],
)
def test_refused_calibrations_exit_1_with_the_message(tiny_run, tmp_path, capsys, extra, message):
    _, panel, base = tiny_run
    out = tmp_path / "f.csv"
    code, _, err = forecast_cli([*base, "--out", str(out), *extra], capsys)
    if message is None:
        assert code == 0, err
        return
    assert code == 1 and message in err, err
    line = [x for x in err.strip().splitlines() if "error:" in x]
    assert len(line) == 1 and line[0].startswith("kronos-alpha forecast: error: ")
    assert not out.exists()


def test_a_calibrator_for_another_horizon_is_refused(tiny_run, tmp_path, capsys):
    _, panel, base = tiny_run
    saved = tmp_path / "h3.json"
    argv = [*base, "--out", str(tmp_path / "a.csv"), "--calibrate-every", "2"]
    assert forecast_cli([*argv, "--save-calibrator", str(saved)], capsys)[0] == 0
    argv = [*base, "--horizon", "5", "--out", str(tmp_path / "b.csv"), "--calibrator", str(saved)]
    code, _, err = forecast_cli(argv, capsys)
    assert code == 1 and "fitted for horizon 3, the forecaster's horizon is 5" in err
    assert not (tmp_path / "b.csv").exists()


def test_the_charts_title_gives_the_calibrated_band_beside_the_samples():
    from kronos_alpha.cli.forecast import calibrated_note

    rows = pd.DataFrame({"ret_q10": [-0.0564], "ret_q90": [0.0614], "prob_up": [0.476]})
    assert calibrated_note(rows) == ""  # raw: the chart's own sample figures only
    rows["raw_prob_up"] = 0.45
    assert calibrated_note(rows) == " (calibrated: 10-90% [-5.64%, +6.14%], P(up) 48%)"
