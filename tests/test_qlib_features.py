"""KronosAlpha158: Alpha158 joined with Kronos features in the ``feature`` group: the
columns, the forecaster's numbers on each stock's full history, no look-ahead (planted
future), the PCA on fit-segment rows only, ``every``, the processors, pickling, LightGBM
and a qrun of the example YAML. Tiny random checkpoints; a synthetic provider."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("qlib")
pytest.importorskip("sklearn")

import qlib  # noqa: E402
from conftest import SHARED, make_bars  # noqa: E402
from kronos_alpha.adapters.qlib import KronosAlpha158, KronosHandler, raw_bars  # noqa: E402
from kronos_alpha.adapters.qlib.data import build  # noqa: E402
from kronos_alpha.strategies.kronos_features import kronos_features  # noqa: E402
from qlib.data.dataset.handler import DataHandlerLP  # noqa: E402

from kronos_alpha.inference.forecaster import Forecaster  # noqa: E402
from kronos_alpha.inference.settings import SettingsError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CODES = ["SH600000", "SH600001", "SZ000001", "SZ000002", "SZ000003"]
START, END = "2021-03-01", "2021-09-30"
FIT_END = "2021-06-30"
PLANT = "2021-07-15"  # the planted provider's bars after this date are garbage
JOINS = "2021-06-01"  # SZ000002 joins the market here (its bars start in January)
LOOKBACK = 20
PROCESSORS = dict(
    infer_processors=[
        {"class": "RobustZScoreNorm", "kwargs": {"fields_group": "feature", "clip_outlier": True}},
        {"class": "Fillna", "kwargs": {"fields_group": "feature"}},
    ],
    learn_processors=[
        {"class": "DropnaLabel"},
        {"class": "CSRankNorm", "kwargs": {"fields_group": "label"}},
    ],
)


def write_provider(src: Path, out: Path, planted: bool) -> Path:
    for i, code in enumerate(CODES + ["SH000300"]):
        df = make_bars(200, i, "2021-01-04")
        if planted:
            late = pd.to_datetime(df["date"]) > pd.Timestamp(PLANT)
            k = np.random.default_rng(50 + i).uniform(0.2, 5.0, int(late.sum()))
            for c in ("open", "high", "low", "close"):
                df.loc[late, c] = df.loc[late, c].to_numpy() * k
            df.loc[late, "volume"] = df.loc[late, "volume"].to_numpy()[::-1] * 7
        df["factor"] = 1.0
        df.to_csv(src / f"{code}.csv", index=False)
    build(src, out, market="mkt", overwrite=True)
    lines = (out / "instruments" / "mkt.txt").read_text().splitlines()
    fixed = [
        "\t".join([p[0], JOINS, p[2]]) if p[0] == "SZ000002" else line
        for line, p in ((line, line.split("\t")) for line in lines)
    ]
    fixed = [line for line in fixed if not line.startswith("SH000300")]  # the benchmark
    (out / "instruments" / "mkt.txt").write_text("\n".join(fixed) + "\n")
    return out


@pytest.fixture(scope="module")
def providers(tmp_path_factory):
    return {
        name: write_provider(
            tmp_path_factory.mktemp(f"csv_{name}"), tmp_path_factory.mktemp(name), name == "planted"
        )
        for name in ("clean", "planted")
    }


def use(provider):
    qlib.init(provider_uri=str(provider), region="cn", kernels=1)


def kronos(checkpoints, **kw):
    base = dict(model=str(checkpoints / "model"), tokenizer=str(checkpoints / "tokenizer"),
                lookback=LOOKBACK, sample_count=2, seed=0, progress=False, calendar="business")  # fmt: skip
    return {**base, **kw}


def handler(checkpoints, **kw):
    return KronosAlpha158(instruments="mkt", start_time=START, end_time=END, fit_start_time=START,
                          fit_end_time=FIT_END, kronos=kronos(checkpoints, **kw), **PROCESSORS)  # fmt: skip


def kcols(df):
    return df[[c for c in df.columns if c.startswith("KRONOS_")]]


@pytest.fixture(scope="module")
def built(providers, checkpoints):
    use(providers["clean"])
    return handler(checkpoints, components=2)


def raw(h):
    return h.fetch(col_set="feature", data_key=DataHandlerLP.DK_R)


def test_columns_join_alpha158_in_the_feature_group(built):
    df = built.fetch(col_set="__raw", data_key=DataHandlerLP.DK_R)
    feature = df["feature"]
    names = ["PRED_RETURN", "RET_Q10", "RET_Q50", "RET_Q90", "RET_STD", "PROB_UP", "PRED_VOL",
             "PATH_MEAN", "PATH_MIN", "PATH_MAX", "PC1", "PC2"]  # fmt: skip
    assert list(kcols(feature).columns) == [f"KRONOS_{n}" for n in names]
    assert feature.shape[1] == 157 + len(names) and "VWAP0" not in feature.columns
    assert list(df.columns.get_level_values(0).unique()) == ["feature", "label"]
    k = kcols(feature).to_numpy()
    assert not np.isinf(k).any() and np.isfinite(k).mean() > 0.95
    # a member's rows only: SZ000002 from the day it joins
    t = feature.xs("SZ000002", level="instrument").index
    assert t.min() == pd.Timestamp(JOINS)


@pytest.fixture(scope="module")
def direct(built, checkpoints):
    """The forecaster's features and embedding from each stock's whole history, at the
    handler's dates."""
    bars = raw_bars(KronosHandler(instruments=CODES, start_time="2021-01-04", end_time=END))
    opts = {k: v for k, v in kronos(checkpoints).items() if k not in ("model", "tokenizer")}
    opts["horizon"] = 2  # the handler's default (Qlib's label), not ForecastSettings' 10
    fc = Forecaster(str(checkpoints / "model"), str(checkpoints / "tokenizer"), **opts)
    dates = raw(built).index.get_level_values("datetime").unique()
    return kronos_features(fc, bars, dates).frame, fc.embed(bars, dates)


