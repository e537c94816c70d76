"""Benchmark weights (``qlib-data weights``) and Qlib's EnhancedIndexingStrategy end to end, on a
copy of the shared CSI300 data (36 names: 30 members all through, 6 that join or leave at the
index's December 2020 review, inside the backtest)."""

from __future__ import annotations

import copy
import os

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("qlib")
pytest.importorskip("cvxpy")

from conftest import DATA  # noqa: E402
from kronos_alpha.adapters.qlib.data import check  # noqa: E402
from kronos_alpha.adapters.qlib.subset import copy_provider  # noqa: E402
from kronos_alpha.adapters.qlib.weights import (  # noqa: E402
    WeightsError,
    membership,
    read_spans,
    write_weights,
)
from kronos_alpha.strategies.errors import StrategyInputError  # noqa: E402

from kronos_alpha.cli import main  # noqa: E402

PROVIDER = DATA / "cn_daily_2010_2022"
START, END, HISTORY = "2020-11-16", "2021-01-15", "2020-01-02"
REVIEW = pd.Timestamp("2020-12-14")  # CSI300 members change on this day
BENCH = "KAEW"  # not in the data: the weights command writes it
BOUND = 0.1  # the optimiser's |active exposure| bound per style factor

pytestmark = pytest.mark.skipif(
    not (PROVIDER / "instruments" / "csi300.txt").exists(), reason=f"no data at {PROVIDER}"
)


