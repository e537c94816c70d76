"""KronosModel / KronosHandler inside Qlib: predictions through the shared Forecaster, no
look-ahead, pickling, a workflow run end to end, and bad input."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("qlib")

import qlib  # noqa: E402
from conftest import SHARED, make_bars
from kronos_alpha.adapters.qlib import KronosHandler, KronosModel, check_benchmark, raw_bars  # noqa: E402
from kronos_alpha.adapters.qlib.data import build  # noqa: E402
from qlib.data.dataset import DatasetH, TSDatasetH  # noqa: E402
from qlib.data.dataset.handler import DataHandlerLP  # noqa: E402

from kronos_alpha.inference.panel import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = SHARED / "fixtures" / "upstream-tiny"
SHARED_DATA = SHARED / "data" / "cn_daily_2010_2022"
LOOKBACK = 40
START, END = "2021-01-04", "2021-08-31"
TEST_END = "2021-07-09"
SEGMENTS = {"train": ("2021-01-04", "2021-06-30"), "test": ("2021-07-01", TEST_END)}

if not (FIXTURE / "model").is_dir():
    pytest.skip(f"fixture checkpoint {FIXTURE} is absent", allow_module_level=True)


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Path:
    """Five stocks (one listed too late for the lookback) and a benchmark, built by qlib-data."""
    src = tmp_path_factory.mktemp("csv")
    for i, code in enumerate(["SH600000", "SH600001", "SZ000001", "SZ000002"]):
        df = make_bars(175, i, START)
        df["factor"] = 1.0
        df.to_csv(src / f"{code}.csv", index=False)
    late = make_bars(100, 9, "2021-05-10")  # 39 bars on the first test day: one short of lookback
    late["factor"] = 1.0
    late.to_csv(src / "SZ300001.csv", index=False)
    bench = make_bars(175, 7, START)
    bench["factor"] = 1.0
    bench.to_csv(src / "SH000300.csv", index=False)
    out = tmp_path_factory.mktemp("qlib")
    build(src, out, market="mkt", overwrite=True)
    return out


@pytest.fixture
def qlib_on(provider):
    qlib.init(provider_uri=str(provider), region="cn", kernels=1)
    return provider


def stocks():
    return ["SH600000", "SH600001", "SZ000001", "SZ000002", "SZ300001"]


def dataset(cls=DatasetH, end=END, instruments=None, **kw):
    handler = KronosHandler(instruments=instruments or stocks(), start_time=START, end_time=end)
    return cls(handler=handler, segments=SEGMENTS, **kw)


def model(**kw):
    params = dict(
        model=str(FIXTURE / "model"),
        tokenizer=str(FIXTURE / "tokenizer"),
        lookback=LOOKBACK,
        horizon=2,
        sample_count=1,
        progress=False,
    )
    return KronosModel(**{**params, **kw})


def test_handler_fields_and_label(qlib_on):
    h = KronosHandler(instruments=stocks(), start_time=START, end_time=END)
    df = h.fetch(col_set=["feature", "label"], data_key=DataHandlerLP.DK_R)
    assert list(df["feature"].columns) == [
        "open",
        "high",
        "low",
        "close",
        "volume",
    ]  # no amount in the data
    one = df.xs("SH600000", level="instrument")
    close = one[("feature", "close")]
    np.testing.assert_allclose(
        one[("label", "LABEL0")].iloc[:-2],
        (close.shift(-2) / close.shift(-1) - 1).iloc[:-2],
        rtol=1e-5,
    )


@pytest.fixture(scope="module")
def predicted(provider):
    """One fitted model and its test-segment scores, shared by the tests that compare."""
    qlib.init(provider_uri=str(provider), region="cn", kernels=1)
    ds = dataset()
    m = model()
    m.fit(ds)
    return ds, m, m.predict(ds)


def test_predict_uses_the_forecaster_and_skips_short_history(qlib_on, predicted):
    ds, m, pred = predicted
    assert m.fitted_on["start"] == "2021-01-04" and m.fitted_on["instruments"] == 5
    assert isinstance(pred, pd.Series) and pred.dtype == np.float64
    assert list(pred.index.names) == ["datetime", "instrument"]
    dates = pred.index.get_level_values("datetime")
    assert dates.min() == pd.Timestamp("2021-07-01") and dates.max() == pd.Timestamp(TEST_END)
    n_days = dates.nunique()
    # SZ300001 has < lookback bars at the start of the test: skipped and counted
    short = m.last_report["skipped"]["short_history"]
    assert 0 < short < n_days and len(pred) == 5 * n_days - short
    # exactly the shared forecaster's numbers for the same panel
    table = m.forecaster().forecast(raw_bars(ds.handler, TEST_END), dates=dates.unique())
    direct = table["pred_return"].reindex(pred.index).rename("score")
    pd.testing.assert_series_equal(pred, direct, check_exact=False, rtol=1e-6)
    # the other signals are columns of the same table
    np.testing.assert_array_equal(model(signal="prob_up").score(table), table["prob_up"])
    rr = model(signal="return_risk", sample_count=2).score(table)
    np.testing.assert_array_equal(rr, table["ret_mean"] / table["ret_std"].replace(0.0, np.nan))


def test_no_look_ahead_and_tsdataset(qlib_on, predicted):
    """Scores up to t do not change when the data after t is cut off; TSDatasetH agrees."""
    full = predicted[2]
    cut = model().predict(dataset(end="2021-07-06"), segment=("2021-07-01", "2021-07-06"))
    assert len(cut) > 0
    pd.testing.assert_series_equal(full.loc[:"2021-07-06"], cut)
    ts = model().predict(dataset(TSDatasetH, step_len=LOOKBACK))
    pd.testing.assert_series_equal(full, ts)


def test_survives_qlib_pickling(qlib_on, predicted, tmp_path):
    ds, m, before = predicted
    assert m._forecaster is not None
    m.to_pickle(tmp_path / "params.pkl")  # Qlib's dump: attributes starting with "_" are dropped
    with open(tmp_path / "params.pkl", "rb") as f:
        back = pickle.load(f)
    assert getattr(back, "_forecaster", None) is None and back.fitted_on == m.fitted_on
    pd.testing.assert_series_equal(back.predict(ds), before)


def test_handler_without_ohlc_is_an_error(qlib_on):
    loader = {
        "class": "QlibDataLoader",
        "kwargs": {"config": {"feature": (["$close", "$volume"], ["close", "volume"])}},
    }
    h = DataHandlerLP(instruments=stocks(), start_time=START, end_time=END, data_loader=loader)
    with pytest.raises(InputError, match=r"no \['open', 'high', 'low'\] column"):
        model().predict(DatasetH(handler=h, segments=SEGMENTS))


def test_segment_without_data_is_an_error(qlib_on):
    ds = dataset()
    with pytest.raises(InputError, match="has no data"):
        model().predict(ds, segment=("2022-01-01", "2022-02-01"))
    with pytest.raises(InputError, match="no segment 'valid'"):
        model().predict(ds, segment="valid")


def test_provider_missing_a_field_is_an_error(provider, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(provider, broken)
    (broken / "features" / "sz000002" / "high.day.bin").unlink()
    qlib.init(provider_uri=str(broken), region="cn", kernels=1)
    with pytest.raises(
        InputError, match=r"lacks high\.day\.bin for 1 instrument\(s\), e\.g\. \['SZ000002'\]"
    ):
        KronosHandler(instruments=stocks(), start_time=START, end_time=END)


def test_benchmark_not_in_data_is_an_error(qlib_on):
    check_benchmark("SH000300", START, END)
    with pytest.raises(InputError, match="benchmark 'SH000905'"):
        check_benchmark("SH000905", START, END)
    # given to the model, it fails in fit(), before the long predict, not in the backtest
    with pytest.raises(InputError, match="benchmark 'SH000905' has no \\$close data"):
        model(benchmark="SH000905").fit(dataset())
    model(benchmark="SH000300").fit(dataset())
    from kronos_alpha.inference.settings import SettingsError

    with pytest.raises(SettingsError, match="benchmark must be an instrument code.*got 300"):
        KronosModel(benchmark=300)  # a YAML `benchmark: 300`: named at construction, not in fit


def test_band_quantiles_are_a_checked_pair():
    from kronos_alpha.adapters.common import band_quantiles

    from kronos_alpha.inference.settings import SettingsError

    assert band_quantiles([0.05, 0.95]) == (0.05, 0.95)
    for bad in [(0.9, 0.1), 0.1, ("a", "b"), (0.1, float("nan")), (0.1, 0.5, 0.9)]:
        with pytest.raises(SettingsError, match="quantiles must be \\(lower, upper\\)"):
            band_quantiles(bad)  # a scalar or text was a bare TypeError


def fast_config(provider: Path, tmp_path: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "examples" / "qlib" / "workflow_kronos_fast.yaml").read_text())
    cfg["qlib_init"]["provider_uri"] = str(provider)
    # sqlite, as the example, but absolute: mlflow caches a store per URI, so a relative one
    # would stay in the first test's folder. A file store is seconds quicker but races Qlib's
    # asynchronous log_metrics (a half-written metric file: "Metric ... is malformed")
    assert cfg["qlib_init"]["exp_manager"]["kwargs"]["uri"] == "sqlite:///mlruns.db"
    cfg["qlib_init"]["exp_manager"]["kwargs"]["uri"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    kw = cfg["task"]["model"]["kwargs"]
    kw["model"], kw["tokenizer"] = str(FIXTURE / "model"), str(FIXTURE / "tokenizer")
    return cfg


def test_fast_workflow_end_to_end(provider, tmp_path, monkeypatch):
    """The fast example YAML through qrun's own entry point, on the synthetic provider."""
    from qlib.cli.run import workflow
    from qlib.workflow import R

    cfg = fast_config(provider, tmp_path)
    h = cfg["task"]["dataset"]["kwargs"]["handler"]["kwargs"]
    h.update(instruments=stocks(), start_time=START, end_time=END)
    cfg["task"]["dataset"]["kwargs"]["segments"] = {k: list(v) for k, v in SEGMENTS.items()}
    cfg["task"]["dataset"]["kwargs"]["step_len"] = LOOKBACK
    cfg["task"]["model"]["kwargs"]["lookback"] = LOOKBACK
    bt = cfg["port_analysis_config"]["backtest"]
    bt.update(start_time="2021-07-01", end_time="2021-07-08", benchmark="SH000300")
    cfg["port_analysis_config"]["strategy"]["kwargs"].update(topk=2, n_drop=1)
    # the anchors were resolved by yaml: the record's config is the same object
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    workflow(str(path), experiment_name="kronos_fast")
    assert (tmp_path / "mlruns.db").is_file()  # the run went to the sqlite store
    (rec,) = R.list_recorders(experiment_name="kronos_fast").values()
    ic = rec.load_object("sig_analysis/ic.pkl")
    assert ic.notna().sum() >= 5
    report = rec.load_object("portfolio_analysis/report_normal_1day.pkl")
    assert len(report) >= 5 and report["cost"].sum() > 0
    loaded = rec.load_object("params.pkl")
    pred = rec.load_object("pred.pkl")
    assert len(pred) > 0
    again = loaded.predict(dataset())
    np.testing.assert_allclose(
        again.reindex(pred.index).to_numpy(), pred["score"].to_numpy(), rtol=1e-6
    )
    R.end_exp()


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data {SHARED_DATA} is absent")
def test_real_data_handler_and_benchmark():
    qlib.init(provider_uri=str(SHARED_DATA), region="cn", kernels=1)
    check_benchmark("SH000300", "2022-01-01", "2022-03-01")
    with pytest.raises(InputError, match="benchmark 'SH999999'"):
        check_benchmark("SH999999", "2022-01-01", "2022-03-01")
    h = KronosHandler(
        instruments=["SH600000", "SZ000001"], start_time="2022-01-01", end_time="2022-03-01"
    )
    assert "amount" not in h.fields  # the folder has no amount: the forecaster derives it


