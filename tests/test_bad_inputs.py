"""Hostile settings, values and checkpoints: a clear error that names the problem, or a
documented, correct result - never a silent wrong number."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from kronos_alpha import CheckpointError, Forecaster, InputError, Kronos, KronosPredictor
from kronos_alpha.inference.device import MemoryEstimateError
from kronos_alpha.inference.settings import ForecastSettings, SettingsError


def bars(n=80, seed=0, level=100.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2021-01-04", periods=n)
    c = level * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = c * (1 + rng.normal(0, 0.002, n))
    return pd.DataFrame(
        {
            "open": o,
            "high": np.maximum(o, c) * 1.004,
            "low": np.minimum(o, c) * 0.996,
            "close": c,
            "volume": rng.uniform(1e5, 2e5, n),
        },
        index=idx,
    )


@pytest.fixture
def fc(tiny_pair):
    model, tok = tiny_pair
    return Forecaster(model, tok, lookback=24, horizon=3, sample_count=3, progress=False)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("T", -0.5, "T must be >= 0"),
        ("T", float("nan"), "T must be finite"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
        ("top_p", float("nan"), "top_p must be finite"),
        ("top_k", -1, "top_k must be at least 0"),
        ("top_k", 2.5, "top_k must be an integer"),
        ("sample_count", 2.0, "sample_count must be an integer"),
        ("sample_count", True, "sample_count must be an integer"),
        ("sample_count", 0, "sample_count must be at least 1"),
        ("sample_count", 10**30, "sample_count must be at most 2147483647"),
        ("top_k", 2**40, "top_k must be at most 2147483647"),
        ("seed", 1.7, "seed must be an integer"),
        ("seed", 2**70, "seed must be at most"),
        ("seed", -1, "seed must be at least 0"),
        ("clip", 0.0, "clip must be > 0"),
        ("clip", float("nan"), "clip must be finite"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("max_context", 0, "max_context must be at least 1"),
        ("lookback", 1, "lookback must be at least 2"),
        ("horizon", 0, "horizon must be at least 1"),
        ("quantiles", (0.1, 1.0), "quantiles must lie strictly between 0 and 1"),
        ("quantiles", (), "quantiles is empty"),
        ("quantiles", (0.5, 0.5), "repeat a level"),
        ("min_history", 1, "min_history must be at least 2"),
        ("dtype", "int8", "dtype must be one of"),
        ("device", "gpu", "device 'gpu' is not a torch device"),
        ("cache_dir", "", "cache_dir must be a folder path"),
        ("fill_suspended", "yes", "fill_suspended must be True or False"),
    ],
)
def test_every_bad_setting_is_refused_at_construction_naming_it(field, value, match):
    with pytest.raises(SettingsError, match=match):
        ForecastSettings(**{field: value})
    with pytest.raises(SettingsError, match=match):
        Forecaster(**{field: value})  # the same check, at the door, before any model loads


def test_unknown_settings_are_named():
    with pytest.raises(SettingsError, match="no setting 'horizn'"):
        ForecastSettings().replace(horizn=3)


def test_settings_normalise_numpy_integers_and_keep_validating_on_assignment(fc):
    s = ForecastSettings(lookback=np.int64(30), seed=np.int32(4))
    assert type(s.lookback) is int and type(s.seed) is int
    with pytest.raises(SettingsError, match="horizon must be at least 1"):
        fc.horizon = 0
    assert fc.horizon == 3


def test_zero_temperature_decodes_greedily(fc):
    panel = {"A": bars()}
    t = panel["A"].index[-2:]
    greedy = fc.set_params(top_k=1, T=1.0).forecast(panel, dates=t)
    cold = fc.set_params(top_k=0, T=0.0).forecast(panel, dates=t)
    pd.testing.assert_frame_equal(greedy, cold)
    assert (cold.ret_std == 0).all()  # every sampled path is the greedy one


def test_horizon_beyond_max_context_fails_before_generating(fc, tiny_pair):
    with pytest.raises(SettingsError, match="horizon .* exceeds the model's max_context 8"):
        fc.set_params(max_context=8, horizon=9).forecast({"A": bars()})
    model, tok = tiny_pair
    p = KronosPredictor(model, tok, max_context=8)
    df = bars(40)
    future = pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=9)
    with pytest.raises(SettingsError, match="exceeds the model's max_context 8"):
        p.predict(df, pd.Series(df.index), pd.Series(future), pred_len=9, verbose=False)


def test_predictor_validates_its_generation_settings(tiny_pair):
    model, tok = tiny_pair
    with pytest.raises(SettingsError, match="max_context must be at least 1"):
        KronosPredictor(model, tok, max_context=0)
    p = KronosPredictor(model, tok)
    df = bars(40)
    future = pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=3)
    args = (df, pd.Series(df.index), pd.Series(future), 3)
    for kw, match in [
        ({"top_p": 0}, "top_p"),
        ({"T": -1}, "T must"),
        ({"sample_count": 2.0}, "sample_count"),
    ]:
        with pytest.raises(SettingsError, match=match):
            p.predict(*args, verbose=False, **kw)


def test_prices_in_any_unit_give_the_same_returns(fc):
    panel = {"A": bars()}
    t = panel["A"].index[-3:]
    base = fc.forecast(panel, dates=t).pred_return.to_numpy()
    for k in (2.0**-20, 2.0**60):  # exact: a power of two maps the window onto the base's
        scaled = panel["A"].copy()
        scaled[["open", "high", "low", "close"]] *= k
        got = fc.forecast({"A": scaled}, dates=t).pred_return.to_numpy()
        np.testing.assert_array_equal(got, base)
    for k in (1e-5, 1e-7, 1e25):  # close: the fixed epsilon no longer dominates
        scaled = panel["A"].copy()
        scaled[["open", "high", "low", "close"]] *= k
        got = fc.forecast({"A": scaled}, dates=t).pred_return.to_numpy()
        np.testing.assert_allclose(got, base, rtol=0.05, atol=1e-5)


def test_volume_and_amount_in_any_unit_give_close_returns(fc):
    panel = {"A": bars().assign(amount=lambda d: d.volume * d.close)}
    t = panel["A"].index[-3:]
    base = fc.forecast(panel, dates=t).pred_return.to_numpy()
    # each column is normalised on its own: a volume in base units of a token (x 2^60), an
    # amount in thousands, or prices in another unit while the given amount stays: all finite
    # and close (float32 squares of 1e23 overflowed; a tiny price scaled the amount to inf)
    variants = [
        panel["A"].assign(volume=lambda d: d.volume * 2.0**60),
        panel["A"].assign(volume=lambda d: d.volume * 1e-9, amount=lambda d: d.amount * 1e-3),
        panel["A"].assign(amount=lambda d: d.amount * 1e30),
        panel["A"].assign(**{c: panel["A"][c] * 1e-20 for c in ["open", "high", "low", "close"]}),
    ]
    for df in variants:
        got = fc.forecast({"A": df}, dates=t).pred_return.to_numpy()
        np.testing.assert_allclose(got, base, rtol=0.05, atol=1e-5)


def test_a_price_spike_near_float32_max_gives_finite_forecasts(fc, tiny_pair):
    df = bars().assign(amount=lambda d: d.volume * d.close)  # derived, 3e38 x volume overflows
    df.iloc[40, :4] = [3.0e38, 3.1e38, 3.0e38, 3.0e38]  # in range: accepted, scaled exactly
    df.iloc[41, 4] = 1e38  # a volume spike too
    table = fc.forecast({"A": df}, dates=df.index[-3:])
    assert len(table) == 3 and np.isfinite(table.to_numpy(np.float64)).all()
    future = pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=3)
    out = KronosPredictor(*tiny_pair).predict(df, pd.Series(df.index), pd.Series(future), 3,
                                              verbose=False)  # fmt: skip
    assert np.isfinite(out.to_numpy()).all()


def test_a_forecast_past_float32s_range_is_named_not_an_inf_row(fc, tiny_pair, monkeypatch):
    import kronos_alpha.inference.data as data

    df = bars(30).assign(amount=lambda d: d.volume * d.close)
    df.iloc[20, :4] = [3.3e38, 3.3e38, 3.2e38, 3.3e38]  # a corrupt bar, in float32's range
    real = data.sample_paths
    # a normalised answer of +20 std: mean + 20 std of such a window passes 3.4e38
    monkeypatch.setattr(data, "sample_paths", lambda *a, **k: np.full_like(real(*a, **k), 20.0))
    with pytest.raises(InputError, match=r"instrument 'A' at 2021-02-12 00:00:00: the forecast "
                                         r"leaves float32's range \(its bars reach 3.3e\+38"):  # fmt: skip
        fc.forecast({"A": df}, dates=df.index[-1:])
    future = pd.Series(pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=3))
    with pytest.raises(InputError, match="df: the forecast leaves float32's range"):
        KronosPredictor(*tiny_pair).predict(df, pd.Series(df.index), future, 3, verbose=False)


def test_a_panel_of_empty_frames_forecasts_nothing_and_says_so(fc):
    empty = bars(0).set_axis(pd.DatetimeIndex([], tz="Asia/Shanghai"), axis=0)
    table = fc.forecast({"A": empty})  # its calendar compared naive and aware empty indexes
    assert table.empty and fc.report["requested"] == 0
    fc.set_params(sample_count=10**9).forecast({"A": empty})  # one empty block, not 1e9 columns
    assert fc.sample_returns_.shape == (0, 10**9)  # (pandas took 10 s per million before)


def test_missing_names_and_mixed_time_zones_are_named(fc, tiny_pair):
    df = bars()
    with pytest.raises(InputError, match=r"an instrument name is missing \(nan\)"):
        fc.forecast(pd.concat({np.nan: df}, names=["instrument", "datetime"]))
    with pytest.raises(InputError, match=r"an instrument name is missing \(None\)"):
        fc.forecast({None: df})
    with pytest.raises(InputError, match="dates contain NaT at position 1"):
        fc.forecast({"A": df}, dates=[df.index[-1], pd.NaT])
    future = pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=3)
    p = KronosPredictor(*tiny_pair)
    local = pd.Series(df.index.tz_localize("Asia/Shanghai"))
    with pytest.raises(InputError, match="x_timestamp is in time zone Asia/Shanghai but "
                                         "y_timestamp is naive"):  # fmt: skip
        p.predict(df, local, pd.Series(future), 3, verbose=False)
    with pytest.raises(InputError, match="in time zone UTC but y_timestamp is in time zone Asia"):
        p.predict(df, local.dt.tz_convert("UTC"), pd.Series(future.tz_localize("Asia/Shanghai")),
                  3, verbose=False)  # fmt: skip
    out = p.predict(df, local, pd.Series(future.tz_localize("Asia/Shanghai")), 3, verbose=False)
    assert out.index.tz is not None and np.isfinite(out.to_numpy()).all()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda d: d.assign(close=d.close.where(d.index != d.index[-1], 0.0)),
            "zero price in column 'close'",
        ),
        (lambda d: d * 0.0 + d.assign(volume=1.0) * 0.0 + 0.0, "zero price"),
        (
            lambda d: d.assign(high=d.high.where(d.index != d.index[10], 1e39)),
            "beyond float32's range",
        ),
        (lambda d: d.assign(volume=d.volume.where(d.index != d.index[5], -3.0)), "negative volume"),
        # float32 flushes these to zero: the forecast rows were NaN
        (lambda d: d * 1e-300, "price below float32's smallest normal number .* 'open'"),
        (lambda d: d * 1e-40, "price below float32's smallest normal"),
        # the derived amount (volume x mean price) overflows: named as derived
        (lambda d: d * 1e20, r"'amount \(volume x mean price: the frame has no amount column\)'"),
        # text, and types that convert to numbers meaning nothing as prices or volumes
        (
            lambda d: d.astype({"close": object}).assign(close=["n/a"] + list(d.close.iloc[1:])),
            r"column 'close' is not numeric at row Timestamp\('2021-01-04.*'n/a'; 1 such",
        ),
        (lambda d: d.assign(volume=True), "column 'volume' holds bool values, not numbers"),
        (  # a flag among numbers in an object column: to_numeric alone would read 1.0
            lambda d: d.astype({"high": object}).assign(high=[True] + list(d.high.iloc[1:])),
            r"column 'high' is not numeric at row .*\(True; 1 such",
        ),
        (lambda d: d.assign(close=d.index), "column 'close' holds datetime64.* not numbers"),
        (lambda d: d.assign(volume=pd.to_timedelta(d.volume, unit="s")), "'volume' holds timed"),
        (lambda d: d.assign(close=d.close + 1j), "column 'close' holds complex128 values"),
        (lambda d: pd.concat([d, d[["close"]] * 2], axis=1), "'close' are both 'close'"),
    ],
)
def test_bad_values_are_named(fc, mutate, match):
    df = mutate(bars())
    with pytest.raises(InputError, match=match):
        fc.forecast({"A": df}, dates=df.index[-1:])


def test_the_predictor_door_names_bad_columns_too(tiny_pair):
    """KronosPredictor reads bars through the same boundary: a duplicated column would have
    given a seven-column matrix, numeric text is read as numbers."""
    model, tok = tiny_pair
    p = KronosPredictor(model, tok, device="cpu", max_context=64)
    df = bars(40)
    future = pd.Series(pd.bdate_range(df.index[-1], periods=4)[1:])
    args = (pd.Series(df.index), future, 3)
    with pytest.raises(InputError, match="df has 2 columns named 'close'"):
        p.predict(pd.concat([df, df[["close"]]], axis=1), *args, verbose=False)
    with pytest.raises(InputError, match="df: column 'open' is not numeric at row .*'1,5'"):
        p.predict(df.astype({"open": object}).assign(open="1,5"), *args, verbose=False)
    text = df.astype(str)  # numbers as text, as a CSV read without dtypes may give
    np.testing.assert_array_equal(
        p.predict(text, *args, T=0, verbose=False).to_numpy(),
        p.predict(df, *args, T=0, verbose=False).to_numpy(),
    )


def test_a_job_too_big_for_memory_is_refused_with_its_estimate(fc, tiny_pair):
    with pytest.raises(MemoryEstimateError, match=r"needs an estimated [\d.]+ GiB"):
        fc.set_params(sample_count=5_000_000).forecast({"A": bars()}, dates=bars().index[-1:])
    df = bars()  # the predictor's door too: it thrashed for minutes instead
    future = pd.Series(pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=3))
    with pytest.raises(MemoryEstimateError, match=r"1 window\(s\) x 5000000 sample\(s\)"):
        KronosPredictor(*tiny_pair).predict(df, pd.Series(df.index), future, 3,
                                              sample_count=5_000_000, verbose=False)  # fmt: skip


# -- checkpoints ----------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path, tiny_pair):
    model, _ = tiny_pair
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    return folder


def test_nan_weights_are_refused_naming_the_tensor(saved):
    state = load_file(saved / "model.safetensors")
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"tensor '{key}' has 1 NaN/inf"):
        Kronos.from_pretrained(saved)


def test_integer_weights_are_refused(saved):
    state = load_file(saved / "model.safetensors")
    key = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[key] = state[key].to(torch.int64)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="torch.int64, not floating point"):
        Kronos.from_pretrained(saved)


@pytest.mark.parametrize(
    "config, match",
    [
        ([1, 2, 3], "must be a JSON object"),
        ("{not json", "not valid JSON"),
        ({"learn_te": "no"}, "'learn_te' must be true or false"),
        ({"n_layers": 2.5}, "'n_layers' must be an integer"),
    ],
)
def test_bad_config_json_is_named(saved, config, match):
    path = saved / "config.json"
    if isinstance(config, str):
        path.write_text(config)
    elif isinstance(config, dict):
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    else:
        path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=match):
        Kronos.from_pretrained(saved)


def test_an_unreachable_hub_fails_fast_naming_the_id(monkeypatch):
    import time

    import kronos_alpha.model.hub as hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(
            CheckpointError,
            match="'no-such-org/no-such-model' cannot be downloaded.*pass its folder",
        ):
            Kronos.from_pretrained("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10


# -- identity and time ------------------------------------------------------------------------------
def test_a_read_csv_frame_uses_its_date_column(fc):
    df = bars()
    flat = df.reset_index(names="date")  # a RangeIndex and a date column, as read_csv gives
    pd.testing.assert_frame_equal(
        fc.forecast({"A": flat}, dates=df.index[-2:]), fc.forecast({"A": df}, dates=df.index[-2:])
    )


def test_a_period_index_is_stamped_at_each_periods_start(fc):
    df = bars()
    daily = df.set_axis(df.index.to_period("D"), axis=0)
    pd.testing.assert_frame_equal(
        fc.forecast({"A": daily}, dates=df.index[-2:]), fc.forecast({"A": df}, dates=df.index[-2:])
    )


def test_yyyymmdd_integers_are_dates_and_other_numbers_are_refused(fc):
    df = bars()
    ymd = df.set_axis(df.index.strftime("%Y%m%d").astype(int), axis=0)
    pd.testing.assert_frame_equal(
        fc.forecast({"A": ymd}, dates=df.index[-2:]), fc.forecast({"A": df}, dates=df.index[-2:])
    )
    with pytest.raises(InputError, match=r"panel\['A'\].index are numbers .* not timestamps"):
        fc.forecast({"A": df.reset_index(drop=True)})
    epoch = df.set_axis(df.index.asi8, axis=0)  # nanoseconds: never guessed
    with pytest.raises(InputError, match="are numbers"):
        fc.forecast({"A": epoch})


def test_instruments_that_collide_as_names_are_refused(fc):
    df = bars()
    with pytest.raises(InputError, match="panel keys 1 and '1' are both instrument '1'"):
        fc.forecast({1: df, "1": df})
    long = pd.concat({1: df, "1": df}, names=["instrument", "datetime"]).swaplevel()
    with pytest.raises(InputError, match="are both instrument '1'"):
        fc.forecast(long)


def test_empty_dates_are_named_as_empty(fc):
    with pytest.raises(InputError, match="dates is empty; give decision times, or dates=None"):
        fc.forecast({"A": bars()}, dates=[])


def test_nat_in_the_index_is_named(fc):
    df = bars()
    df.index = df.index.where(np.arange(len(df)) != 7, pd.NaT)
    with pytest.raises(InputError, match=r"panel\['A'\].index has NaT at row 7"):
        fc.forecast({"A": df})


def test_an_unavailable_device_is_one_clear_error(tiny_pair):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    model, tok = tiny_pair
    with pytest.raises(ValueError, match="device 'cuda' is not available"):
        Forecaster(model, tok, device="cuda").load()


# -- the forecast cache -----------------------------------------------------------------------------
def entries(folder):
    return sorted(p for p in folder.rglob("*.npy"))


def test_an_entry_copied_under_another_key_is_not_served(fc, tmp_path):
    panel = {"A": bars()}
    dates = panel["A"].index[-2:]
    fc.set_params(cache_dir=tmp_path)
    first = fc.forecast(panel, dates=dates)
    a, b = entries(tmp_path)
    b.write_bytes(a.read_bytes())  # a planted copy: right format, wrong key
    with pytest.warns(UserWarning, match="corrupt"):
        again = fc.forecast(panel, dates=dates)
    assert fc.report["cache_corrupt_recomputed"] == 1 and fc.report["from_cache"] == 1
    pd.testing.assert_frame_equal(again, first)


def test_a_symlinked_shard_is_never_written_through(fc, tmp_path):
    panel = {"A": bars()}
    dates = panel["A"].index[-1:]
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    fc.set_params(cache_dir=cache).forecast(panel, dates=dates)
    (shard,) = [p.parent for p in entries(cache)]
    for p in shard.iterdir():
        p.unlink()
    shard.rmdir()
    outside.mkdir()
    shard.symlink_to(outside, target_is_directory=True)
    with pytest.warns(UserWarning, match="is a link or leads outside"):
        fc.forecast(panel, dates=dates)
    assert list(outside.iterdir()) == [] and fc.report["computed"] == 1


def test_finished_batches_survive_a_crash_and_stale_temp_files_are_cleared(
    fc, tmp_path, monkeypatch
):
    import os
    import time

    import kronos_alpha.inference.forecaster as forecaster

    panel = {name: bars(seed=k) for k, name in enumerate("ABCD")}
    dates = panel["A"].index[-1:]
    fc.set_params(cache_dir=tmp_path, batch_size=1)
    real, calls = forecaster.sample_bars, []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed mid-way
        return real(*args, **kwargs)

    monkeypatch.setattr(forecaster, "sample_bars", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        fc.forecast(panel, dates=dates)
    monkeypatch.setattr(forecaster, "sample_bars", real)
    assert len(entries(tmp_path)) == 2  # the two batches that finished were saved
    stale = tmp_path / "ab" / ".tmp-killed.part"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fc.forecast(panel, dates=dates)
    assert fc.report["from_cache"] == 2 and fc.report["computed"] == 2
    assert not stale.exists()


# -- run folders ----------------------------------------------------------------------------------
def test_restart_clears_only_a_folder_marked_as_a_run_of_its_kind(tmp_path, monkeypatch):
    from kronos_alpha.files import RUN_MARKER, RunFolderError, open_run

    mine = tmp_path / "user"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(RunFolderError, match="no kronos-alpha walk-forward run wrote"):
        open_run(mine, "walk-forward", restart=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    monkeypatch.chdir(mine)
    for folder in (".", ""):
        with pytest.raises(RunFolderError):
            open_run(folder, "finetune", restart=True)
    assert (mine / "thesis.tex").exists()

    run = open_run(tmp_path / "run", "walk-forward")
    (run / "windows").mkdir()
    (run / "windows" / "w0.json").write_text("{}")
    with pytest.raises(
        RunFolderError, match="holds a kronos-alpha 'walk-forward' run, not a finetune run"
    ):
        open_run(run, "finetune", restart=True)
    assert (run / "windows" / "w0.json").exists()
    open_run(run, "walk-forward", restart=True)
    assert sorted(p.name for p in run.iterdir()) == [RUN_MARKER]
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (run / "link").symlink_to(outside, target_is_directory=True)
    open_run(run, "walk-forward", restart=True)  # a link is removed, never followed
    assert (outside / "keep").exists() and not (run / "link").exists()


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    from kronos_alpha.files import atomic_write

    mask = os.umask(0o022)
    os.umask(mask)
    path = atomic_write(tmp_path / "f.csv", "a,b\n")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_write_that_cannot_happen_names_the_target_not_the_temporary_file(tmp_path, capsys):
    from kronos_alpha.cli import main
    from kronos_alpha.files import WriteError, atomic_write

    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError, match="'.*folder': it is a folder"):
        atomic_write(tmp_path / "folder", "a")
    with pytest.raises(WriteError, match=r"cannot write '.*afile/x.csv': .*\(.*afile\)") as err:
        atomic_write(tmp_path / "afile" / "x.csv", "a")
    assert ".part" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]  # nothing left
    # the forecast command checks its targets before any model loads or data is read
    (tmp_path / "folder.csv").mkdir()
    for out, message in [
        ("folder", "the table is written as .csv or .parquet"),
        ("folder.csv", "folder.csv' is a folder; give a file name"),
        ("afile/f.csv", "afile' is a file, not a folder"),
        ("f.json", "the table is written as .csv or .parquet"),
    ]:
        assert main(["forecast", "--out", str(tmp_path / out), "-q", "-i", "missing.csv"]) == 1
        assert message in capsys.readouterr().err
    assert main(["forecast", "--out", str(tmp_path / "f.csv"), "--chart", str(tmp_path / "folder"),
                 "-q", "-i", "missing.csv"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "--chart" in err and "is a folder; give a file name" in err


def test_finetune_and_walk_forward_restart_refuse_a_users_folder(tmp_path):
    from conftest import finetune_config, make_panel
    from kronos_alpha.finetune import FinetuneConfig, run_finetune
    from kronos_alpha.strategies.walk_forward import run_walk_forward

    from kronos_alpha.files import RunFolderError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    cfg = FinetuneConfig.from_dict({**finetune_config(tmp_path), "output_dir": str(mine)})
    with pytest.raises(RunFolderError, match="no kronos-alpha finetune run wrote"):
        run_finetune(cfg, make_panel(), restart=True)
    wf = {"data": {"provider_uri": str(tmp_path), "start": "2020-01-01", "end": "2020-12-31"}}
    with pytest.raises(RunFolderError, match="no kronos-alpha walk-forward run wrote"):
        run_walk_forward(
            {**wf, "output_dir": str(mine), "kronos": {"enabled": False}}, restart=True
        )
    assert (mine / "notes.txt").read_text() == "keep me"


def test_inconsistent_ohlc_bars_are_used_counted_and_named_in_every_door(fc, tiny_pair):
    from kronos_alpha.finetune import split_windows
    from kronos_alpha.finetune.sources import panel_series

    df = bars()
    odd = df.copy()
    odd.loc[odd.index[30], "high"] = odd.loc[odd.index[30], "low"] * 0.9  # high below low
    odd.loc[odd.index[40], "close"] = odd.loc[odd.index[40], "high"] * 1.1  # close above high
    t = df.index[-1:]
    with pytest.warns(UserWarning, match=r"instrument 'A': 2 bar\(s\) with high below"):
        table = fc.forecast({"A": odd}, dates=t)
    assert fc.report["ohlc_inconsistent_bars"] == 2 and len(table) == 1
    fc.forecast({"A": df}, dates=t)
    assert fc.report["ohlc_inconsistent_bars"] == 0
    model, tok = tiny_pair
    future = pd.bdate_range(df.index[-1] + pd.offsets.BDay(1), periods=2)
    with pytest.warns(UserWarning, match=r"df: 2 bar\(s\)"):
        KronosPredictor(model, tok).predict(
            odd, pd.Series(odd.index), pd.Series(future), 2, verbose=False
        )
    with pytest.warns(UserWarning, match=r"series 'A': 2 bar\(s\)"):
        series = panel_series({"A": odd})
    span = {"train": (odd.index[0], odd.index[-1])}
    assert split_windows(series, span, 20, 5, 5.0)["train"].report["ohlc_inconsistent_bars"] == 2


KILLED_RUN = """
import sys, time
import numpy as np, pandas as pd, torch
torch.set_num_threads(1)
import kronos_alpha.inference.forecaster as forecaster
from kronos_alpha import Forecaster, Kronos, KronosTokenizer
real = forecaster.sample_bars
def slow(*a, **k):  # each batch takes a while, so the kill lands mid-run
    out = real(*a, **k)
    time.sleep(0.4)
    return out
