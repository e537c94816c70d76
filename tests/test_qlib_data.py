"""qlib-data build/check: round trips through qlib.data.D.features and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")

from conftest import make_bars
from kronos_alpha.adapters.qlib.data import (  # noqa: E402
    BuildError,
    ConfinedWriter,
    build,
    check,
    read_bin,
)

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
    """Written into a temporary folder next to the target, renamed into place at the end."""
    import kronos_alpha.adapters.qlib.build as qbuild

    from kronos_alpha import files

    written = []

    def recording(path, data):
        written.append(Path(path))
        return files.atomic_write(path, data)

    monkeypatch.setattr(qbuild, "atomic_write", recording)
    out = tmp_path / "qlib"
    build(csv_dir, out, market="mkt")
    on_disk = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert {p.relative_to(tmp_path).parts[0][:10] for p in written} == {".tmp-qlib-"}
    assert sorted(Path(*p.relative_to(tmp_path).parts[1:]) for p in written) == on_disk
    assert len(on_disk) > 10 and not [p for p in on_disk if p.name.endswith(files.PART_SUFFIX)]
    assert {p.name for p in tmp_path.iterdir()} == {"csv", "qlib"}  # no temporary folder left
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


# -- hostile inputs, faults and files ----------------------------------------------------------
def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def test_codes_keep_all_but_the_suffix_and_every_collision_names_both_files(tmp_path):
    d = tmp_path / "dots"
    d.mkdir()
    make_bars(5, 0).to_csv(d / "SH.600000.csv", index=False)
    make_bars(5, 1).to_csv(d / "SH.000001.csv", index=False)
    report = build(d, tmp_path / "ok")
    assert report.codes == ["SH.000001", "SH.600000"]
    assert (tmp_path / "ok" / "features" / "sh.600000" / "close.day.bin").is_file()
    c = tmp_path / "clash"
    c.mkdir()
    for name in ["abc.csv", "ABC.parquet", "X.csv", "x.csv.gz"]:
        bars = make_bars(5, 2)
        bars.to_parquet(c / name) if name.endswith("parquet") else bars.to_csv(
            c / name, index=False
        )
    with pytest.raises(BuildError) as info:
        build(c, tmp_path / "out")
    text = str(info.value)
    assert f"instrument 'ABC' comes from both {c / 'ABC.parquet'} and {c / 'abc.csv'}" in text
    assert f"instrument 'X' comes from both {c / 'X.csv'} and {c / 'x.csv.gz'}" in text
    assert len(info.value.report.errors) == 2 and not (tmp_path / "out").exists()


def test_unsafe_codes_freq_and_market_are_refused_and_nothing_lands_outside(tmp_path):
    long = pd.concat(
        [make_bars(5, i).assign(instrument=code) for i, code in enumerate(["../x", "/abs", "OK"])]
    )
    long.to_csv(tmp_path / "long.csv", index=False)
    before = files_under(tmp_path)
    with pytest.raises(BuildError) as info:
        build(tmp_path / "long.csv", tmp_path / "a" / "out", market="../m", freq="../../evil")
    text = str(info.value)
    assert "freq '../../evil' is not a Qlib frequency" in text
    assert "market '../m' is not allowed" in text
    assert "long.csv [../x]: instrument code '../X' is not allowed" in text
    assert "long.csv [/abs]: instrument code '/ABS' is not allowed" in text
    assert files_under(tmp_path) == before  # nothing written anywhere
    writer = ConfinedWriter(tmp_path / "a")
    for rel in ["../escape.bin", str(tmp_path / "abs.bin"), "."]:
        with pytest.raises(InputError, match="outside the output folder"):
            writer.write(rel, b"x")
    assert files_under(tmp_path) == before
    # a link planted inside an existing folder does not lead the build out of it
    d = tmp_path / "csv"
    d.mkdir()
    make_bars(5, 0).to_csv(d / "AAA.csv", index=False)
    out, outside = tmp_path / "q", tmp_path / "outside"
    (out / "features").mkdir(parents=True)
    outside.mkdir()
    (out / "features" / "aaa").symlink_to(outside)
    with pytest.raises(BuildError, match="features/aaa/close.day.bin.* outside the output folder"):
        build(d, out, overwrite=True)
    assert list(outside.iterdir()) == [] and files_under(out) == {
        Path("features"),
        Path("features/aaa"),
    }


def test_yyyymmdd_integer_dates_are_dates_and_other_numbers_an_error(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    bars = make_bars(5, 0)
    bars.assign(date=bars["date"].str.replace("-", "").astype(int)).to_csv(d / "A.csv", index=False)
    report = build(d, tmp_path / "ok")
    assert (report.first_day, report.days) == ("2021-01-04", 5)
    cal = (tmp_path / "ok" / "calendars" / "day.txt").read_text().split()
    assert cal == list(bars["date"])
    bars.assign(date=np.arange(5) * 1.5).to_csv(d / "A.csv", index=False)
    with pytest.raises(InputError, match=r"A.csv: column 'date' are numbers") as info:
        build(d, tmp_path / "bad")
    assert str(d / "A.csv") in str(info.value) and not (tmp_path / "bad").exists()


def test_a_failed_build_leaves_no_partial_folder(csv_dir, tmp_path, monkeypatch):
    (csv_dir / "EMPTY.csv").write_text("date,open,high,low,close,volume\n")
    with pytest.raises(BuildError, match=r"EMPTY.csv: no rows \(a header only\)"):
        build(csv_dir, tmp_path / "out")
    (csv_dir / "EMPTY.csv").unlink()
    import kronos_alpha.adapters.qlib.build as qbuild

    from kronos_alpha import files

    calls = []

    def failing(path, data):  # the disk fills up on the fourth file
        calls.append(path)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return files.atomic_write(path, data)

    monkeypatch.setattr(qbuild, "atomic_write", failing)
    with pytest.raises(OSError, match="No space"):
        build(csv_dir, tmp_path / "out")
    assert {p.name for p in tmp_path.iterdir()} == {"csv"}  # no folder, no temporary folder


def test_unreadable_files_are_named(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    make_bars(5, 0).to_csv(d / "GOOD.csv", index=False)
    (d / "LATIN1.csv").write_bytes(
        "date,open,high,low,close,name\n2021-01-04,1,1,1,1,caf\xe9\n".encode("latin-1")
    )
    (d / "BROKEN.parquet").write_bytes(b"not a parquet file")
    (d / "EMPTY.csv").write_bytes(b"")
    with pytest.raises(BuildError) as info:
        build(d, tmp_path / "out")
    text = str(info.value)
    assert f"{d / 'LATIN1.csv'}: not UTF-8 text (byte b'\\xe9'" in text
    assert f"{d / 'BROKEN.parquet'}: cannot be read as parquet" in text
    assert f"{d / 'EMPTY.csv'}: the file is empty" in text
    assert "3 problem(s)" in text


def test_every_problem_of_every_file_in_one_pass(tmp_path, capsys):
    d = tmp_path / "csv"
    d.mkdir()
    for i in range(24):
        bars = make_bars(4, i)
        bars.loc[2, "close"] = -1.0  # each file: a non-positive price ...
        bars.iloc[[0, 1, 3, 2]].to_csv(d / f"S{i:02d}.csv", index=False)  # ... out of order
    make_bars(4, 99).assign(volume="12k").to_csv(d / "TEXT.csv", index=False)
    with pytest.raises(BuildError) as info:
        build(d, tmp_path / "out")
    errors = info.value.report.errors
    assert len(errors) == 49
    assert f"{d / 'S00.csv'}: dates out of order at line 5 (2021-01-07 then 2021-01-06)" in errors
    assert (
        f"{d / 'S00.csv'}: a non-positive price in column 'close' on 2021-01-06 (at line 5; 1 such row(s))"
        in errors
    )
    assert (
        f"{d / 'TEXT.csv'}: column 'volume' is not numeric at line 2 ('12k'; 4 such value(s))"
        in errors
    )
    text = str(info.value)
    assert "49 problem(s)" in text and "... and 29 more" in text and "TEXT.csv" not in text
    assert main(["qlib-data", "build", str(d), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert all(e in err for e in errors) and not (tmp_path / "out").exists()


def test_build_reads_columns_through_the_boundary(tmp_path):
    """A volume column of True/False (read_csv makes it bool) and a price float32 would
    flush towards zero are refused by name, as the forecasting doors refuse them."""
    d = tmp_path / "csv"
    d.mkdir()
    make_bars(4, 1).assign(volume=True).to_csv(d / "FLAG.csv", index=False)
    tiny = make_bars(4, 2)
    tiny.loc[1, "low"] = 1e-40
    tiny.to_csv(d / "TINY.csv", index=False)
    with pytest.raises(BuildError) as info:
        build(d, tmp_path / "out")
    assert info.value.report.errors == [
        f"{d / 'FLAG.csv'}: column 'volume' holds bool values, not numbers",
        f"{d / 'TINY.csv'}: a price below float32's normal range in column 'low' on 2021-01-05 "
        "(at line 3; 1 such row(s))",
    ]


def test_inconsistent_ohlc_is_written_counted_and_checked_the_same(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    bars = make_bars(8, 3)
    bars.loc[[2, 5], "high"] = bars["low"] * 0.9  # high below low on two bars
    bars.to_csv(d / "ODD.csv", index=False)
    make_bars(8, 4).to_csv(d / "FINE.csv", index=False)
    report = build(d, tmp_path / "out")
    assert report.ohlc_inconsistent_rows == 2 and report.instruments == 2
    assert any(
        "ODD.csv: 2 bar(s) with high below" in w and "2021-01-06" in w for w in report.warnings
    )
    _, high = read_bin(tmp_path / "out" / "features" / "odd" / "high.day.bin")
    np.testing.assert_allclose(high, bars["high"], rtol=1e-6)  # used as they are
    checked = check(tmp_path / "out")
    assert checked.ok and checked.ohlc_inconsistent_rows == 2
    assert any(w.startswith("ODD: 2 bar(s) with high below") for w in checked.warnings)


def test_dry_run_reports_and_writes_nothing(csv_dir, tmp_path, capsys):
    out = tmp_path / "out"
    report = build(csv_dir, out, market="mkt", dry_run=True)
    assert not out.exists() and report.dry_run and report.errors == []
    assert (report.instruments, report.rows, report.codes) == (2, 49, ["SH600000", "SZ000001"])
    assert (report.first_day, report.last_day, report.days) == ("2021-01-04", "2021-02-12", 30)
    real = build(csv_dir, out, market="mkt")
    assert report.files == real.files == len([p for p in out.rglob("*") if p.is_file()])
    assert main(["qlib-data", "build", str(csv_dir), str(tmp_path / "o2"), "--dry-run"]) == 0
    assert '"instruments": 2' in capsys.readouterr().out and not (tmp_path / "o2").exists()
    make_bars(3, 0).drop(columns=["close"]).to_csv(csv_dir / "BAD.csv", index=False)
    assert main(["qlib-data", "build", str(csv_dir), str(tmp_path / "o2"), "--dry-run"]) == 1
    assert "BAD.csv: missing column(s) ['close']" in capsys.readouterr().out
    assert not (tmp_path / "o2").exists()


def test_a_long_file_without_instrument_column_is_one_instrument(tmp_path):
    make_bars(6, 0).to_csv(tmp_path / "SH600000.csv", index=False)
    report = build(tmp_path / "SH600000.csv", tmp_path / "out")
    assert report.codes == ["SH600000"] and report.rows == 6
    with pytest.raises(BuildError, match=r"SH600000.csv: no column 'sym'"):
        build(tmp_path / "SH600000.csv", tmp_path / "o2", instrument_column="sym")
    long = pd.concat([make_bars(4, 0).assign(sym="A"), make_bars(4, 1).assign(sym="B")])
    long.drop(columns=["date"]).to_csv(tmp_path / "nodate.csv", index=False)
    with pytest.raises(BuildError) as info:
        build(tmp_path / "nodate.csv", tmp_path / "o3")
    assert [e.split(";")[0] for e in info.value.report.errors] == [
        f"{tmp_path / 'nodate.csv'}: no date column"
    ]


def test_instrument_codes_of_a_long_file_are_text(tmp_path):
    long = pd.concat([make_bars(4, 0).assign(code="000001"), make_bars(4, 1).assign(code="600000")])
    long.to_csv(tmp_path / "long.csv", index=False)
    assert build(tmp_path / "long.csv", tmp_path / "out").codes == ["000001", "600000"]
    long.iloc[[5], long.columns.get_loc("code")] = np.nan
    long.to_csv(tmp_path / "long.csv", index=False)
    with pytest.raises(
        BuildError, match=r"long.csv: 1 row\(s\) have an empty 'code', first at line 7"
    ):
        build(tmp_path / "long.csv", tmp_path / "o2")


def test_check_shows_progress_and_checks_its_names(csv_dir, tmp_path, caplog, monkeypatch):
    import logging

    import tqdm.auto

    bars = []

    def recording(items, **kw):
        bars.append(kw)
        return items

    monkeypatch.setattr(tqdm.auto, "tqdm", recording)
    out = tmp_path / "qlib"
    build(csv_dir, out)
    with caplog.at_level(logging.INFO, logger="kronos_alpha.adapters.qlib.checkfolder"):
        assert check(out).ok
    assert bars == [
        dict(total=2, desc="reading csv", unit="file", disable=None, leave=False),
        dict(total=2, desc="checking qlib", unit="instrument", disable=None, leave=False),
    ]
    assert f"checking 2 instrument(s) in {out}" in caplog.text
    assert check(out, freq="../day").errors == [
        "freq '../day' is not a Qlib frequency: use day, week, month or a count of minutes "
        "such as 1min or 5min (it names the calendar and bin files)"
    ]
    (out / "instruments" / "all.txt").write_text("../../etc\t2021-01-04\t2021-01-05\n")
    assert "instrument code '../../etc' is not allowed" in check(out).errors[0]