def test_fit_fine_tunes_when_asked(qlib_on, predicted, tmp_path):
    segments = {
        "train": ("2021-01-04", "2021-04-30"),
        "valid": ("2021-05-03", "2021-06-30"),
        **{"test": SEGMENTS["test"]},
    }
    ds = DatasetH(
        handler=KronosHandler(instruments=stocks(), start_time=START, end_time=END),
        segments=segments,
    )
    stage = {"epochs": 1, "batch_size": 4, "samples_per_epoch": 8, "val_samples": 4, "lr": 1e-2}
    conf = {
        "data": {"lookback": 20},
        "tokenizer": {"train": False},
        "predictor": stage,
        "output_dir": str(tmp_path / "ft"),
        "device": "cpu",
    }
    m = model(finetune_config=conf)
    m.fit(ds)
    assert m.finetuned["model_path"] == str(tmp_path / "ft" / "predictor" / "best") == m.model
    from safetensors.numpy import load_file

    before = load_file(FIXTURE / "model" / "model.safetensors")
    after = load_file(tmp_path / "ft" / "predictor" / "best" / "model.safetensors")
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    tuned = m.predict(ds)
    base = predicted[2]
    assert tuned.index.equals(base.index) and not np.allclose(tuned.to_numpy(), base.to_numpy())
    with pytest.raises(ValueError, match="needs sample_count >= 2"):
        model(signal="return_risk", sample_count=1)
    with pytest.raises(ValueError, match="fine-tuning starts from checkpoints"):
        KronosModel(model=None, finetune_config={}).fit(ds)


