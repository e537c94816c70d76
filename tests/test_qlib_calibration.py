"""KronosModel.fit calibrates on the valid segment: which dates, no bar after the valid end,
the score left alone, calibrated quantiles / prob_up, and the calibrator through pickle and
Qlib's own serialisation. Tiny random models saved as checkpoints; a synthetic provider."""

from __future__ import annotations

import logging
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")

import qlib  # noqa: E402
from conftest import make_bars  # noqa: E402
from kronos_alpha.adapters.qlib import KronosHandler, KronosModel  # noqa: E402
from kronos_alpha.adapters.qlib.data import build  # noqa: E402
from qlib.data.dataset import DatasetH  # noqa: E402
from qlib.utils.serial import Serializable  # noqa: E402

from kronos_alpha.inference.calibration import CalibrationError, Calibrator  # noqa: E402
from kronos_alpha.inference.settings import SettingsError  # noqa: E402

CODES = ["SH600000", "SH600001", "SZ000001", "SZ000002", "SZ000003"]
START, END = "2021-01-04", "2021-08-31"
VALID = ("2021-05-03", "2021-06-30")
SEGMENTS = {"train": ("2021-01-04", "2021-04-30"), "valid": VALID, "test": ("2021-07-01", END)}


def write_provider(src, out, planted: bool = False):
    """Five stocks; ``planted``: every bar after the valid end replaced by wild garbage."""
    for i, code in enumerate(CODES + ["SH000300"]):
        df = make_bars(175, i, START)
        if planted:
            late = pd.to_datetime(df["date"]) > pd.Timestamp(VALID[1])
            rng = np.random.default_rng(100 + i)
            k = rng.uniform(0.2, 5.0, int(late.sum()))
            for c in ("open", "high", "low", "close"):
                df.loc[late, c] = df.loc[late, c].to_numpy() * k
            df.loc[late, "high"] = df.loc[late, ["open", "high", "low", "close"]].max(axis=1)
            df.loc[late, "low"] = df.loc[late, ["open", "high", "low", "close"]].min(axis=1)
        df["factor"] = 1.0
        df.to_csv(src / f"{code}.csv", index=False)
    build(src, out, market="mkt", overwrite=True)
    return out


@pytest.fixture(scope="module")
def providers(tmp_path_factory):
    made = {}
    for name in ("clean", "planted"):
        src = tmp_path_factory.mktemp(f"csv_{name}")
        made[name] = write_provider(src, tmp_path_factory.mktemp(name), name == "planted")
    return made


def use(provider):
    qlib.init(provider_uri=str(provider), region="cn", kernels=1)


def dataset(segments=None):
    h = KronosHandler(instruments=CODES, start_time=START, end_time=END)
    return DatasetH(handler=h, segments=segments or SEGMENTS)


def model(checkpoints, **kw):
    params = dict(model=str(checkpoints / "model"), tokenizer=str(checkpoints / "tokenizer"),
                  lookback=20, horizon=2, sample_count=3, seed=0, progress=False)  # fmt: skip
    return KronosModel(**{**params, **kw})


@pytest.fixture(scope="module")
def fitted(providers, checkpoints):
    use(providers["clean"])
    ds = dataset()
    m = model(checkpoints).fit(ds)
    return ds, m


def valid_dates(ds) -> pd.DatetimeIndex:
    t = ds.handler.fetch(slice(*VALID), col_set="feature").index.get_level_values("datetime")
    return pd.DatetimeIndex(t.unique()).sort_values()


def test_fit_calibrates_on_the_valid_segment_only(fitted):
    ds, m = fitted
    cal = Calibrator.from_dict(m.calibrator)
    dates = valid_dates(ds)
    # every valid date whose 2-bar outcome is inside the segment; the last two are left out
    rep = m.calibration_report
    assert rep["dates"] == len(dates) - 2 and rep["left_out_late"] == 2
    assert pd.Timestamp(cal.first_date) == dates[0]
    assert pd.Timestamp(cal.last_date) == dates[-3]
    assert pd.Timestamp(cal.realised_end) == dates[-1]  # nothing after the valid end
    assert cal.pairs == 5 * (len(dates) - 2) and rep["instruments"] == 5
    assert cal.horizon == 2 and cal.settings["sample_count"] == 3


def test_calibration_reads_no_bar_after_the_valid_end(fitted, providers, checkpoints):
    """The same fit on data whose bars after the valid end are garbage."""
    use(providers["planted"])
    planted = model(checkpoints).fit(dataset())
    assert planted.calibrator == fitted[1].calibrator
    use(providers["clean"])


def test_every_thins_the_dates_keeping_the_latest(fitted, providers, checkpoints):
    use(providers["clean"])
    ds, full = fitted
    m = model(checkpoints, calibration_every=4).fit(ds)
    usable = valid_dates(ds)[:-2]
    expected = usable[::-1][::4][::-1]
    assert m.calibration_report["dates"] == len(expected) and m.calibration_report["every"] == 4
    assert pd.Timestamp(m.calibrator["last_date"]) == usable[-1]
    assert pd.Timestamp(m.calibrator["first_date"]) == expected[0]
    assert m.calibrator["pairs"] == 5 * len(expected) < full.calibrator["pairs"]


