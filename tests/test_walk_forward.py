"""Walk-forward evaluation: statistics, purged windows, a tiny end-to-end run, resuming, and a
planted future price jump that must not change anything decided before it.

The end-to-end runs read a 12-instrument copy of ../shared/data (built in a temporary folder,
so the jump can be planted in Qlib's own files); skipped when the data or fixture is absent.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED
from kronos_alpha.strategies.forecast_metrics import (
    central_coverage,
    crps_gaussian,
    crps_samples,
    ideal_sample_coverage,
    newey_west_tstat,
)

PROVIDER = SHARED / "data" / "cn_daily_2010_2022"
FIXTURE = SHARED / "fixtures" / "upstream-tiny"
FIELDS = ("open", "high", "low", "close", "volume", "factor")
JUMP_DATE = pd.Timestamp("2018-01-11")  # inside window 0's test segment, after 2 decisions


# -- statistics ------------------------------------------------------------------------------
def test_newey_west_hand_computed():
    # x = 1..4, lag 1: e = (-1.5, -.5, .5, 1.5); g0 = 5/4; g1 = (.75 - .25 + .75)/4 = .3125
    # S = g0 + 2 * (1 - 1/2) * g1 = 1.5625; se = sqrt(S / 4) = .625; t = 2.5 / .625 = 4
    mean, se, t = newey_west_tstat([1, 2, 3, 4], lag=1)
    assert (mean, se, t) == pytest.approx((2.5, 0.625, 4.0))
    # lag 0 is the iid standard error with 1/n: sqrt(1.25 / 4)
    assert newey_west_tstat([1, 2, 3, 4], lag=0)[1] == pytest.approx(np.sqrt(1.25 / 4))
    # NaN are dropped; positive autocorrelation widens the standard error
    x = np.repeat(np.random.default_rng(0).standard_normal(50), 5) + 0.1
    assert newey_west_tstat(x, 4)[1] > 1.5 * newey_west_tstat(x, 0)[1]
    assert newey_west_tstat([np.nan, 1, 2, 3, 4], 1)[2] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="lag"):
        newey_west_tstat([1, 2], -1)


def test_crps_hand_computed_and_gaussian():
    # samples {0, 1}, y = 0: E|X - y| = .5, E|X - X'| = .5 -> .5 - .25
    assert crps_samples([[0.0, 1.0]], [0.0])[0] == pytest.approx(0.25)
    # a point forecast: CRPS = absolute error
    assert crps_samples([[2.0, 2.0, 2.0]], [0.5])[0] == pytest.approx(1.5)
    # N(0, 1) at 0: 2 phi(0) - 1/sqrt(pi)
    assert crps_gaussian(0.0, 1.0, 0.0) == pytest.approx(
        2 / np.sqrt(2 * np.pi) - 1 / np.sqrt(np.pi)
    )
    # many Gaussian samples approach the closed form
    rng = np.random.default_rng(1)
    y = rng.standard_normal(200)
    s = rng.standard_normal((200, 4000)) * 2 + 0.3
    assert crps_samples(s, y).mean() == pytest.approx(crps_gaussian(0.3, 2.0, y).mean(), rel=0.01)
    assert central_coverage([0, 0, np.nan], [1, 1, 1], [0.5, 2, 0.5]) == 0.5
    # few samples: a calibrated ensemble's empirical 80% interval covers less than 80%
    assert ideal_sample_coverage(8) == pytest.approx(0.645, abs=0.01)
    assert ideal_sample_coverage(400, draws=20_000) == pytest.approx(0.8, abs=0.01)


# -- windows -------------------------------------------------------------------------------
def test_windows_purged_and_cover_the_out_of_sample_span():
    if not PROVIDER.is_dir():
        pytest.skip(f"shared Qlib data not found at {PROVIDER}")
    from kronos_alpha.strategies.panel import init_qlib
    from kronos_alpha.strategies.walk_forward import (
        LookAheadError,
        check_purged,
        load_config,
        rolling_windows,
    )
    from qlib.data import D

    cfg = load_config(
        {
            "data": {"provider_uri": str(PROVIDER), "start": "2016-01-01", "end": "2016-12-31"},
            "windows": {"train_days": 300, "valid_days": 60, "step": 21, "horizon": 5},
            "kronos": {"enabled": False},
        }
    )
    init_qlib(PROVIDER)
    cal = pd.DatetimeIndex(D.calendar(start_time="2014-01-01", end_time="2016-12-31"))
    wins = rolling_windows(cfg, cal)
    assert len(wins) == 12  # 244 bars / 21
    pos = cal.get_loc
    assert wins[0]["test"][0] == pd.Timestamp("2016-01-04")
    assert wins[-1]["test"][1] == pd.Timestamp("2016-12-30")
    for a, b in zip(wins, wins[1:]):
        assert pos(b["test"][0]) == pos(a["test"][1]) + 1  # contiguous, no overlap
        assert pos(b["train"][0]) - pos(a["train"][0]) == 21  # sliding
    for w in wins:
        assert pos(w["test"][0]) - pos(w["valid"][1]) >= 6  # trunc_days = horizon + 1
        assert pos(w["valid"][0]) - pos(w["train"][1]) >= 6
        assert all(w["test"][0] <= t <= w["test"][1] for t in w["dates"])
    bad = dict(wins[0], valid=(wins[0]["valid"][0], cal[pos(wins[0]["test"][0]) - 3]))
    with pytest.raises(LookAheadError, match="horizon 5"):
        check_purged(bad, cal, 5)


# -- end to end ----------------------------------------------------------------------------
def _copy_provider(dest: Path, names: list[str], jump: pd.Timestamp | None) -> None:
    (dest / "calendars").mkdir(parents=True)
    shutil.copy(PROVIDER / "calendars" / "day.txt", dest / "calendars" / "day.txt")
    cal = pd.DatetimeIndex(pd.read_csv(dest / "calendars" / "day.txt", header=None)[0])
    (dest / "instruments").mkdir()
    for pool in ("csi300", "all"):
        rows = pd.read_csv(PROVIDER / "instruments" / f"{pool}.txt", sep="\t", header=None)
        rows = rows[rows[0].isin(names + ["SH000300"])]
        rows.to_csv(dest / "instruments" / f"{pool}.txt", sep="\t", header=False, index=False)
    for name in names + ["SH000300"]:
        src, dst = PROVIDER / "features" / name.lower(), dest / "features" / name.lower()
        dst.mkdir(parents=True)
        for field in FIELDS:
            if not (src / f"{field}.day.bin").exists():
                continue
            arr = np.fromfile(src / f"{field}.day.bin", dtype="<f4")
            if jump is not None and name == names[0] and field in ("open", "high", "low", "close"):
                start = int(arr[0])
                arr[1 + cal.get_loc(jump) - start :] *= 1.5  # a lasting +50% jump from `jump` on
            arr.tofile(dst / f"{field}.day.bin")


def _names() -> list[str]:
    rows = pd.read_csv(PROVIDER / "instruments" / "csi300.txt", sep="\t", header=None)
    full = rows[(rows[1] <= "2016-06-01") & (rows[2] >= "2018-03-31")][0]
    return sorted(full)[:12]


def _config(provider: Path, out: Path) -> dict:
    return {
        "output_dir": str(out),
        "progress": False,
        "data": {
            "provider_uri": str(provider),
            "history_start": "2016-06-01",
            "start": "2018-01-02",
            "end": "2018-02-28",
        },
        "windows": {"train_days": 150, "valid_days": 80, "step": 20, "horizon": 5},
        "portfolio": {"topk": 4},
        "lightgbm": {
            "num_boost_round": 40,
            "early_stopping_rounds": 3,
            "params": {"lambda_l1": 0.0, "lambda_l2": 1.0, "num_leaves": 7, "learning_rate": 0.1},
            "kronos_features": {"components": 2},
        },
        "kronos": {
            "model": str(FIXTURE / "model"),
            "tokenizer": str(FIXTURE / "tokenizer"),
            "lookback": 30,
            "sample_count": 3,
            "calibration": {"days": 100},
        },
        "finetune": {
            "enabled": True,
            "every": 2,
            "predictor": {
                "epochs": 1,
                "batch_size": 16,
                "samples_per_epoch": 32,
                "val_samples": 16,
            },
        },
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not PROVIDER.is_dir() or not (FIXTURE / "model").is_dir():
        pytest.skip(f"shared Qlib data ({PROVIDER}) or fixture ({FIXTURE}) not found")
    from kronos_alpha.strategies.walk_forward import run_walk_forward

    root = tmp_path_factory.mktemp("wf")
    names = _names()
    _copy_provider(root / "clean", names, None)
    _copy_provider(root / "jump", names, JUMP_DATE)
    clean = run_walk_forward(_config(root / "clean", root / "out_clean"))
    jump = run_walk_forward(_config(root / "jump", root / "out_jump"), report=False)
    return {"root": root, "clean": clean, "jump": jump, "names": names}


def _window(out: Path, i: int) -> dict:
    from kronos_alpha.strategies.walk_forward import read_window

    (path,) = (out / "windows").glob(f"w{i:03d}_*")
    return read_window(path)


def test_report_has_every_model_and_metric(runs):
    s = runs["clean"]
    table = s["table"]
    models = ["zero_info", "reversal_5d", "momentum_20d", "lgb_alpha158", "lgb_alpha158_sparse"]
    models += ["lgb_alpha158_kronos"]
    models += ["kronos_zero_shot", "kronos_calibrated", "kronos_finetuned"]
    models += ["kronos_finetuned_calibrated"]
    assert set(models) <= set(table.index)
    assert {"benchmark (buy & hold)", "hist_vol_gaussian"} <= set(table.index)
    for col in ("IC_t_NW", "RankIC_t_NW", "ann_ret_net", "sharpe_net", "turnover_day"):
        assert table.loc[models, col].notna().all(), col
    assert (table.loc[models, "ann_ret_net"] < table.loc[models, "ann_ret_gross"]).all()  # costs
    kron = [m for m in models if m.startswith("kronos")] + ["hist_vol_gaussian"]
    assert table.loc[kron, ["coverage80", "CRPS"]].notna().all().all()
    assert table.loc[kron, "coverage80"].between(0, 1).all()
    out = Path(s["output_dir"])
    text = (out / "report.md").read_text()
    pngs = ("cumulative_returns.png", "ic_through_time.png", "calibration.png")
    for png in (*pngs, "reliability.png", "pit.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in text
    assert "| kronos_finetuned |" in text and "RankIC_t_NW" in text
    # the calibration section: coverage 50/80/90, CRPS skill, Brier against both base rates
    cal = s["calibration"]
    assert "## Calibration of the h-bar return distribution" in text
    # every window's calibrator used the default fitted scale, whose elasticities it prints
    assert re.search(r"scales chosen: \{'fitted': \d+\}", text)
    assert re.search(
        r"mean elasticities \(pred_vol, hist_vol, ewma_vol\): [\d.]+, [\d.]+, [\d.]+", text
    )
    assert cal.loc[kron, ["coverage50", "coverage80", "coverage90"]].stack().between(0, 1).all()
    assert (cal.loc[kron, "coverage50"] <= cal.loc[kron, "coverage90"]).all()
    assert cal.loc["hist_vol_gaussian", "Brier"] == pytest.approx(0.25)
    assert cal.loc[kron, "Brier"].between(0, 1).all()
    bases = [i for i in cal.index if i.startswith("base rate")]
    assert len(bases) == 2 and cal.loc[bases, "Brier"].between(0, 0.3).all()
    pd.testing.assert_series_equal(
        table.loc[kron, "CRPS_skill_vs_histvol"],
        cal.loc[kron, "CRPS_skill_vs_histvol"],
        check_names=False,
    )
    # calibration widens the too narrow raw intervals of the tiny fixture
    assert cal.loc["kronos_calibrated", "coverage80"] > cal.loc["kronos_zero_shot", "coverage80"]
    # the stacked baseline's paired RankIC difference against lgb_alpha158, with its t
    assert "## lgb_alpha158_kronos against lgb_alpha158" in text
    st = s["stacked"]
    pairs = ["lgb_alpha158_kronos - lgb_alpha158", "lgb_alpha158_kronos - lgb_alpha158_sparse"]
    assert list(st.index) == [*pairs, "lgb_alpha158_sparse - lgb_alpha158"]
    assert np.isfinite(st["t_NW"]).all()
    ric = table.loc["lgb_alpha158_kronos", "RankIC"] - table.loc["lgb_alpha158", "RankIC"]
    assert st.loc[pairs[0], "RankIC_diff"] == pytest.approx(ric)
    # the ablation fits on the stacked model's rows, with the same (scaled) penalties
    fk, fs = (_window(out, 0)["fits"][m] for m in ("lgb_alpha158_kronos", "lgb_alpha158_sparse"))
    assert fk["train_rows"] == fs["train_rows"] and fk["features"] == fs["features"] + 12
    assert fk["lambda_l2"] == fs["lambda_l2"] == pytest.approx(1.0 / 5)
    # every model is scored on the same (t, instrument) pairs: Kronos's universe
    w0 = _window(out, 0)
    assert w0["signals"][models].notna().all().all()
    # a calibrated model's signal is its raw twin's pred_return; its members are 99 quantiles
    sig = w0["signals"]
    pd.testing.assert_series_equal(
        sig["kronos_calibrated"], sig["kronos_zero_shot"], check_names=False
    )
    assert w0["samples"]["kronos_calibrated"].shape[1] == 99
    fit = w0["fits"]["kronos_calibrated"]
    assert pd.Timestamp(fit["realised_end"]) < w0["window"]["test"][0]
    assert w0["fits"]["kronos_finetuned_calibrated"]["first_date"] > str(w0["window"]["train"][1])
    assert w0["fits"]["lgb_alpha158_kronos"]["pca"]["fit_end"] == str(w0["window"]["train"][1])
    assert w0["fits"]["kronos_finetuned"]["fitted_in_window"] == 0
    assert _window(out, 1)["fits"]["kronos_finetuned"]["fitted_in_window"] == 0  # every: 2


def test_resume_recomputes_nothing_and_refuses_another_config(runs):
    from kronos_alpha.strategies.walk_forward import WalkForwardConfigError, run_walk_forward

    root = runs["root"]
    cfg = _config(root / "clean", root / "out_clean")
    again = run_walk_forward(cfg)
    assert again["windows_computed"] == 0 and again["windows_resumed"] == runs["clean"]["windows"]
    pd.testing.assert_frame_equal(again["table"], runs["clean"]["table"])
    cfg["portfolio"]["topk"] = 3
    with pytest.raises(WalkForwardConfigError, match="another configuration"):
        run_walk_forward(cfg)


def test_resume_state_is_pickle_free_and_a_partial_resume_reports_the_same(runs, monkeypatch):
    from kronos_alpha.strategies.walk_forward import run_walk_forward

    import kronos_alpha.inference.forecaster as forecaster_module

    root = runs["root"]
    out = root / "out_clean"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle")]
    assert not [p for p in files if p.read_bytes()[:1] == b"\x80"]  # a pickle's first byte
    w0 = _window(out, 0)
    for name in ("kronos_zero_shot", "kronos_finetuned"):
        assert isinstance(w0["samples"][name].columns, pd.RangeIndex)
        assert w0["samples"][name].shape[1] == 3
    assert w0["hist_vol"].name is None and isinstance(w0["window"]["test"][0], pd.Timestamp)

    built = []

    class Counted(forecaster_module.Forecaster):
        def __init__(self, *args, **kwargs):
            built.append(args[:2])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(forecaster_module, "Forecaster", Counted)
    cfg = _config(root / "clean", out)
    # window 1 again: it takes window 0's fits (LightGBM text, fine-tune) from disk
    (next((out / "windows").glob("w001_*")) / "result.json").unlink()
    again = run_walk_forward(cfg)
    assert again["windows_computed"] == 1
    pd.testing.assert_frame_equal(again["table"], runs["clean"]["table"])
    # both windows again: one Forecaster per checkpoint for the run, none per window
    for folder in (out / "windows").glob("w*"):
        (folder / "result.json").unlink()
    built.clear()
    again = run_walk_forward(cfg)
    assert again["windows_computed"] == 2 and len(built) == 2  # base and fine-tuned
    pd.testing.assert_frame_equal(again["table"], runs["clean"]["table"])


def test_planted_future_jump_changes_nothing_decided_before_it(runs):
    root, spiked = runs["root"], runs["names"][0]
    a, b = _window(root / "out_clean", 0), _window(root / "out_jump", 0)
    assert a["window"]["train"][1] < JUMP_DATE and a["window"]["valid"][1] < JUMP_DATE
    before = a["signals"].index.get_level_values(0) < JUMP_DATE
    assert before.any() and (~before).any()
    # fits of window 0 (train/valid end before the jump) are identical: LightGBM (trees, best
    # iteration), the stacked baseline (with its PCA) and both calibrators
    for name in ("lgb_alpha158", "lgb_alpha158_kronos", "lgb_alpha158_sparse", "kronos_calibrated"):
        assert a["fits"][name] == b["fits"][name], name
    assert a["fits"]["kronos_finetuned_calibrated"] == b["fits"]["kronos_finetuned_calibrated"]
    # window 1 calibrates on outcomes after the jump: its calibrator sees it (the test can fail)
    a1, b1 = _window(root / "out_clean", 1), _window(root / "out_jump", 1)
    assert (
        a1["fits"]["kronos_calibrated"]["calibrator"]
        != b1["fits"]["kronos_calibrated"]["calibrator"]
    )

    def weights(res):
        path = Path(res["fits"]["kronos_finetuned"]["model_path"]) / "model.safetensors"
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert weights(a) == weights(b)
    fa, fb = (
        {k: v for k, v in r["fits"]["kronos_finetuned"].items() if not k.endswith("_path")}
        for r in (a, b)
    )
    assert fa == fb and fa["val_loss_best"] is not None  # validation saw the same bars
    # every model's scores, Kronos's sampled returns and the hist-vol forecast before the jump
    pd.testing.assert_frame_equal(a["signals"][before], b["signals"][before])
    for name in ("kronos_zero_shot", "kronos_calibrated", "kronos_finetuned"):
        pd.testing.assert_frame_equal(a["samples"][name][before], b["samples"][name][before])
    pd.testing.assert_frame_equal(a["prob_up"][before], b["prob_up"][before])
    pd.testing.assert_series_equal(a["hist_vol"][before], b["hist_vol"][before])
    # ... while the jump is visible from its date on (the test can fail)
    after = a["signals"].index[~before]
    mine = [i for i in after if i[1] == spiked]
    assert mine
    for col in (
        "reversal_5d",
        "momentum_20d",
        "lgb_alpha158",
        "lgb_alpha158_kronos",
        "kronos_zero_shot",
    ):
        assert not np.allclose(a["signals"].loc[mine, col], b["signals"].loc[mine, col]), col


class _Planted:
    """Unpickling this touches a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_planted_pickles_in_the_resume_folder_are_never_executed(runs, tmp_path):
    import pickle

    from kronos_alpha.strategies.walk_forward import run_walk_forward

    root = runs["root"]
    out = root / "out_clean"
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Planted(marker))
    planted = [out / "alpha158.pkl", out / "signals.pkl"]
    planted += [w / "result.pkl" for w in (out / "windows").iterdir() if w.is_dir()]
    planted += [out / "windows" / f"{w.name}.pkl" for w in (out / "windows").iterdir()]
    try:
        for p in planted:
            p.write_bytes(payload)
        again = run_walk_forward(_config(root / "clean", out))
        assert again["windows_computed"] == 0
        pd.testing.assert_frame_equal(again["table"], runs["clean"]["table"])
        assert not marker.exists()
    finally:
        for p in planted:
            p.unlink(missing_ok=True)