@pytest.mark.parametrize(
    "name",
    [
        "workflow_kronos_csi300.yaml",
        "workflow_lgb_alpha158_csi300.yaml",
        "workflow_lgb_alpha158_kronos_csi300.yaml",
    ],
)
def test_example_workflows_are_consistent(name):
    """The CSI300 examples name importable classes and share one backtest (run them with qrun)."""
    import importlib

    cfg = yaml.safe_load((ROOT / "examples" / "qlib" / name).read_text())
    assert cfg["qlib_init"]["exp_manager"]["kwargs"]["uri"].startswith("sqlite:///")
    task = cfg["task"]
    for part in (
        task["model"],
        task["dataset"],
        task["dataset"]["kwargs"]["handler"],
        *task["record"],
    ):
        assert hasattr(importlib.import_module(part["module_path"]), part["class"]), part
    pa = cfg["port_analysis_config"]
    assert pa["strategy"]["kwargs"] | {"signal": None} == {"signal": None, "topk": 50, "n_drop": 5}
    ex = pa["backtest"]["exchange_kwargs"]
    assert (ex["open_cost"], ex["close_cost"], ex["min_cost"], ex["limit_threshold"]) == (
        0.0005,
        0.0015,
        5,
        0.095,
    )
    assert pa["backtest"]["benchmark"] == "SH000300" and cfg["market"] == "csi300"
    assert pd.Timestamp(pa["backtest"]["start_time"]) == pd.Timestamp(
        task["dataset"]["kwargs"]["segments"]["test"][0]
    )


