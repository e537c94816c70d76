"""Forecaster cache, offline default, CLI and torchrun sharding."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURE
from conftest import make_panel as shared_make_panel

from kronos_alpha import CheckpointError, Forecaster
from kronos_alpha.inference.cache import CacheError, ForecastCache
from kronos_alpha.model import zoo

pytestmark = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason=f"fixture checkpoint {FIXTURE} is absent"
)


# This module's bars (flat opens: its tests were written on exactly these numbers).
make_panel = partial(
    shared_make_panel, n_bars=40, names=("AAA", "BBB", "CCC"), seed=3, start="2022-03-01",
    price=20.0, sigma=0.02, open_style="flat", wick=0.01, volume=(1e4, 1e5),
)  # fmt: skip


def fc_for(**kw):
    params = dict(model=str(FIXTURE), lookback=24, horizon=3, sample_count=3, progress=False)
    params.update(kw)
    return Forecaster(**params)


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.npy"))


def test_cache_cold_warm_invalidation_and_corruption(tmp_path):
    panel = make_panel()
    dates = panel["AAA"].index[-4:]
    fc = fc_for(cache_dir=tmp_path)
    cold = fc.forecast(panel, dates=dates)
    assert fc.report["computed"] == 12 and fc.report["from_cache"] == 0
    cold_files = entries(tmp_path)
    assert len(cold_files) == 12
    warm = fc.forecast(panel, dates=dates)
    assert fc.report["computed"] == 0 and fc.report["from_cache"] == 12
    pd.testing.assert_frame_equal(cold, warm)
    # The cache is keyed by window content and settings: a changed bar or setting recomputes.
    moved = {k: v.copy() for k, v in panel.items()}
    moved["BBB"].iloc[-1, 3] *= 1.05
    fc.forecast(moved, dates=dates[-1:])
    assert fc.report["computed"] == 1 and fc.report["from_cache"] == 2
    fc.set_params(T=0.7).forecast(panel, dates=dates[-1:])
    assert fc.report["computed"] == 3
    # Corrupt entries (truncated, garbage, wrong shape) are detected and recomputed.
    fc.set_params(T=1.0)
    files = cold_files
    files[0].write_bytes(files[0].read_bytes()[:-7])
    files[1].write_bytes(b"not a forecast")
    ForecastCache(tmp_path).put(files[2].stem, np.zeros((2, 2, 6), np.float32))
    with pytest.warns(UserWarning, match="corrupt"):
        again = fc.forecast(panel, dates=dates)
    assert fc.report["cache_corrupt_recomputed"] == 3 and fc.report["computed"] == 3
    pd.testing.assert_frame_equal(cold, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # repaired: no warning any more
        fc.forecast(panel, dates=dates)
    assert fc.report["from_cache"] == 12


def test_read_only_or_unusable_cache_folder(tmp_path, monkeypatch):
    panel = make_panel(names=("AAA",))
    dates = panel["AAA"].index[-2:]
    (tmp_path / "file").write_text("x")
    with pytest.raises(CacheError, match="not a folder"):
        fc_for(cache_dir=tmp_path / "file").forecast(panel, dates=dates)
    ro = tmp_path / "ro"
    fc_for(cache_dir=ro).forecast(panel, dates=dates[:1])  # one entry present
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == ro else real_access(p, m))
    fc = fc_for(cache_dir=ro)
    with pytest.warns(UserWarning, match="not writable"):
        table = fc.forecast(panel, dates=dates)
    assert len(table) == 2 and fc.report["from_cache"] == 1 and fc.report["computed"] == 1
    assert len(entries(ro)) == 1
    monkeypatch.undo()
    # A write that fails (read-only file system, full disk) warns once and carries on.
    import kronos_alpha.files as files

    def refuse(*a, **k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    fc = fc_for(cache_dir=tmp_path / "rofs")
    with pytest.warns(UserWarning, match="writing failed"):
        assert len(fc.forecast(panel, dates=dates)) == 2


def test_concurrent_writers_and_interrupted_writes_leave_valid_entries(tmp_path):
    cache = ForecastCache(tmp_path)
    arrays = [np.full((3, 4, 6), i, np.float32) for i in range(8)]

    def writer(i):
        for _ in range(20):
            cache.put("ab" + "0" * 62, arrays[i])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = cache.get("ab" + "0" * 62, (3, 4, 6))
    assert got is not None and any(np.array_equal(got, a) for a in arrays)
    # an interrupted write leaves only a temporary file, which is never read as an entry
    (tmp_path / "cd").mkdir()
    planted = tmp_path / "cd" / ".tmp-xyz.part"
    planted.write_bytes(b"half")
    assert cache.get("cd" + "1" * 62, (3, 4, 6)) is None
    assert list(tmp_path.rglob(".tmp-*")) == [planted]  # the writers left none behind


def test_offline_default_is_used_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(zoo, "DEFAULT_DIR", tmp_path / "missing")
    with pytest.raises(CheckpointError, match="bundled default"):
        Forecaster().load()
    bundled = tmp_path / "default"
    bundled.mkdir()
    for part in ("model", "tokenizer"):
        (bundled / part).symlink_to(FIXTURE / part)
    (bundled / "training.json").write_text('{"config": {"max_context": 256}}')
    monkeypatch.setattr(zoo, "DEFAULT_DIR", bundled)
    fc = Forecaster(lookback=24, horizon=3, sample_count=2, progress=False)
    with pytest.warns(UserWarning, match="bundled with kronos-alpha"):
        table = fc.forecast(make_panel(names=("AAA",)), dates=[pd.Timestamp("2022-04-25")])
    assert (
        len(table) == 1 and fc.report["model"] == str(bundled) and fc.report["max_context"] == 256
    )


def test_cli_forecast_from_csv_writes_table_and_chart(tmp_path):
    from kronos_alpha.cli import main

    panel = make_panel(names=("AAA", "BBB"))
    long = pd.concat(panel, names=["instrument", "datetime"]).reset_index()
    csv = tmp_path / "bars.csv"
    long.to_csv(csv, index=False)
    out, chart = tmp_path / "f.csv", tmp_path / "f.png"
    args = [
        "forecast",
        "-i",
        str(csv),
        "--model",
        str(FIXTURE),
        "--lookback",
        "24",
        "--horizon",
        "3",
    ]
    args += ["--samples", "3", "--last", "2", "--out", str(out), "--chart", str(chart), "-q"]
    assert main(args) == 0
    table = pd.read_csv(out, index_col=[0, 1], parse_dates=[0])
    assert len(table) == 4 and {"pred_return", "ret_q10", "prob_up"} <= set(table.columns)
    assert chart.stat().st_size > 10_000 and chart.read_bytes()[:4] == b"\x89PNG"
    assert main(["forecast", "-i", str(tmp_path / "nope.csv"), "--model", str(FIXTURE)]) == 1
    with pytest.raises(SystemExit):
        main(["forecast", "--help"])


def test_cli_forecast_on_the_bundled_sample(tmp_path):
    pytest.importorskip("bokeh_sampledata", reason="bokeh-sampledata provides the sample bars")
    from kronos_alpha.cli import main
    from kronos_alpha.sample_data import load_stock

    aapl = load_stock("AAPL")
    assert aapl.index[0].year == 2000 and aapl.index[-1].year == 2013 and (aapl["close"] > 0).all()
    out = tmp_path / "f.parquet"
    args = ["forecast", "--sample", "AAPL,MSFT", "--model", str(FIXTURE), "--lookback", "24"]
    args += [
        "--horizon",
        "3",
        "--samples",
        "3",
        "--out",
        str(out),
        "--chart",
        str(tmp_path / "c.png"),
        "-q",
    ]
    assert main(args) == 0
    assert list(pd.read_parquet(out).index.get_level_values("instrument")) == ["AAPL", "MSFT"]


SHARD_SCRIPT = """
import sys, pandas as pd, torch
torch.set_num_threads(1)
from kronos_alpha import Forecaster
from kronos_alpha.inference import distributed
assert distributed.init_from_env()
panel = pd.read_parquet(sys.argv[1])
dates = panel.index.get_level_values("datetime").unique()[-3:]
fc = Forecaster(model=sys.argv[2], lookback=24, horizon=3, sample_count=3, progress=False, cache_dir=sys.argv[4])
table = fc.forecast(panel, dates=dates)
assert fc.report["world_size"] == 2 and fc.report["computed_by_this_rank"] in (4, 5), fc.report
table.to_parquet(sys.argv[3] + f".rank{distributed.rank()}")
emb = Forecaster(model=sys.argv[2], lookback=24, progress=False).embed(panel, dates=dates)
emb.to_parquet(sys.argv[3] + f".embed{distributed.rank()}")
"""


def test_two_gloo_ranks_give_the_same_table_as_one_process(tmp_path):
    panel = make_panel(names=("AAA", "BBB", "CCC"))
    long = pd.concat(panel, names=["instrument", "datetime"]).swaplevel().sort_index()
    long.to_parquet(tmp_path / "panel.parquet")
    (tmp_path / "shard.py").write_text(SHARD_SCRIPT)
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [
        str(tmp_path / "shard.py"),
        str(tmp_path / "panel.parquet"),
        str(FIXTURE),
        str(tmp_path / "t"),
        str(cache),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    one = fc_for().forecast(panel, dates=panel["AAA"].index[-3:])
    emb = fc_for().embed(panel, dates=panel["AAA"].index[-3:])
    for rank in (0, 1):  # both ranks hold the whole gathered table
        # (parquet reads the instrument level back as strings: the values must be identical)
        got = pd.read_parquet(tmp_path / f"t.rank{rank}")
        pd.testing.assert_frame_equal(got, one, check_index_type=False)
        got = pd.read_parquet(tmp_path / f"t.embed{rank}")
        pd.testing.assert_frame_equal(got, emb, check_index_type=False)
    # the ranks filled one shared cache: a single process now reads everything from it
    fc = fc_for(cache_dir=cache)
    pd.testing.assert_frame_equal(fc.forecast(panel, dates=panel["AAA"].index[-3:]), one)
    assert fc.report["from_cache"] == 9 and len(entries(cache)) == 9


def test_pickle_round_trip_keeps_parameters_and_reloads(tmp_path):
    import pickle

    panel = make_panel(names=("AAA",))
    fc = fc_for(seed=5)
    table = fc.forecast(panel, dates=panel["AAA"].index[-1:])
    copy = pickle.loads(pickle.dumps(fc))
    assert copy.get_params() == fc.get_params() and copy._loaded is None
    assert len(pickle.dumps(fc)) < 10_000  # the weights of a named model are not pickled
    pd.testing.assert_frame_equal(copy.forecast(panel, dates=panel["AAA"].index[-1:]), table)
    import copy as copying

    twin = copying.copy(fc).set_params(horizon=2)
    assert twin.model_ is fc.model_ and fc.horizon == 3  # shares the weights, not the settings