def test_cli_walk_forward_bad_config(tmp_path, capsys):
    from kronos_alpha.cli import main

    cfg = tmp_path / "wf.yaml"
    cfg.write_text("data: {provider_uri: x, start: 2018-01-01, end: 2018-02-01}\nwindow: {}\n")
    assert main(["walk-forward", "--config", str(cfg)]) == 1
    assert "unknown field 'window'" in capsys.readouterr().err


def test_config_errors_name_the_field():
    from kronos_alpha.strategies.walk_forward import WalkForwardConfigError, load_config

    base = {"data": {"provider_uri": "x", "start": "2018-01-01", "end": "2018-06-01"}}
    with pytest.raises(WalkForwardConfigError, match="kronos.model is required"):
        load_config(base)
    k = {"model": "m", "tokenizer": "t", "lookback": 90}
    with pytest.raises(WalkForwardConfigError, match="windows.valid_days \\(90\\).*106"):
        load_config({**base, "kronos": k, "finetune": {"enabled": True}})
    with pytest.raises(WalkForwardConfigError, match="windows.step"):
        load_config({**base, "kronos": k, "windows": {"step": 0}})
    with pytest.raises(WalkForwardConfigError, match="unknown field 'kronos.lookbak'"):
        load_config({**base, "kronos": {"lookbak": 3}})
    cfg = load_config({**base, "kronos": k, "lightgbm": {"params": {"num_leaves": 7}}})
    assert cfg["lightgbm"]["params"] == {"num_leaves": 7} and cfg["windows"]["horizon"] == 5
    from kronos_alpha.strategies.walk_forward.config import forecast_settings

    assert forecast_settings(cfg).int8 is False
    assert forecast_settings(load_config({**base, "kronos": {**k, "int8": True}})).int8 is True
    with pytest.raises(ValueError, match="int8"):
        load_config({**base, "kronos": {**k, "int8": "yes"}})
    # numbers that would not fail until a window ran: named at load
    for over, match in [
        ({"seed": -1}, "seed must be at least 0, got -1"),
        ({"portfolio": {"commission": float("nan")}}, "portfolio.commission must be finite"),
        (
            {"portfolio": {"slippage": -0.001}},
            "portfolio.slippage must be at least 0.0, got -0.001",
        ),
        ({"portfolio": {"topk": "ten"}}, "portfolio.topk must be an integer, got 'ten'"),
        ({"lightgbm": {"num_boost_round": 2.5}}, "lightgbm.num_boost_round must be an integer"),
        ({"baselines": {"hist_vol_window": 1}}, "baselines.hist_vol_window must be at least 2"),
        ({"data": {**base["data"], "end": "soon"}}, "data.end is not a date: 'soon'"),
    ]:
        with pytest.raises(WalkForwardConfigError, match=match):
            load_config({**base, "kronos": k, **over})
    assert load_config({**base, "kronos": k, "num_threads": None})["num_threads"] is None


def test_the_fine_tune_cut_guard_is_a_real_check(tmp_path):
    """The guard that a fine-tune sees nothing after its valid segment is an error, not an
    assert (which python -O would remove)."""
    from kronos_alpha.strategies.walk_forward import LookAheadError
    from kronos_alpha.strategies.walk_forward.kronos import finetune_window

    from kronos_alpha.model.zoo import DEFAULT_DIR

    days = pd.bdate_range("2021-01-04", periods=30)

    class Leaky:  # a data source whose cut returns a bar after the cut date
        members = pd.DataFrame(True, index=days, columns=["A"])

        def cut(self, end, start=None, names=None):
            idx = pd.MultiIndex.from_product([days, ["A"]], names=["datetime", "instrument"])
            return pd.DataFrame(1.0, index=idx, columns=["open", "high", "low", "close", "volume"])

    cfg = {"kronos": {"model": str(DEFAULT_DIR), "tokenizer": None}, "finetune": {}}
    win = {"index": 0, "train": (days[0], days[10]), "valid": (days[12], days[20])}
    with pytest.raises(LookAheadError, match="reaches"):
        finetune_window(cfg, Leaky(), win, tmp_path)