def test_model_holds_one_forecast_settings():
    """Flat kwargs, a mapping or a ForecastSettings: one validated object, horizon 2 by default."""
    from kronos_alpha.inference.settings import ForecastSettings, SettingsError

    assert KronosModel().settings == ForecastSettings(horizon=2)
    m = KronosModel(lookback=60, sample_count=3, seed=7)
    assert m.settings == ForecastSettings(lookback=60, horizon=2, sample_count=3, seed=7)
    assert (m.lookback, m.horizon, m.sample_count) == (60, 2, 3)
    assert KronosModel(settings={"lookback": 50}).settings == ForecastSettings(
        lookback=50, horizon=2
    )
    given = ForecastSettings(lookback=30)
    assert KronosModel(settings=given).settings is given  # taken as it is: its horizon, 10
    assert KronosModel(settings=given, horizon=3).settings == given.replace(horizon=3)
    with pytest.raises(SettingsError, match="KronosModel has no parameter 'lookbak'"):
        KronosModel(lookbak=90)
    with pytest.raises(SettingsError, match="lookback must be at least 2"):
        KronosModel(lookback=1)
    # the forecaster is built from the same object; changing a setting drops it (validated)
    fc = m.forecaster()
    assert fc.settings is m.settings and m.forecaster() is fc
    m.horizon = 5
    assert m.settings.horizon == 5 and m.forecaster() is not fc
    assert m.forecaster().settings.horizon == 5
    with pytest.raises(SettingsError, match="horizon must be at least 1"):
        m.horizon = 0
    rr = KronosModel(signal="return_risk", sample_count=2)
    with pytest.raises(ValueError, match="needs sample_count >= 2"):
        rr.sample_count = 1
    assert rr.sample_count == 2