forecaster.sample_bars = slow
bars = pd.read_parquet(f"{sys.argv[1]}/bars.parquet")
panel = {k: bars * ([1 + k / 100] * 4 + [1]) for k in range(8)}
fc = Forecaster(Kronos.from_pretrained(sys.argv[1] + "/model"), KronosTokenizer.from_pretrained(sys.argv[1] + "/tokenizer"),
                lookback=24, horizon=3, sample_count=3, batch_size=1, cache_dir=sys.argv[2], progress=False)
fc.forecast({str(k): v for k, v in panel.items()}, dates=panel[0].index[-1:])
"""


def test_a_sigkilled_forecast_keeps_every_finished_batch(tmp_path, tiny_pair):
    import signal
    import subprocess
    import sys
    import time

    model, tok = tiny_pair
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "tokenizer")
    df = bars()
    df.to_parquet(tmp_path / "bars.parquet")
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(cache)])
    deadline = time.time() + 120
    while len(entries(cache)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(entries(cache))
    assert 3 <= done < 8, done  # killed mid-run, after some batches finished
    panel = {str(k): df * ([1 + k / 100] * 4 + [1]) for k in range(8)}
    fc = Forecaster(
        model, tok, lookback=24, horizon=3, sample_count=3, batch_size=1, progress=False
    )
    fresh = fc.forecast(panel, dates=df.index[-1:])
    resumed = fc.set_params(cache_dir=cache).forecast(panel, dates=df.index[-1:])
    assert fc.report["from_cache"] == done and fc.report["computed"] == 8 - done
    pd.testing.assert_frame_equal(resumed, fresh)


class Planted:
    """Unpickling this touches a marker file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_a_planted_pickle_in_a_cache_entry_or_a_training_state_is_never_executed(tmp_path, fc):
    import hashlib
    import io
    import pickle

    from conftest import finetune_config, make_panel
    from kronos_alpha.finetune import FinetuneConfig, run_finetune

    from kronos_alpha.files import open_run
    from kronos_alpha.inference.cache import MAGIC

    marker = tmp_path / "executed"
    panel = {"A": bars()}
    dates = panel["A"].index[-1:]
    fc.set_params(cache_dir=tmp_path / "cache").forecast(panel, dates=dates)
    (entry,) = entries(tmp_path / "cache")
    buf = io.BytesIO()  # a well-formed entry (right key, right hash) whose array is a pickle
    np.save(buf, np.array([Planted(marker)], dtype=object), allow_pickle=True)
    key = entry.stem.encode()
    entry.write_bytes(MAGIC + key + hashlib.sha256(key + buf.getvalue()).digest() + buf.getvalue())
    with pytest.warns(UserWarning, match="corrupt"):
        fc.forecast(panel, dates=dates)
    assert fc.report["computed"] == 1 and not marker.exists()

    cfg = FinetuneConfig.from_dict(finetune_config(tmp_path))
    state = open_run(tmp_path / "run", "finetune") / "tokenizer" / "state"
    state.mkdir(parents=True)
    for name in ("training_state.pt", "training_state.safetensors"):
        (state / name).write_bytes(pickle.dumps(Planted(marker)))
        with pytest.raises(CheckpointError):
            run_finetune(cfg, make_panel())
        (state / name).unlink()
    assert not marker.exists()


def test_a_24_7_market_ending_on_a_saturday_and_a_mixed_frequency_panel(fc):
    days = pd.date_range(end="2024-02-10", periods=60, freq="D")  # crypto: every day, ends Sat
    df = bars(60).set_axis(days, axis=0)
    fc.set_params(return_paths=True).forecast({"BTCUSD": df}, dates=days[-1:])
    future, _ = fc.paths_[(days[-1], "BTCUSD")]
    assert list(future.strftime("%a")) == ["Sun", "Mon", "Tue"]
    assert fc.report["calendar"].startswith("24/7")
    intraday = bars(60).set_axis(pd.date_range("2024-02-09 09:35", periods=60, freq="5min"), axis=0)
    daily = bars(60).set_axis(pd.bdate_range("2023-11-01", periods=60), axis=0)
    with pytest.raises(InputError, match="mixes intraday bars .* and daily or longer bars"):
        fc.forecast({"I": intraday, "D": daily})
