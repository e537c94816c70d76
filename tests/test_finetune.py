"""kronos_alpha.finetune: golden losses, windows (leak, masking, splits), config errors,
resume, atomic checkpoints, CLI. Tiny models; the whole file runs in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    DATA,
    FINETUNE_PRED,
    FINETUNE_TOK,
    FIXTURE,
    ROOT,
    SHARED,
    finetune_config,
    make_panel,
)
from kronos_alpha.finetune import (
    CheckpointWriteError,
    ConfigError,
    FinetuneConfig,
    PredictorObjective,
    Runtime,
    StopTraining,
    TokenizerObjective,
    Trainer,
    epoch_order,
    load_state,
    normalize_window,
    run_finetune,
    save_pretrained_atomic,
    split_windows,
)
from kronos_alpha.finetune import trainer as trainer_module
from kronos_alpha.finetune.config import split_range
from kronos_alpha.finetune.sources import panel_series
from kronos_alpha.finetune.state import pack, unpack
from safetensors.torch import load_file

from kronos_alpha import CheckpointError, Kronos, KronosPredictor, KronosTokenizer
from kronos_alpha.inference.data import normalize, scaler_stats, time_features
from kronos_alpha.inference.panel import InputError, as_timestamps, ohlcv_matrix

INTRADAY = DATA / "intraday" / "sh600977_5min_2024.csv"


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread avoids OpenMP spin on a busy machine; restored afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def zero_dropout(module):
    module.train()
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "attn_dropout_p"):
            m.attn_dropout_p = 0.0
    return module


# -- golden losses ------------------------------------------------------------------------


def test_objectives_reproduce_golden_losses():
    if not (FIXTURE.exists() and INTRADAY.exists()):
        pytest.skip(f"fixture or data missing under {SHARED}")
    gold = json.loads((FIXTURE / "train_losses_rows0_96.json").read_text())
    df = pd.read_csv(INTRADAY).iloc[:96]
    x = ohlcv_matrix(df)
    mean, std = scaler_stats(x)
    xb = torch.from_numpy(normalize(x, mean, std, 5)[None])
    stamp = torch.from_numpy(time_features(as_timestamps(df["timestamps"]))[None])
    tok = zero_dropout(KronosTokenizer.from_pretrained(FIXTURE / "tokenizer"))
    model = zero_dropout(Kronos.from_pretrained(FIXTURE / "model"))
    with torch.no_grad():
        t = TokenizerObjective(tok)(xb, stamp)
        p = PredictorObjective(model, tok).train()(xb, stamp)
    g = gold["tokenizer"]
    assert float(t["recon_from_s1_mse"]) == pytest.approx(
        g["recon_from_s1_mse"], rel=1e-5, abs=1e-6
    )
    assert float(t["recon_full_mse"]) == pytest.approx(g["recon_full_mse"], rel=1e-5, abs=1e-6)
    assert float(t["bsq_loss"]) == pytest.approx(g["bsq_loss"], rel=1e-5, abs=1e-6)
    assert float(t["loss"]) == pytest.approx(g["total"], rel=1e-5, abs=1e-6)
    g = gold["predictor"]
    for k in ("ce_s1", "ce_s2", "loss"):
        assert float(p[k]) == pytest.approx(g[k], rel=1e-5, abs=1e-6), k


# -- windows ------------------------------------------------------------------------------


def ranges(*pairs):
    return {name: split_range(list(r), name) for name, r in pairs}


def test_scaler_never_sees_the_horizon():
    x = np.random.default_rng(1).normal(100, 5, (30, 6)).astype(np.float32)
    a, ma, sa = normalize_window(x, 20, 5.0)
    y = x.copy()
    y[20:] *= 1000  # a wild future
    b, mb, sb = normalize_window(y, 20, 5.0)
    np.testing.assert_array_equal(a[:20], b[:20])
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(sa, sb)
    assert not np.array_equal(a[20:], b[20:])
    # a volume in a token's base units trains on the same finite numbers (float32 std: inf)
    z = x.copy()
    z[:, 4] *= 2.0**100
    c, _, _ = normalize_window(z, 20, 5.0)
    np.testing.assert_allclose(c, a, atol=1e-5)

    # Through the dataset: change the horizon bars of one window in the raw panel.
    panel = make_panel(1, 120)
    sets = split_windows(
        panel_series(panel), ranges(("train", ("2020-01-01", "2020-12-31"))), 20, 5, 5.0
    )
    ds = sets["train"]
    k, s = ds.index[10]
    before, _ = ds[10]
    panel["S0"].iloc[s + 20 : s + 25, :4] *= 3.0
    ds2 = split_windows(
        panel_series(panel), ranges(("train", ("2020-01-01", "2020-12-31"))), 20, 5, 5.0
    )["train"]
    after, _ = ds2[10]
    np.testing.assert_array_equal(before[:20], after[:20])
    assert not np.array_equal(before[20:], after[20:])
    # and the stats are those of the lookback alone
    raw = ohlcv_matrix(panel["S0"].iloc[s : s + 25])
    m, sd = scaler_stats(raw[:20])
    np.testing.assert_allclose(after, normalize(raw, m, sd, 5.0), rtol=1e-5, atol=1e-5)


def test_suspended_bars_and_short_histories_are_masked():
    panel = make_panel(2, 200)
    panel["S0"].iloc[50, panel["S0"].columns.get_loc("volume")] = 0.0
    panel["S0"].iloc[120, panel["S0"].columns.get_loc("volume")] = np.nan
    panel["S0"].iloc[120, 0] = np.nan  # a NaN price on a suspended bar is masked, not an error
    panel["short"] = make_panel(1, 20)["S0"]  # shorter than one window
    series = panel_series(panel)
    ds = split_windows(series, ranges(("train", ("2020-01-01", "2021-12-31"))), 20, 5, 5.0)["train"]
    names = [s.name for s in series]
    s0 = names.index("S0")
    starts = ds.index[ds.index[:, 0] == s0, 1]
    assert all(not (s <= 50 < s + 25) and not (s <= 120 < s + 25) for s in starts)
    assert len(starts) == (50 - 25 + 1) + (120 - 51 - 25 + 1) + (200 - 121 - 25 + 1)
    assert ds.report["suspended_bars_masked"] == 2
    assert ds.report["series_too_short"] == 1
    assert names.index("short") not in set(ds.index[:, 0])
    for i in range(len(ds)):
        x, _ = ds[i]
        assert np.isfinite(x).all()


def test_nan_price_on_a_tradable_bar_is_an_error():
    panel = make_panel(1, 60)
    panel["S0"].iloc[30, panel["S0"].columns.get_loc("close")] = np.nan
    with pytest.raises(InputError, match=r"S0.*'close'"):
        panel_series(panel)


def test_splits_by_time_with_a_gap():
    panel = make_panel(2, 500)
    series = panel_series(panel)
    rg = ranges(("train", ("2020-01-01", "2020-12-31")), ("valid", ("2021-01-01", "2021-06-30")))
    sets = split_windows(series, rg, 20, 5, 5.0, gap=7)
    t = series[0].time
    train_end = t[t <= rg["train"][1]][-1]
    for k, s in sets["train"].index:
        assert series[k].time[s + 24] <= rg["train"][1]
    first_valid = int((t <= train_end).sum())
    for k, s in sets["valid"].index:
        assert s >= first_valid + 7
        assert series[k].time[s] >= rg["valid"][0] and series[k].time[s + 24] <= rg["valid"][1]
    with pytest.raises(InputError, match="gap"):
        split_windows(series, rg, 20, 5, 5.0, gap=3)


def test_sampling_is_deterministic():
    a = epoch_order(100, 250, seed=3, epoch=0)
    np.testing.assert_array_equal(a, epoch_order(100, 250, seed=3, epoch=0))
    assert not np.array_equal(a, epoch_order(100, 250, seed=3, epoch=1))
    assert not np.array_equal(a, epoch_order(100, 250, seed=4, epoch=0))
    assert sorted(a[:100]) == list(range(100))  # whole permutations first


# -- configuration ------------------------------------------------------------------------


def test_config_yaml_round_trip(tmp_path):
    cfg = FinetuneConfig.from_dict(finetune_config(tmp_path))
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    again = FinetuneConfig.from_yaml(path)
    assert again == cfg
    assert (
        again.tokenizer.lr == 2e-4 and again.tokenizer.clip_grad == 2.0
    )  # upstream tokenizer defaults
    assert again.predictor.betas == [0.9, 0.95] and again.predictor.clip_grad == 3.0


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(learning_rate=1.0), "unknown field learning_rate"),
        (dict(data=dict(lookbak=3)), "unknown field data.lookbak"),
        (dict(tokenizer=dict(lrr=1.0)), "unknown field tokenizer.lrr"),
        (
            dict(data=dict(lookback=60, horizon=10)),
            "data.lookback \\+ data.horizon = 70 exceeds max_context",
        ),
        (dict(data=dict(train=["2020-12-31", "2020-01-01"])), "data.train has reversed dates"),
        (
            dict(data=dict(valid=["2020-06-01", "2021-01-01"])),
            "data.valid starts .* not after data.train",
        ),
        (dict(data=dict(gap=2)), "data.gap"),
        (dict(data=dict(lookback="ninety")), "data.lookback must be an integer"),
        (
            dict(predictor=dict(config={**FINETUNE_PRED, "s1_bits": 5})),
            "predictor.config.s1_bits \\(5\\) does not fit",
        ),
        (
            dict(predictor=dict(config={**FINETUNE_PRED, "depth": 2})),
            "predictor.config.depth is not a Kronos argument",
        ),
        (
            dict(tokenizer=dict(init=str(FIXTURE / "tokenizer"))),
            "tokenizer.config is only used with",
        ),
        (dict(amp="half"), "amp must be"),
        (dict(tokenizer=dict(batch_size=0)), "tokenizer.batch_size must be at least 1"),
        (dict(predictor=dict(lr=float("nan"))), "predictor.lr must be finite, got nan"),
        (dict(data=dict(clip=float("inf"))), "data.clip must be finite"),
        (dict(seed=-1), r"seed must be in \[0, 2\*\*63\), got -1"),
        (dict(device="tpu"), "device 'tpu' is not a torch device"),
        (
            dict(predictor=dict(config={**FINETUNE_PRED, "n_heads": 3})),
            r"predictor.config does not build a Kronos: d_model \(16\) must be divisible",
        ),
        (
            dict(predictor=dict(config={**FINETUNE_PRED, "ffn_dropout_p": 1.5})),
            "predictor.config does not build a Kronos: dropout probability",
        ),
        (
            dict(tokenizer=dict(config={"attn_dropout_p": float("nan")})),
            "tokenizer.config.attn_dropout_p must be finite",
        ),
    ],
)
def test_bad_config_fields_are_named(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        FinetuneConfig.from_dict(finetune_config(tmp_path, **over))


def test_tokenizer_bits_must_fit_a_loaded_predictor(tmp_path):
    if not FIXTURE.exists():
        pytest.skip(f"fixture missing: {FIXTURE}")
    # The fixture predictor has 6+6 bits; the fresh tokenizer 4+4.
    cfg = FinetuneConfig.from_dict(
        finetune_config(tmp_path, predictor=dict(init=str(FIXTURE / "model"), config=None))
    )
    with pytest.raises(ConfigError, match="bit widths"):
        run_finetune(cfg, make_panel())


def test_empty_split_is_an_error(tmp_path):
    cfg = FinetuneConfig.from_dict(
        finetune_config(tmp_path, data=dict(valid=["2023-01-01", "2023-06-30"]))
    )
    with pytest.raises(InputError, match="data.valid .* has no complete window"):
        run_finetune(cfg, make_panel())


# -- training -----------------------------------------------------------------------------


def weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def test_resume_after_a_crash_gives_the_same_weights(tmp_path):
    panel = make_panel()
    full = run_finetune(FinetuneConfig.from_dict(finetune_config(tmp_path / "a")), panel)
    assert full["predictor"]["val_loss_best"] < full["predictor"]["val_loss_before"]

    class Crash(RuntimeError):
        pass

    def crash(stage, step):
        if stage == "predictor" and step == 7:  # state saved at step 6 (save_every 2)
            raise Crash

    cfg = FinetuneConfig.from_dict(finetune_config(tmp_path / "b"))
    with pytest.raises(Crash):
        run_finetune(cfg, panel, on_step=crash)

    def stop(stage, step):
        if stage == "predictor" and step == 9:  # a clean stop mid-epoch: state saved at step 9
            raise StopTraining

    stopped = run_finetune(cfg, panel, on_step=stop)
    assert stopped["predictor"]["stopped"] and stopped["predictor"]["resumed"]
    assert stopped["predictor"]["global_step"] == 9
    resumed = run_finetune(cfg, panel)
    assert resumed["predictor"]["resumed"] and resumed["predictor"]["steps_this_run"] == 12 - 9
    for stage in ("tokenizer", "predictor"):
        a, b = (
            weights(tmp_path / "a" / "run" / stage / "best"),
            weights(tmp_path / "b" / "run" / stage / "best"),
        )
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{stage} {k}")
    log = pd.read_csv(tmp_path / "b" / "run" / "predictor" / "log.csv")
    train_steps = log.loc[log["split"] == "train", "step"].tolist()
    assert train_steps == list(range(1, 13))  # no lost or repeated steps
    full_log = pd.read_csv(tmp_path / "a" / "run" / "predictor" / "log.csv")
    np.testing.assert_allclose(log["loss"], full_log["loss"], rtol=0, atol=0)


def test_a_kill_during_a_state_save_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """The process dies while writing the step-6 state: the resume must start from a state
    whose model, optimizer and random generators all belong to step 4 (dropout is on)."""
    panel = make_panel()
    run_finetune(FinetuneConfig.from_dict(finetune_config(tmp_path / "a")), panel)

    class Killed(RuntimeError):
        pass

    write = trainer_module.save_state_atomic

    def die_at_step_6(state, path):
        if "predictor" in str(path) and state.get("trainer", {}).get("global_step") == 6:
            raise Killed  # before this file is written
        write(state, path)

    cfg = FinetuneConfig.from_dict(finetune_config(tmp_path / "b"))
    monkeypatch.setattr(trainer_module, "save_state_atomic", die_at_step_6)
    with pytest.raises(Killed):
        run_finetune(cfg, panel)
    monkeypatch.undo()
    resumed = run_finetune(cfg, panel)
    assert resumed["predictor"]["resumed"] and resumed["predictor"]["steps_this_run"] == 12 - 4
    a = weights(tmp_path / "a" / "run" / "predictor" / "best")
    b = weights(tmp_path / "b" / "run" / "predictor" / "best")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_run_from_a_checkpoint_loads_everywhere(tmp_path):
    if not FIXTURE.exists():
        pytest.skip(f"fixture missing: {FIXTURE}")
    over = dict(
        tokenizer=dict(train=False, init=str(FIXTURE / "tokenizer"), config=None),
        predictor=dict(init=str(FIXTURE / "model"), config=None, epochs=1),
    )
    res = run_finetune(FinetuneConfig.from_dict(finetune_config(tmp_path, **over)), make_panel())
    model = Kronos.from_pretrained(res["model_path"])
    tok = KronosTokenizer.from_pretrained(res["tokenizer_path"])
    start = weights(FIXTURE / "model")
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items() if k in start)
    df = make_panel(1, 60)["S0"]
    pred = KronosPredictor(model, tok, device="cpu", max_context=64)
    out = pred.predict(
        df.iloc[:50], df.index[:50], df.index[50:55], pred_len=5, seed=0, verbose=False
    )
    assert out.shape == (5, 6) and np.isfinite(out.to_numpy()).all()
    assert json.loads((tmp_path / "run" / "result.json").read_text())["predictor"]["done"]


def test_early_stopping_keeps_the_best(tmp_path, monkeypatch):
    panel = make_panel()
    cfg = FinetuneConfig.from_dict(finetune_config(tmp_path, tokenizer=dict(epochs=6, patience=2)))
    sets = split_windows(
        panel_series(panel),
        {k: split_range(getattr(cfg.data, k), k) for k in ("train", "valid")},
        20,
        5,
        5.0,
    )
    tok = KronosTokenizer(**cfg.fresh_config("tokenizer"))
    tr = Trainer("tokenizer", TokenizerObjective(tok), sets["train"], sets["valid"], cfg.tokenizer,
                 tmp_path / "tok", 0, Runtime(torch.device("cpu"), progress=False))  # fmt: skip
    vals = iter([1.0, 0.9, 0.8, 0.85, 0.81, 0.7, 0.6])
    monkeypatch.setattr(tr, "evaluate", lambda: next(vals))
    s = tr.fit()
    assert (
        s["stopped_early"] and s["best_epoch"] == 2 and s["val_history"] == [0.9, 0.8, 0.85, 0.81]
    )
    assert s["global_step"] == 4 * tr.steps_per_epoch


def test_the_training_state_is_one_pickle_free_file(tmp_path):
    from safetensors import safe_open

    def stop(stage, step):
        if step == 3:
            raise StopTraining

    run_finetune(FinetuneConfig.from_dict(finetune_config(tmp_path)), make_panel(), on_step=stop)
    folder = tmp_path / "run" / "tokenizer" / "state"
    assert [p.name for p in folder.iterdir()] == ["training_state.safetensors"]
    with safe_open(str(folder / "training_state.safetensors"), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["format"] == "kronos_alpha.training_state/1"
    assert json.loads(meta["state"])["trainer"]["global_step"] == 3
    assert "rng.0.torch" in keys and "optimizer.state.0.exp_avg" in keys
    assert any(k.startswith("module.") for k in keys)
    saved = load_state(folder / "training_state.safetensors")
    assert saved["trainer"]["global_step"] == 3 and saved["world"] == 1
    assert (
        isinstance(saved["rng"][0]["python"][1], list) and len(saved["rng"][0]["numpy"][1]) == 624
    )
    assert list(saved["optimizer"]["state"]) == sorted(saved["optimizer"]["state"])  # int ids
    assert isinstance(saved["optimizer"]["param_groups"][0]["betas"], tuple)


def test_state_packing_round_trips_and_refuses_objects():
    tree = {"a": {0: torch.arange(3), 1: (1.5, None)}, "b": [float("inf"), True, "x"]}
    tensors = {}
    packed = json.loads(json.dumps(pack(tree, tensors)))
    assert list(tensors) == ["a.0"]
    back = unpack(packed, tensors)
    assert back["a"][1] == (1.5, None) and back["b"] == [float("inf"), True, "x"]
    assert torch.equal(back["a"][0], torch.arange(3))
    with pytest.raises(TypeError, match="b.0: int64 cannot"):
        pack({"b": [np.int64(1)]}, {})
    with pytest.raises(ValueError, match="reserved"):
        pack({"__tensor__": 1}, {})


def test_a_pickled_or_torn_state_is_not_loaded(tmp_path):
    from kronos_alpha.files import open_run

    cfg = FinetuneConfig.from_dict(finetune_config(tmp_path))
    folder = open_run(tmp_path / "run", "finetune") / "tokenizer" / "state"  # a run's folder
    folder.mkdir(parents=True)
    (folder / "training_state.pt").write_bytes(b"\x80\x04 an old pickle")
    with pytest.raises(CheckpointError, match="earlier version"):
        run_finetune(cfg, make_panel())
    (folder / "training_state.safetensors").write_bytes(b"\x10\x00 torn")
    with pytest.raises(CheckpointError, match="unreadable.*delete it to restart"):
        run_finetune(cfg, make_panel())


def test_a_killed_checkpoint_write_leaves_no_folder_behind(tmp_path):
    tok = KronosTokenizer(**FinetuneConfig().fresh_config("tokenizer") | FINETUNE_TOK)
    (tmp_path / ".best.tmp-killed").mkdir()
    (tmp_path / ".best.tmp-killed" / "model.safetensors").write_bytes(b"partial")
    save_pretrained_atomic(tok, tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_failed_checkpoint_write_keeps_the_previous_best(tmp_path, monkeypatch):
    tok = KronosTokenizer(**FinetuneConfig().fresh_config("tokenizer") | FINETUNE_TOK)
    dest = tmp_path / "best"
    save_pretrained_atomic(tok, dest)
    before = weights(dest)
    with torch.no_grad():
        for p in tok.parameters():
            p.add_(1.0)

    def broken(self, save_directory, *a, **k):
        Path(save_directory, "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(type(tok), "save_pretrained", broken)
    with pytest.raises(CheckpointWriteError, match="disk full.*previous one is kept"):
        save_pretrained_atomic(tok, dest)
    loaded = KronosTokenizer.from_pretrained(dest)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, before[k])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no temporary leftovers


def test_cli_finetune_on_a_csv_folder(tmp_path, capsys):
    from kronos_alpha.cli import main

    data = tmp_path / "csv"
    data.mkdir()
    for name, df in make_panel(2).items():
        df.rename_axis("timestamps").reset_index().to_csv(data / f"{name}.csv", index=False)
    cfg = finetune_config(tmp_path, data=dict(source="csv", csv_dir=str(data)))
    cfg["tokenizer"]["train"] = False
    cfg["predictor"]["epochs"] = 1
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["finetune", "--config", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["train"]["series_with_windows"] == 2
    assert Path(out["model_path"], "config.json").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "predictor": {**cfg["predictor"], "lr_max": 1}}))
    assert main(["finetune", "--config", str(bad)]) == 1
    assert "predictor.lr_max" in capsys.readouterr().err


def test_qlib_source_derives_amount_and_masks_suspensions():
    provider = DATA / "cn_daily_2010_2022"
    if not provider.exists():
        pytest.skip(f"shared Qlib data missing: {provider}")
    from kronos_alpha.finetune.sources import qlib_series

    start, end = pd.Timestamp("2018-01-01"), pd.Timestamp("2019-12-31")
    series = qlib_series(str(provider), "csi300", start, end, instruments=["SH600000", "SH600519"])
    assert [s.name for s in series] == ["SH600000", "SH600519"]
    for s in series:
        ok = s.tradable
        assert ok.mean() > 0.9 and np.isfinite(s.x[ok]).all()
        np.testing.assert_allclose(s.x[ok, 5], s.x[ok, 4] * s.x[ok, :4].mean(axis=1), rtol=1e-5)
        assert s.time[0] >= start and s.time[-1] <= end
    sets = split_windows(
        series,
        ranges(("train", ("2018-01-01", "2018-12-31")), ("valid", ("2019-01-01", "2019-12-31"))),
        60,
        10,
        5.0,
    )
    assert len(sets["train"]) > 100 and len(sets["valid"]) > 100


def test_shipped_default_checkpoint_loads_and_forecasts():
    assets = ROOT / "kronos_alpha" / "assets" / "default"
    if not (assets / "model" / "config.json").exists():
        pytest.skip(f"no default checkpoint in {assets}")
    size = sum(p.stat().st_size for p in assets.rglob("*") if p.is_file())
    assert size < 10 * 2**20
    model = Kronos.from_pretrained(assets / "model")
    tok = KronosTokenizer.from_pretrained(assets / "tokenizer")
    df = make_panel(1, 100)["S0"]
    pred = KronosPredictor(model, tok, device="cpu", max_context=512)
    out = pred.predict(
        df.iloc[:90], df.index[:90], df.index[90:], pred_len=10, seed=0, verbose=False
    )
    assert np.isfinite(out.to_numpy()).all()
    # a forecast from the trained model stays in the price range of the context (scale check)
    assert (
        out["close"]
        .between(df["close"].iloc[:90].min() * 0.7, df["close"].iloc[:90].max() * 1.3)
        .all()
    )
    summary = json.loads((assets / "training.json").read_text())
    assert summary["predictor"]["val_loss_best"] < summary["predictor"]["val_loss_before"]