def test_model_settings_survive_qlib_pickling(tmp_path):
    m = KronosModel(lookback=33, horizon=4, progress=False)
    m.forecaster()
    m.to_pickle(tmp_path / "params.pkl")
    with open(tmp_path / "params.pkl", "rb") as f:
        back = pickle.load(f)
    assert back.settings == m.settings and back.lookback == 33
    assert getattr(back, "_forecaster", None) is None
    assert back.forecaster().settings == m.settings


def test_model_state_from_before_the_one_settings_object():
    """A params.pkl of the earlier KronosModel held each setting as its own attribute."""
    from kronos_alpha.inference.settings import ForecastSettings

    old = {"model": None, "tokenizer": None, "signal": "prob_up", "benchmark": None}
    old |= {"finetune_config": None, "finetuned": None, "fitted_on": None, "last_report": None}
    old |= {"lookback": 45, "horizon": 2, "sample_count": 3, "T": 1.0, "top_k": 0, "top_p": 0.9}
    old |= {"seed": 0, "device": None, "dtype": None, "max_context": None, "batch_size": None}
    old |= {"cache_dir": None, "min_history": None, "fill_suspended": False, "progress": False}
    m = KronosModel.__new__(KronosModel)
    m.__setstate__(old)
    assert m.settings == ForecastSettings(lookback=45, horizon=2, sample_count=3, progress=False)
    assert "lookback" not in vars(m) and m.signal == "prob_up" and m.lookback == 45


def test_raw_bars_column_names_go_through_the_input_boundary(qlib_on):
    fields = ["$open", "$high", "$low", "$close", "$volume", "$close"]
    loader = {
        "class": "QlibDataLoader",
        "kwargs": {
            "config": {"feature": (fields, ["OPEN", "High", "low", "$close", "volume", "CLOSE"])}
        },
    }
    h = DataHandlerLP(instruments=stocks(), start_time=START, end_time=END, data_loader=loader)
    with pytest.raises(InputError, match=r"columns '\$close' and 'CLOSE' are both 'close'"):
        raw_bars(h)
    loader["kwargs"]["config"]["feature"] = (
        fields[:5],
        ["OPEN", "High", "low", "$close", "volume"],
    )
    h = DataHandlerLP(instruments=stocks(), start_time=START, end_time=END, data_loader=loader)
    bars = raw_bars(h)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert (
        list(bars.index.names) == ["datetime", "instrument"] and (bars.dtypes == np.float64).all()
    )


def test_one_module_path_for_every_yaml_class():
    import importlib

    import kronos_alpha.strategies as strategies
    from qlib.utils import init_instance_by_config

    q = importlib.import_module("kronos_alpha.adapters.qlib")
    for name in q.__all__:
        assert callable(getattr(q, name)), name
    assert (
        q.Alpha158Checked
        is importlib.import_module("kronos_alpha.strategies.alpha158").Alpha158Checked
    )
    assert not hasattr(strategies, "TopKWeightStrategy")  # strategies never reach up to Qlib
    assert not hasattr(strategies, "write_riskmodel_files")
    m = init_instance_by_config(
        {
            "class": "KronosModel",
            "module_path": "kronos_alpha.adapters.qlib",
            "kwargs": {"lookback": 30},
        }
    )
    assert isinstance(m, KronosModel) and m.settings.lookback == 30 and m.horizon == 2
