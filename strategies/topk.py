"""Top-K books from a score: long-only with dropout, hold period and turnover cap; long-short.

One rebalance step is :func:`topk_step`; :func:`topk_weights` walks it over dates and the Qlib
strategy (``qlib_strategies.TopKWeightStrategy``) calls it with the live Qlib position, so both
use the same selection rule.

Selection rule (Qlib's TopkDropoutStrategy, made deterministic and extended):
  * held names without a score rank last;
  * ``n_drop`` held names among the worst of (held + best candidates) are sold, the same number
    of best non-held names are bought, and the book is topped up to K;
  * a name held for fewer than ``hold_period`` steps is never sold;
  * ``turnover_cap`` bounds the one-way turnover 0.5 * sum|w_new - w_old| of a step by selling
    fewer names (worst first); the first build from cash is exempt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import StrategyInputError, UniverseTooSmallError
from .signal import to_wide

WEIGHTINGS = ("equal", "score")


def leg_weights(scores: pd.Series, names, weighting: str, floor: float) -> pd.Series:
    """Weights summing to 1 over ``names``: equal, or proportional to score minus ``floor``.

    ``floor`` is the day's lowest score over the whole universe, so every selected name of a
    top-K book gets a positive weight (a small epsilon keeps ties at the floor in the book).
    """
    names = list(names)
    if not names:
        return pd.Series(dtype=float)
    if weighting == "equal":
        return pd.Series(1.0 / len(names), index=names)
    raw = scores.reindex(names).fillna(floor) - floor
    raw = raw + max(float(raw.max()), 1e-12) * 1e-6
    return raw / raw.sum()


def one_way_turnover(new: pd.Series, old: pd.Series) -> float:
    idx = new.index.union(old.index)
    return 0.5 * float(
        (new.reindex(idx, fill_value=0) - old.reindex(idx, fill_value=0)).abs().sum()
    )


def topk_step(
    scores: pd.Series,
    prev: pd.Series | None,
    age: pd.Series | None,
    k: int,
    n_drop: int | None = None,
    hold_period: int = 1,
    turnover_cap: float | None = None,
    weighting: str = "equal",
    date=None,
) -> pd.Series:
    """One long-only rebalance: new weights (summing to 1, only held names) from one date's scores.

    ``prev`` are the current weights (positive, any scale), ``age`` the number of steps each held
    name has been held. ``n_drop=None`` replaces every name that left the top K.
    """
    _check_params(k, n_drop, hold_period, turnover_cap, weighting)
    where = f" on {pd.Timestamp(date):%Y-%m-%d}" if date is not None else ""
    valid = scores.dropna()
    prev = pd.Series(dtype=float) if prev is None else prev[prev > 0]
    age = pd.Series(dtype=float) if age is None else age
    floor = float(valid.min()) if len(valid) else 0.0
    if len(valid) < k:
        raise UniverseTooSmallError(
            f"only {len(valid)} instruments have a score{where}, fewer than K={k}"
        )
    if prev.empty:
        top = valid.sort_values(ascending=False, kind="stable").index[:k]
        return leg_weights(valid, top, weighting, floor)

    held = list(prev.index)
    n_missing = k - len(held)
    drop = k if n_drop is None else n_drop
    # rank held names by score, unscored ones last; the worst come first in `sell_order`
    held_scores = scores.reindex(held).fillna(-np.inf)
    candidates = valid.drop(held, errors="ignore").sort_values(ascending=False, kind="stable")
    if len(candidates) + len(held) < k:
        raise UniverseTooSmallError(
            f"only {len(candidates) + len(held)} instruments are scored or held{where}, fewer than K={k}"
        )
    today = candidates.index[: max(drop + n_missing, 0)]
    # never sell more names than can be replaced: with fewer candidates than drops, the
    # last `drop` of `comb` would reach into names that are still in the top K
    drop = min(drop, max(len(today) - max(n_missing, 0), 0))
    comb = pd.concat([held_scores, candidates.reindex(today)]).sort_values(
        ascending=False, kind="stable"
    )
    worst = set(comb.index[len(comb) - drop :]) if drop > 0 else set()
    sellable = age.reindex(held).fillna(0) >= hold_period
    sell_order = [
        s for s in held_scores.sort_values(kind="stable").index if s in worst and sellable[s]
    ]
    # buy only names ranked above the worst seller, as TopkDropout does implicitly via `comb`
    n_sell = len(sell_order)
    while True:
        sells = sell_order[:n_sell]
        keep = [s for s in held if s not in sells]
        buys = list(today[: max(k - len(keep), 0)])
        new = leg_weights(scores, keep + buys, weighting, floor)
        if (
            turnover_cap is None
            or n_sell == 0
            or one_way_turnover(new, prev / prev.sum()) <= turnover_cap + 1e-12
        ):
            break
        n_sell -= 1
    if len(keep) + len(buys) < k:
        raise UniverseTooSmallError(
            f"only {len(keep) + len(buys)} instruments can be held{where} "
            f"({len(valid)} scored), fewer than K={k}"
        )
    if turnover_cap is not None and one_way_turnover(new, prev / prev.sum()) > turnover_cap + 1e-12:
        # even with no swaps the re-weighting (score weights, top-up) breaks the cap: stand still
        new = prev / prev.sum()
    return new


def topk_weights(
    signal: pd.Series | pd.DataFrame,
    k: int,
    n_drop: int | None = None,
    hold_period: int = 1,
    turnover_cap: float | None = None,
    weighting: str = "equal",
    column: str = "pred_return",
) -> pd.DataFrame:
    """Long-only top-K target weights, wide (datetime x instrument), each row summing to 1.

    Raises ``UniverseTooSmallError`` naming the date when fewer than K names can be held.
    """
    wide = to_wide(signal, column)
    rows, prev, age = [], pd.Series(dtype=float), pd.Series(dtype=float)
    for date, scores in wide.iterrows():
        new = topk_step(scores, prev, age, k, n_drop, hold_period, turnover_cap, weighting, date)
        age = (age.reindex(new.index).fillna(0) + 1).where(new.index.isin(prev.index), 1.0)
        prev = new
        rows.append(new.rename(date))
    return _frame(rows, wide)


def long_short_weights(
    signal: pd.Series | pd.DataFrame,
    k: int,
    n_drop: int | None = None,
    hold_period: int = 1,
    turnover_cap: float | None = None,
    weighting: str = "equal",
    gross: float = 1.0,
    column: str = "pred_return",
) -> pd.DataFrame:
    """Long top-K, short bottom-K: each leg holds gross/2, so rows sum to 0 and |w| sums to gross.

    Each leg follows the top-K rule (the short leg on the negated score); the short leg chooses
    among names not in the new long leg, so the universe must hold 2K scored names.
    """
    if gross <= 0:
        raise StrategyInputError(f"gross must be positive, got {gross}")
    wide = to_wide(signal, column)
    rows = []
    prev_l, age_l, prev_s, age_s = (pd.Series(dtype=float) for _ in range(4))
    for date, scores in wide.iterrows():
        if scores.notna().sum() < 2 * k:
            raise UniverseTooSmallError(
                f"only {int(scores.notna().sum())} instruments have a score on {date:%Y-%m-%d}, "
                f"fewer than 2K={2 * k} for a long-short book"
            )
        long = topk_step(
            scores, prev_l, age_l, k, n_drop, hold_period, turnover_cap, weighting, date
        )
        rest = -scores.drop(long.index, errors="ignore")
        short = topk_step(
            rest,
            prev_s.drop(long.index, errors="ignore"),
            age_s,
            k,
            n_drop,
            hold_period,
            turnover_cap,
            weighting,
            date,
        )
        age_l = (age_l.reindex(long.index).fillna(0) + 1).where(long.index.isin(prev_l.index), 1.0)
        age_s = (age_s.reindex(short.index).fillna(0) + 1).where(
            short.index.isin(prev_s.index), 1.0
        )
        prev_l, prev_s = long, short
        rows.append(pd.concat([long * gross / 2, -short * gross / 2]).rename(date))
    return _frame(rows, wide)


def _frame(rows: list[pd.Series], wide: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(rows).reindex(columns=wide.columns).fillna(0.0)
    out.index = pd.DatetimeIndex(out.index, name="datetime")
    out.columns.name = "instrument"
    return out


def _integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_params(k, n_drop, hold_period, turnover_cap, weighting) -> None:
    if not _integer(k) or k < 1:
        raise StrategyInputError(f"K must be a positive integer, got {k!r}")
    if n_drop is not None and not (_integer(n_drop) and 0 <= n_drop <= k):
        raise StrategyInputError(f"n_drop must be an integer between 0 and K={k}, got {n_drop!r}")
    if not _integer(hold_period) or hold_period < 1:  # NaN and 1.5 passed unnoticed
        raise StrategyInputError(f"hold_period must be an integer >= 1 step, got {hold_period!r}")
    if turnover_cap is not None and not (0 <= turnover_cap <= 1):
        raise StrategyInputError(
            f"turnover_cap is a one-way fraction in [0, 1], got {turnover_cap}"
        )
    if weighting not in WEIGHTINGS:
        raise StrategyInputError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