def test_features_are_the_forecasters_on_full_history(built, direct):
    """Each stock's features equal a forecast from its whole history (also before it joined)."""
    got = kcols(raw(built))
    frame, emb = direct
    forecast_cols = [c for c in got.columns if "_PC" not in c]
    pd.testing.assert_frame_equal(got[forecast_cols], frame.reindex(got.index), rtol=1e-6)
    pcs = built.kronos_pca.transform(emb.reindex(got.index).to_numpy())
    np.testing.assert_allclose(
        got[["KRONOS_PC1", "KRONOS_PC2"]].to_numpy(), pcs, rtol=1e-5, atol=1e-6
    )
    joined = got.xs("SZ000002", level="instrument")
    assert joined.notna().all().all() and len(joined) > 50


def test_no_look_ahead_planted_future(built, providers, checkpoints):
    """Garbage after PLANT (after fit_end too) changes no feature at or before PLANT and not
    the PCA."""
    use(providers["planted"])
    planted = handler(checkpoints, components=2)
    use(providers["clean"])
    a, b = kcols(raw(built)), kcols(raw(planted))
    assert a.index.equals(b.index)
    pd.testing.assert_frame_equal(a.loc[:PLANT], b.loc[:PLANT])
    later = a.index.get_level_values("datetime") > pd.Timestamp(PLANT) + pd.Timedelta(days=3)
    assert not np.allclose(a[later]["KRONOS_PRED_RETURN"], b[later]["KRONOS_PRED_RETURN"])
    assert planted.kronos_pca == built.kronos_pca
    # with every: 3 a row's features come from a decision date <= it, never a later one
    thin = [handler(checkpoints, every=3)]
    use(providers["planted"])
    thin.append(handler(checkpoints, every=3))
    use(providers["clean"])
    pd.testing.assert_frame_equal(kcols(raw(thin[0])).loc[:PLANT], kcols(raw(thin[1])).loc[:PLANT])