def _names() -> list[str]:
    spans = read_spans(PROVIDER / "instruments" / "csi300.txt")
    has = {c for c in spans["code"] if (PROVIDER / "features" / c.lower()).is_dir()}
    full = sorted(set(spans[(spans.start <= HISTORY) & (spans.end >= END)].code) & has)
    moving = spans[(spans.start == REVIEW) | (spans.end == REVIEW - pd.Timedelta(days=3))]
    movers = sorted((set(moving.code) & has) - set(full))[:6]
    return full[:: len(full) // 30][:30] + movers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ei") / "qlib"
    names = copy_provider(PROVIDER, root, _names())
    report = write_weights(root, "csi300", benchmark=BENCH)
    return root, names, report


def _wide(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df[col].unstack(level="instrument").sort_index()


def test_weights_are_point_in_time_and_sum_to_one(folder):
    from kronos_alpha.strategies.panel import init_qlib
    from qlib.data import D

    root, names, report = folder
    assert report.benchmark_written and report.members == len(names) and not report.errors
    init_qlib(root)
    got = D.features(D.instruments("all"), ["$csi300_weight"], "2019-01-02", "2022-12-30")
    w = _wide(got, "$csi300_weight").fillna(0.0)
    spans = read_spans(PROVIDER / "instruments" / "csi300.txt")
    member = membership(spans[spans.code.isin(names)], w.index)
    member = member.reindex(columns=w.columns, fill_value=False)
    n = member.sum(axis=1)
    assert (n > 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-5)
    assert ((w > 0) == member).all().all()  # a weight exactly on the days of membership
    np.testing.assert_allclose(w.where(member).max(axis=1), 1 / n, rtol=1e-5)
    np.testing.assert_allclose(w.where(member).min(axis=1), 1 / n, rtol=1e-5)
    joined = spans[spans.code.isin(names) & (spans.start == REVIEW)]
    assert len(joined)  # and on a join date the weight starts that very day
    assert (w.loc[REVIEW, joined.code] > 0).all() and (w.loc["2020-12-11", joined.code] == 0).all()


def test_benchmark_series_is_the_weighted_members(folder):
    from kronos_alpha.strategies.panel import init_qlib
    from qlib.data import D

    root, names, _ = folder
    init_qlib(root)
    df = D.features(names + [BENCH], ["$close", "$csi300_weight"], "2020-01-02", "2020-12-31")
    close, w = _wide(df, "$close"), _wide(df, "$csi300_weight").fillna(0.0)
    r = close[names].ffill().pct_change(fill_method=None)
    wp = w[names].shift(1).where(r.notna(), 0.0)
    expected = (wp * r.fillna(0)).sum(axis=1) / wp.sum(axis=1)
    got = close[BENCH].pct_change(fill_method=None)
    np.testing.assert_allclose(got.iloc[1:], expected.iloc[1:], atol=2e-6)
    report = check(root, market="csi300", benchmark=BENCH, fields=("close", "csi300_weight"))
    assert report.ok, report.errors
    shipped = PROVIDER / "features" / "sh000300" / "close.day.bin"
    if (root / "features" / "sh000300").exists():  # an existing benchmark is left as it is
        assert (
            root / "features" / "sh000300" / "close.day.bin"
        ).read_bytes() == shipped.read_bytes()


def test_cap_weights_refusals_and_confinement(tmp_path):
    from kronos_alpha.adapters.qlib.data import read_bin

    root = tmp_path / "qlib"
    names = copy_provider(PROVIDER, root, _names()[:6])
    assert main(["qlib-data", "weights", str(root), "--market", "csi300"]) == 0
    before = (root / "features" / names[0].lower() / "csi300_weight.day.bin").read_bytes()
    with pytest.raises(WeightsError, match="already exists"):
        write_weights(root, "csi300", cap_field="volume")
    with pytest.raises(WeightsError, match="market '../x' is not allowed"):
        write_weights(root, "../x")
    with pytest.raises(WeightsError, match="csi500.txt is missing"):
        write_weights(root, "csi500")
    assert main(["qlib-data", "weights", str(root), "--market", "csi300"]) == 1  # refused
    assert (root / "features" / names[0].lower() / "csi300_weight.day.bin").read_bytes() == before
    argv = ["qlib-data", "weights", str(root), "--market", "csi300", "--cap-field", "volume"]
    assert main(argv + ["--overwrite"]) == 0
    cal = pd.DatetimeIndex(pd.read_csv(root / "calendars" / "day.txt", header=None)[0])
    cols = {}
    for f in ("csi300_weight", "volume"):
        for c in names:
            start, v = read_bin(root / "features" / c.lower() / f"{f}.day.bin")
            cols[(f, c)] = pd.Series(v, index=cal[start : start + len(v)], dtype=float)
    wide = pd.DataFrame(cols).loc["2018-01-02":"2018-12-28"]
    spans = read_spans(root / "instruments" / "csi300.txt")
    member = membership(spans, wide.index).reindex(columns=names, fill_value=False)
    vol = wide["volume"].where(member & (wide["volume"] > 0), 0.0)
    expected = vol.div(vol.sum(axis=1), axis=0)
    np.testing.assert_allclose(wide["csi300_weight"][names], expected[names], atol=1e-6)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = root / "features" / names[1].lower()
    for f in target.iterdir():
        (outside / f.name).write_bytes(f.read_bytes())
        f.unlink()
    target.rmdir()
    os.symlink(outside, target)  # a features folder that leads out of the provider folder
    seen = {f.name: f.read_bytes() for f in outside.iterdir()}
    written = {f: f.read_bytes() for f in root.rglob("csi300_weight.day.bin")}
    with pytest.raises(WeightsError, match="outside the output folder"):
        write_weights(root, "csi300", overwrite=True)
    assert {f.name: f.read_bytes() for f in outside.iterdir()} == seen  # nothing written there
    assert {f: f.read_bytes() for f in root.rglob("csi300_weight.day.bin")} == written


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    import cvxpy as cp
    from kronos_alpha.adapters.qlib.enhanced import enhanced_indexing_backtest

    root, _, _ = folder
    solvers = []
    solve = cp.Problem.solve

    def spy(self, *args, **kwargs):
        solvers.append(kwargs.get("solver"))
        return solve(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cp.Problem, "solve", spy)
        out = enhanced_indexing_backtest(
            root,
            tmp_path_factory.mktemp("riskmodel"),
            START,
            END,
            HISTORY,
            benchmark=BENCH,
            optimizer_kwargs={"b_dev": 0.05},
            style_bound=BOUND,
        )
    return out, solvers


def test_enhanced_indexing_holds_a_risk_controlled_book(run):
    import cvxpy as cp

    out, solvers = run
    days = out.report.index
    assert len(days) == 44 and set(solvers) == {cp.ECOS} and len(solvers) >= len(days)
    assert sorted(out.strategy.steps) == list(days)  # every day solved, none skipped
    invested = out.invested()
    assert invested.min() > 0.7 and invested.mean() > 0.85  # stocks, not cash
    assert min(len(p.get_stock_list()) for p in out.positions.values()) >= 10
    styles = [n for n in out.factor_names if n != "intercept"]
    assert len(styles) == 5 and list(out.f_dev[:5]) == [BOUND] * 5
    target = out.exposures.xs("target", level="kind")[styles]
    held = out.exposures.xs("held", level="kind")[styles]
    # the optimiser's book: within bounds, up to ECOS's tolerance and Qlib dropping (then
    # renormalising away) weights under its epsilon, 5e-5
    assert (target.abs() <= BOUND + 1e-4).all().all(), (target.abs() - BOUND).max()
    # the book held at the close drifts (limit moves leave buys unfilled), but stays near them
    assert (held.abs().mean() <= 1.5 * BOUND).all(), held.abs().mean()
    assert (out.exposures.xs("held", level="kind")["outside"] == 0).all()
    # an unconstrained top-10 of the same (momentum) signal is far outside them
    from qlib.utils import get_pre_trading_date

    signal = out.strategy.signal.signal_cache
    naive = []
    for day, step in out.strategy.steps.items():
        pre = get_pre_trading_date(day, future=True)
        top = signal.xs(pre, level=0).reindex(step.index).dropna().nlargest(10).index
        w = pd.Series(0.0, index=step.index)
        w[top] = 0.1
        naive.append((w - step["benchmark"]) @ step[styles])
    naive = pd.DataFrame(naive).abs().mean()
    assert (naive > 2 * BOUND).all() and (naive > 2 * held.abs().mean()).all(), naive


def test_checked_targets_are_qlibs(run):
    """Our step reads its inputs once for the whole run; Qlib's own method gives the same book."""
    from qlib.contrib.strategy.signal_strategy import EnhancedIndexingStrategy
    from qlib.utils import get_pre_trading_date

    out, _ = run
    strat = out.strategy
    days = sorted(out.positions)
    at = days.index(REVIEW)  # the benchmark changes that day: its weights of the day before count
    for prev, day in [(days[4], days[5]), (days[at - 1], days[at])]:
        score = strat.signal.signal_cache.xs(get_pre_trading_date(day, future=True), level=0)
        ours = strat.generate_target_weight_position(
            score, copy.deepcopy(out.positions[prev]), day, day
        )
        qlibs = EnhancedIndexingStrategy.generate_target_weight_position(
            strat, score, copy.deepcopy(out.positions[prev]), day, day
        )
        assert ours.keys() == qlibs.keys() and len(ours) >= 10
        np.testing.assert_allclose([ours[k] for k in ours], [qlibs[k] for k in ours], atol=1e-7)


def test_a_missing_weight_field_is_an_error(run):
    from kronos_alpha.adapters.qlib import CheckedEnhancedIndexingStrategy

    out, _ = run
    strat = out.strategy
    other = CheckedEnhancedIndexingStrategy(
        signal=strat.signal.signal_cache,
        riskmodel_root=strat.riskmodel_root,
        market="csi500",  # no $csi500_weight in the folder: Qlib would read zeros
        optimizer_kwargs={"b_dev": 0.05},
    )
    day = sorted(out.positions)[3]
    score = strat.signal.signal_cache.xs(sorted(out.positions)[2], level=0)
    with pytest.raises(StrategyInputError, match=r"\$csi500_weight"):
        other.generate_target_weight_position(score, copy.deepcopy(out.positions[day]), day, day)