def test_predict_keeps_the_score_and_calibrates_the_distribution(fitted, checkpoints):
    ds, m = fitted
    raw = model(checkpoints, calibrate=False).fit(ds)
    assert raw.calibrator is None
    with warnings.catch_warnings():
        # the test segment is out of sample: no "inside the calibration span" warning
        warnings.filterwarnings("error", message=".*calibration span")
        table = m.forecast(ds)
        pred = m.predict(ds)
    pd.testing.assert_series_equal(pred, raw.predict(ds))  # pred_return: unchanged
    plain = raw.forecast(ds)
    pd.testing.assert_series_equal(table["raw_prob_up"], plain["prob_up"], check_names=False)
    pd.testing.assert_series_equal(table["raw_ret_q10"], plain["ret_q10"], check_names=False)
    cal = Calibrator.from_dict(m.calibrator)
    np.testing.assert_allclose(table["ret_q10"], cal.quantiles(plain, [0.1])[:, 0])
    np.testing.assert_allclose(table["prob_up"], 1 - cal.cdf(plain, 0.0))
    assert not np.allclose(table["prob_up"], plain["prob_up"])
    assert (table["ret_q90"] > table["ret_q10"]).all() and m.last_report["calibrated"]
    # the prob_up signal is the calibrated one
    m2 = model(checkpoints, signal="prob_up")
    m2.calibrator = m.calibrator
    np.testing.assert_allclose(m2.predict(ds).to_numpy(), table["prob_up"].sort_index())


def test_the_calibrator_survives_pickle_and_qlib_serialisation(fitted, tmp_path):
    ds, m = fitted
    before = m.forecast(ds)
    assert m._forecaster.calibrator_ is not None
    back = pickle.loads(pickle.dumps(m))
    assert "_forecaster" not in vars(back) and back.calibrator == m.calibrator
    # Qlib's way: R.save_objects -> Serializable.general_dump -> to_pickle (no "_" attributes)
    m.config(dump_all=False, recursive=True)
    Serializable.general_dump(m, tmp_path / "params.pkl")
    loaded = KronosModel.load(tmp_path / "params.pkl")
    assert loaded.calibrator == m.calibrator and loaded.calibration_report == m.calibration_report
    assert loaded.forecaster().calibrator_ == Calibrator.from_dict(m.calibrator)
    pd.testing.assert_frame_equal(loaded.forecast(ds), before)
    pd.testing.assert_frame_equal(back.forecast(ds), before)


def test_no_valid_segment_or_calibrate_false_logs_no_calibration(fitted, checkpoints, caplog):
    ds, _ = fitted
    no_valid = dataset({"train": SEGMENTS["train"], "test": SEGMENTS["test"]})
    logger = logging.getLogger("qlib.kronos_alpha")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="qlib.kronos_alpha"):
            m = model(checkpoints).fit(no_valid)
            off = model(checkpoints, calibrate=False).fit(ds)
    finally:
        logger.removeHandler(caplog.handler)
    assert m.calibrator is None and off.calibrator is None
    assert "no valid segment" in caplog.text and "no calibration was fitted" in caplog.text
    assert "calibrate is false" in caplog.text
    assert "calibrated" not in m.forecast(no_valid).columns.str.cat()  # no raw_ columns
    assert m.last_report["calibrated"] is False


def test_refit_after_a_change_and_a_new_model_drops_the_calibrator(fitted, checkpoints):
    ds, fit = fitted
    m = model(checkpoints).fit(ds)
    assert m.calibrator == fit.calibrator
    m.calibrate = False
    m.fit(ds)
    assert m.calibrator is None and m.forecaster().calibrator_ is None
    m.calibrate = True
    m.fit(ds)
    m.tokenizer = str(checkpoints / "tokenizer")  # a (re)assigned checkpoint: stale calibration
    assert m.calibrator is None and m.calibration_report is None


def test_tuning_keeps_the_chosen_sampling_settings(fitted, checkpoints):
    ds, _ = fitted
    m = model(checkpoints, calibration_tune=True, calibration_every=3).fit(ds)
    rep = m.calibration_report
    assert len(rep["heldout_crps_by_T_top_p"]) == 4
    assert (m.settings.T, m.settings.top_p) == (rep["T"], rep["top_p"])
    assert (m.calibrator["settings"]["T"], m.calibrator["settings"]["top_p"]) == (rep["T"], rep["top_p"])  # fmt: skip
    assert m.forecaster().settings == m.settings


def test_bad_calibration_parameters_and_a_short_valid_segment(fitted, checkpoints):
    ds, _ = fitted
    with pytest.raises(SettingsError, match="calibration_every must be at least 1"):
        model(checkpoints, calibration_every=0)
    with pytest.raises(SettingsError, match="calibrate must be True or False"):
        model(checkpoints, calibrate="yes")
    m = model(checkpoints)
    with pytest.raises(SettingsError, match="calibration_tune must be True or False"):
        m.calibration_tune = 1
    short = dataset({**SEGMENTS, "valid": ("2021-06-28", "2021-06-30")})
    with pytest.raises(CalibrationError, match="at least two.*calibrate: false"):
        m.fit(short)
    few = dataset({**SEGMENTS, "valid": ("2021-06-21", "2021-06-30")})
    with pytest.raises(CalibrationError, match="could not calibrate on the valid segment.*at least 40"):  # fmt: skip
        m.fit(few)
