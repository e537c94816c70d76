"""The Qlib strategy classes reuse the pandas step; risk-model files load into Qlib's optimiser."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")

from kronos_alpha.adapters.qlib import (  # noqa: E402
    CheckedEnhancedIndexingStrategy,
    TopKWeightStrategy,
    write_riskmodel_files,
)
from kronos_alpha.strategies import (  # noqa: E402
    InfeasibleWeightsError,
    daily_returns,
    factor_exposures,
    topk_step,
)
from qlib.backtest.position import Position  # noqa: E402
from qlib.contrib.strategy.optimizer import EnhancedIndexingOptimizer  # noqa: E402
from qlib.contrib.strategy.signal_strategy import EnhancedIndexingStrategy  # noqa: E402


def test_qlib_topk_strategy_uses_the_pandas_step():
    date = pd.Timestamp("2021-03-01")
    names = [f"S{i}" for i in range(8)]
    scores = pd.Series(np.arange(8, dtype=float)[::-1], index=names)  # S0 best ... S7 worst
    position = Position(
        cash=1000.0,
        position_dict={
            "S7": {"amount": 100, "price": 10.0, "count_day": 1},  # worst but too young to sell
            "S6": {"amount": 100, "price": 10.0, "count_day": 5},
            "S1": {"amount": 100, "price": 10.0, "count_day": 5},
        },
    )
    signal = pd.Series(
        scores.to_numpy(),
        index=pd.MultiIndex.from_product([[date], names], names=["datetime", "instrument"]),
    )
    strat = TopKWeightStrategy(signal=signal, topk=3, n_drop=2, hold_period=3)
    target = strat.generate_target_weight_position(scores, position, date, date)
    assert set(target) == {"S7", "S1", "S0"}  # S6 sold for S0; S7 kept by the hold period
    prev = pd.Series({"S7": 1 / 3, "S6": 1 / 3, "S1": 1 / 3})
    age = pd.Series({"S7": 1.0, "S6": 5.0, "S1": 5.0})
    assert target == topk_step(scores, prev, age, 3, 2, 3).to_dict()


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2020-01-01", periods=150)
    names = [f"SH60{i:04d}" for i in range(30)]
    bench = pd.Series(rng.normal(0, 0.01, len(dates)), index=dates)
    ret = bench.to_numpy()[:, None] * np.linspace(0.5, 1.5, 30) + rng.normal(0, 0.015, (150, 30))
    idx = pd.MultiIndex.from_product([dates, names], names=["datetime", "instrument"])
    panel = pd.DataFrame(
        {
            "close": (10 * np.cumprod(1 + ret, axis=0)).ravel(),
            "volume": rng.uniform(1e5, 1e6, 4500),
        },
        index=idx,
    )
    exp = factor_exposures(panel, bench, beta_window=40, momentum_window=40, momentum_skip=5)
    return panel, exp


def test_riskmodel_files_feed_qlib_enhanced_indexing(tmp_path, synthetic):
    panel, exp = synthetic
    dates = panel.index.levels[0]
    folders = write_riskmodel_files(
        daily_returns(panel), exp, tmp_path, dates=dates[-3:], window=40
    )
    assert [f.name for f in folders] == [f"{d:%Y%m%d}" for d in dates[-3:]]
    # read them back exactly as Qlib's EnhancedIndexingStrategy does
    reader = types.SimpleNamespace(
        _riskdata_cache={},
        riskmodel_root=str(tmp_path),
        factor_exp_path="factor_exp.pkl",
        factor_cov_path="factor_cov.pkl",
        specific_risk_path="specific_risk.pkl",
        blacklist_path="blacklist.pkl",
    )
    F, cov_b, spec, universe, blacklist = EnhancedIndexingStrategy.get_risk_data(reader, dates[-1])
    assert F.shape == (30, 6) and cov_b.shape == (6, 6) and len(universe) == 30 and blacklist == []
    assert np.all(np.linalg.eigvalsh(cov_b) > -1e-12) and np.all(spec > 0)
    wb = np.full(30, 1 / 30)
    score = np.random.default_rng(0).normal(size=30)
    w = EnhancedIndexingOptimizer(lamb=1, delta=0.4, b_dev=0.05)(
        r=score, F=F, cov_b=cov_b, var_u=spec.ravel() ** 2, w0=wb, wb=wb
    )
    assert np.isclose(w.sum(), 1.0) and not np.allclose(w, wb)  # solved, not a fallback


def test_enhanced_indexing_refuses_to_run_without_ecos(monkeypatch):
    import cvxpy as cp

    monkeypatch.setattr(cp, "installed_solvers", lambda: ["CLARABEL"])
    with pytest.raises(InfeasibleWeightsError, match="ECOS"):
        CheckedEnhancedIndexingStrategy(
            riskmodel_root="/nonexistent", signal=pd.Series(dtype=float)
        )


def test_riskmodel_files_are_written_atomically(tmp_path, synthetic, monkeypatch):
    import kronos_alpha.adapters.qlib.riskmodel as riskmodel

    from kronos_alpha import files

    written = []

    def recording(path, data):
        written.append(path)
        return files.atomic_write(path, data)

    monkeypatch.setattr(riskmodel, "atomic_write", recording)
    panel, exp = synthetic
    dates = panel.index.levels[0][-2:]
    folders = write_riskmodel_files(daily_returns(panel), exp, tmp_path, dates=dates, window=40)
    on_disk = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert sorted(written) == on_disk and len(on_disk) == 3 * len(folders) == 6
    assert {p.name for p in on_disk} == {"factor_exp.pkl", "factor_cov.pkl", "specific_risk.pkl"}