def test_pca_fits_on_fit_segment_rows_only(built, direct, checkpoints):
    """The PCA is a fit of the embedding rows up to fit_end that the handler holds (members'
    rows; SZ000002's before it joined are not forecast), and of nothing else."""
    from kronos_alpha.strategies.kronos_features import fit_pca

    pca = built.kronos_pca
    fit_rows = raw(built).loc[:FIT_END].index
    assert pd.Timestamp(pca.fit_end) == pd.Timestamp(FIT_END) and pca.fit_rows == len(fit_rows)
    again = fit_pca(direct[1].reindex(fit_rows), 2, FIT_END)
    np.testing.assert_allclose(np.abs(again.components), np.abs(pca.components), atol=1e-5)
    # another fit_end moves the PCA
    other = KronosAlpha158(instruments="mkt", start_time=START, end_time=END, fit_start_time=START,
                           fit_end_time="2021-08-31", kronos=kronos(checkpoints, components=2),
                           **PROCESSORS)  # fmt: skip
    assert other.kronos_pca.fit_rows > pca.fit_rows and other.kronos_pca != pca


def test_every_forecasts_every_nth_date_and_carries_it_at_most_n_minus_1_days(built, checkpoints):
    thin = handler(checkpoints, every=3)
    a, b = kcols(raw(built)).drop(columns=["KRONOS_PC1", "KRONOS_PC2"]), kcols(raw(thin))
    dates = a.index.get_level_values("datetime").unique().sort_values()
    t = b.index.get_level_values("datetime")
    src = dates[(dates.get_indexer(t) // 3) * 3]
    assert ((dates.get_indexer(t) - dates.get_indexer(src)) <= 2).all()
    expect = a.reindex(pd.MultiIndex.from_arrays([src, b.index.get_level_values("instrument")]))
    expect.index = b.index
    pd.testing.assert_frame_equal(b, expect)
    assert thin.kronos_report["decision_dates"] == len(dates[::3])


def test_processors_treat_the_kronos_columns_like_alpha158s(built):
    from qlib.constant import EPS

    r = kcols(raw(built))
    fit = r.loc[START:FIT_END].to_numpy()
    med = np.nanmedian(fit, axis=0)
    std = (np.nanmedian(np.abs(fit - med), axis=0) + EPS) * 1.4826
    expect = np.nan_to_num(np.clip((r.to_numpy() - med) / std, -3, 3), nan=0.0)
    infer = kcols(built.fetch(col_set="feature", data_key=DataHandlerLP.DK_I))
    np.testing.assert_allclose(infer.to_numpy(), expect, rtol=1e-5, atol=1e-6)
    learn = built.fetch(col_set=["feature", "label"], data_key=DataHandlerLP.DK_L)
    assert learn["label"].notna().all().all() and np.isfinite(learn["feature"].to_numpy()).all()


def test_pickles_without_data_or_weights_and_keeps_the_pca(built):
    built.config(dump_all=False, recursive=True)
    back = pickle.loads(pickle.dumps(built))
    assert back.kronos_pca == built.kronos_pca and getattr(back, "_data", None) is None
    assert "_forecaster" not in vars(back.data_loader)


def test_bad_kronos_options(checkpoints, built):
    with pytest.raises(SettingsError, match="kronos mapping has no key 'lookbak'"):
        KronosAlpha158(instruments="mkt", start_time=START, end_time=END, kronos={"lookbak": 3})
    with pytest.raises(SettingsError, match="kronos.every must be at least 1"):
        KronosAlpha158(instruments="mkt", start_time=START, end_time=END, kronos={"every": 0})
    with pytest.raises(SettingsError, match="needs fit_end_time"):
        KronosAlpha158(instruments="mkt", start_time=START, end_time=END,
                       kronos=kronos(checkpoints, components=2))  # fmt: skip


def test_lightgbm_trains_on_the_joined_features(built, tmp_path, monkeypatch):
    from qlib.contrib.model.gbdt import LGBModel
    from qlib.data.dataset import DatasetH
    from qlib.workflow import R

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # LGBModel logs its metrics to R

    segments = {"train": (START, FIT_END), "valid": ("2021-07-01", "2021-07-31"),
                "test": ("2021-08-02", END)}  # fmt: skip
    ds = DatasetH(handler=built, segments=segments)
    m = LGBModel(num_boost_round=5, num_leaves=4, min_data_in_leaf=5, num_threads=1, verbosity=-1)
    with R.start(experiment_name="lgb_features", uri=(tmp_path / "mlruns").as_uri()):
        m.fit(ds)
    assert m.model.num_feature() == raw(built).shape[1] == 169
    pred = m.predict(ds)
    assert len(pred) > 0 and np.isfinite(pred).all()


def test_example_yaml_runs_with_qrun(providers, checkpoints, tmp_path, monkeypatch):
    """The example YAML through qrun's entry point on the synthetic provider, tiny model."""
    from qlib.cli.run import workflow
    from qlib.workflow import R

    path = ROOT / "examples" / "qlib" / "workflow_lgb_alpha158_kronos_csi300.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["qlib_init"].update(provider_uri=str(providers["clean"]), kernels=1)
    # sqlite as the example, made absolute (mlflow caches a store per URI); a file store races
    # Qlib's asynchronous log_metrics: "Metric 'Rank ICIR' is malformed. No data found."
    assert cfg["qlib_init"]["exp_manager"]["kwargs"]["uri"] == "sqlite:///mlruns.db"
    cfg["qlib_init"]["exp_manager"]["kwargs"]["uri"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    h = cfg["task"]["dataset"]["kwargs"]["handler"]["kwargs"]
    assert h["kronos"]["every"] >= 1 and "fit_end_time" in h
    h.update(instruments="mkt", start_time=START, end_time=END, fit_start_time=START,
             fit_end_time=FIT_END)  # fmt: skip
    h["kronos"].update(kronos(checkpoints, components=0))
    cfg["task"]["dataset"]["kwargs"]["segments"] = {
        "train": [START, FIT_END], "valid": ["2021-07-01", "2021-07-31"], "test": ["2021-08-02", END],
    }  # fmt: skip
    # five stocks: the example's regularisation would leave LightGBM a constant
    cfg["task"]["model"]["kwargs"].update(num_threads=1, num_leaves=4, min_data_in_leaf=5,
                                          lambda_l1=0.0, lambda_l2=0.0)  # fmt: skip
    bt = cfg["port_analysis_config"]["backtest"]
    bt.update(start_time="2021-08-02", end_time="2021-09-28")
    cfg["port_analysis_config"]["strategy"]["kwargs"].update(topk=2, n_drop=1)
    out = tmp_path / "wf.yaml"
    out.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    workflow(str(out), experiment_name="kronos_lgb")
    assert (tmp_path / "mlruns.db").is_file()  # the run went to the sqlite store
    (rec,) = R.list_recorders(experiment_name="kronos_lgb").values()
    assert rec.load_object("sig_analysis/ic.pkl").notna().sum() >= 10
    assert len(rec.load_object("portfolio_analysis/report_normal_1day.pkl")) >= 10
    R.end_exp()


SHARED_DATA = SHARED / "data" / "cn_daily_2010_2022"


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data {SHARED_DATA} is absent")
def test_real_data_three_stocks(checkpoints):
    qlib.init(provider_uri=str(SHARED_DATA), region="cn", kernels=1)
    h = KronosAlpha158(instruments=["SH600000", "SH600036", "SZ000001"], start_time="2022-03-01",
                       end_time="2022-04-29", kronos=kronos(checkpoints, every=5, calendar=None))  # fmt: skip
    k = kcols(raw(h))
    assert k.shape[1] == 10 and len(k) == 3 * k.index.get_level_values("datetime").nunique()
    assert not np.isinf(k.to_numpy()).any() and k.notna().all().all()
    assert h.kronos_report["forecast"]["calendar"] == "XSHG"
