"""The command line: one ForecastSettings from the options, the input boundary's column names,
one-line errors, and --help showing the defaults."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kronos_alpha.cli import build_parser, main
from kronos_alpha.cli.forecast import DEFAULTS, read_bars, settings_from
from kronos_alpha.inference.panel import InputError, split_panel
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
