"""qlib-data build/check: round trips through qlib.data.D.features and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")

from conftest import make_bars
from kronos_alpha.adapters.qlib.data import build, check, read_bin  # noqa: E402

from kronos_alpha.cli import main  # noqa: E402
from kronos_alpha.inference.panel import InputError  # noqa: E402


@pytest.fixture
def csv_dir(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    a = make_bars(30, 0)
    a.loc[5, "volume"] = 0.0  # a suspension
    a["amount"] = a["volume"] * a["close"] * 1.001
    a.to_csv(d / "SH600000.csv", index=False)
    b = make_bars(20, 1, start="2021-01-11")
    b = b.drop(index=[3])  # a day with no row inside its span
    b.to_csv(d / "sz000001.csv", index=False)
    return d


def init_qlib(folder):
    import qlib

    qlib.init(provider_uri=str(folder), region="cn", kernels=1)


def test_build_round_trips_through_d_features(csv_dir, tmp_path):
    out = tmp_path / "qlib"
    report = build(csv_dir, out, market="mkt")
    assert report.instruments == 2 and report.suspended_rows == 1 and report.gap_days == 1
    assert {"open", "close", "volume", "change", "amount", "vwap"} <= set(report.fields)
    assert any("suspended" in w for w in report.warnings)
    start, values = read_bin(out / "features" / "sz000001" / "close.day.bin")
    assert start == 5  # 2021-01-11 is the 6th business day of the calendar
    init_qlib(out)
    from qlib.data import D

    df = D.features(
        D.instruments("mkt"),
        ["$open", "$high", "$low", "$close", "$volume", "$change", "$amount", "$vwap"],
        freq="day",
    )
    assert set(df.index.get_level_values("instrument")) == {"SH600000", "SZ000001"}
    a = make_bars(30, 0)
    got = df.xs("SH600000", level="instrument")
    np.testing.assert_allclose(got["$close"].to_numpy(), a["close"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["$open"].to_numpy(), a["open"].to_numpy(), rtol=1e-6)
    assert got.index[0] == pd.Timestamp("2021-01-04") and len(got) == 30
    # change is a fraction of the previous close; first day has none
    expect = a["close"] / a["close"].shift(1) - 1
    np.testing.assert_allclose(
        got["$change"].to_numpy()[1:], expect.to_numpy()[1:], rtol=1e-4, atol=1e-7
    )
    assert np.isnan(got["$change"].iloc[0])
    # vwap derived from amount / volume, NaN on the suspended day
    vwap = got["$vwap"].to_numpy()
    assert np.isnan(vwap[5])
    np.testing.assert_allclose(vwap[6], a["close"][6] * 1.001, rtol=1e-5)
    # the missing row of SZ000001 reads back as NaN, not filled
    b = df.xs("SZ000001", level="instrument")
    assert b["$close"].isna().sum() == 1 and len(b) == 20
    # SZ000001 has no amount column: nothing invented for it
    assert b["$amount"].isna().all()
    assert check(out, market="mkt").ok


def test_build_long_csv_and_parquet(tmp_path):
    long = pd.concat([make_bars(15, 2).assign(symbol="AAA"), make_bars(12, 3).assign(symbol="BBB")])
    long.to_csv(tmp_path / "long.csv", index=False)
    long.to_parquet(tmp_path / "long.parquet")
    for src, out in [("long.csv", "q1"), ("long.parquet", "q2")]:
        report = build(tmp_path / src, tmp_path / out)
        assert report.instruments == 2 and report.rows == 27
    lines = (tmp_path / "q2" / "instruments" / "all.txt").read_text().splitlines()
    assert lines[0].split("\t")[0] == "AAA" and len(lines) == 2


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda df: df.iloc[[0, 2, 1, 3]], "out of order"),
        (lambda df: pd.concat([df.iloc[:3], df.iloc[[2]]]), "duplicate date"),
        (lambda df: df.assign(high=df["low"] * 0.9), "inconsistent OHLC"),
        (lambda df: df.drop(columns=["high"]), "missing column"),
        (
            lambda df: df.assign(open=[1.0, np.nan, 1.0, 1.0][: len(df)]),
            "not all of open/high/low/close",
        ),
    ],
)
def test_build_rejects_bad_bars(tmp_path, edit, message):
    d = tmp_path / "csv"
    d.mkdir()
    edit(make_bars(4, 5)).to_csv(d / "X.csv", index=False)
    with pytest.raises(InputError, match=message) as info:
        build(d, tmp_path / "out")
    assert "X.csv" in str(info.value)


def test_build_refuses_non_empty_folder(csv_dir, tmp_path):
    out = tmp_path / "qlib"
    build(csv_dir, out)
    with pytest.raises(InputError, match="not empty"):
        build(csv_dir, out)
    build(csv_dir, out, overwrite=True)


def test_check_reports_missing_field_and_benchmark(csv_dir, tmp_path, capsys):
    out = tmp_path / "qlib"
    build(csv_dir, out)
    (out / "features" / "sz000001" / "volume.day.bin").unlink()
    report = check(out, benchmark="SH000300")
    assert not report.ok
    text = "\n".join(report.errors)
    assert "field 'volume' is missing for 1 instrument(s)" in text and "SZ000001" in text
    assert "benchmark 'SH000300' is not in instruments/all.txt" in text
    assert main(["qlib-data", "check", str(out)]) == 1
    assert "volume" in capsys.readouterr().out


def test_check_reports_broken_layout(csv_dir, tmp_path):
    out = tmp_path / "qlib"
    build(csv_dir, out)
    cal = out / "calendars" / "day.txt"
    lines = cal.read_text().splitlines()
    cal.write_text("\n".join(lines[:10]) + "\n")  # calendar shorter than the bins
    report = check(out, market="csi300")
    text = "\n".join(report.errors)
    assert "calendar has 10" in text and "market 'csi300'" in text


def test_cli_build_then_check(csv_dir, tmp_path, capsys):
    out = tmp_path / "qlib"
    assert main(["qlib-data", "build", str(csv_dir), str(out), "--market", "mine"]) == 0
    assert (out / "instruments" / "mine.txt").exists()
    assert main(["qlib-data", "check", str(out), "--market", "mine"]) == 0
    assert main(["qlib-data", "build", str(tmp_path / "nope"), str(tmp_path / "x")]) == 1


def test_every_file_of_a_build_goes_through_the_atomic_writer(csv_dir, tmp_path, monkeypatch):
    import kronos_alpha.adapters.qlib.data as qdata

    from kronos_alpha import files

    written = []

    def recording(path, data):
        written.append(Path(path))
        return files.atomic_write(path, data)

    monkeypatch.setattr(qdata, "atomic_write", recording)
    monkeypatch.setattr(qdata, "write_text", lambda path, text: recording(path, text))
    out = tmp_path / "qlib"
    build(csv_dir, out, market="mkt")
    on_disk = sorted(p for p in out.rglob("*") if p.is_file())
    assert sorted(written) == on_disk and len(on_disk) > 10
    assert not [p for p in on_disk if p.name.endswith(files.PART_SUFFIX)]
    assert check(out, market="mkt").ok


def test_column_names_go_through_the_input_boundary(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    bars = make_bars(6, 4)
    bars.rename(columns={"close": "$Close", "open": "OPEN"}).to_csv(d / "A.csv", index=False)
    build(d, tmp_path / "ok")  # Qlib-style '$' and upper case are the same columns
    start, values = read_bin(tmp_path / "ok" / "features" / "a" / "close.day.bin")
    np.testing.assert_allclose(values, bars["close"].to_numpy(), rtol=1e-6)
    bars.assign(Close=bars["close"]).to_csv(d / "A.csv", index=False)
    with pytest.raises(InputError, match=r"columns 'close' and 'Close' are both 'close'"):
        build(d, tmp_path / "bad")


def test_the_builder_does_not_load_qlib():
    """``qlib-data build`` is numpy/pandas only: the adapter package imports Qlib lazily."""
    import subprocess
    import sys

    code = (
        "import sys, kronos_alpha.adapters.qlib.data, kronos_alpha.adapters.qlib.riskmodel; "
        "print(sorted(m for m in sys.modules if m == 'qlib' or m.startswith('qlib.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
