"""``qlib-data weights``: a benchmark-weight field for a market, from point-in-time membership.

What it is for. Qlib's ``EnhancedIndexingStrategy`` (``qlib/contrib/strategy/signal_strategy.py``)
reads the benchmark's weights on the trading day before each trade date as
``D.features(D.instruments("all"), ["$<market>_weight"], pre_date, pre_date)``, fills the
missing ones with 0 and hands them to its optimiser as ``wb``. Qlib's public data has no such
field; this writes it, as ``features/<code>/<market>_weight.<freq>.bin``.

Weights of day t use the membership of day t only (``instruments/<market>.txt``: inclusive
``CODE<TAB>start<TAB>end`` spans, as ``D.instruments`` reads them) and data of day t only:

- a member counts on t when it has a close on t; members without data (delisted names a folder
  lacks, say) are left out, counted (``excluded_member_days``) and named (``missing_members``);
- equal weights: 1 / N_t over the counted members of t;
- cap weights (``cap_field``): cap_i,t / (sum of the counted members' caps), from
  ``features/<code>/<cap_field>.<freq>.bin``; a member whose cap on t is missing or not
  positive is left out that day and counted.

So on every day with a counted member the weights sum to 1 over them. Every instrument of
``instruments/all.txt`` with a close file gets a weight file spanning its close file's days,
0 where it is not a counted member, so Qlib reads 0 rather than NaN.

Benchmark series. When ``benchmark`` names an instrument without a close file, one is written:
level 1000 on the first weighted day, then L_t = L_t-1 * (1 + R_t) with
R_t = sum_i w_i,t-1 r_i,t / sum_i w_i,t-1 over the members of t-1 with a return on t, and
r_i,t = close_i,t / (last close before t) - 1 from the members' ``close`` as stored (in Qlib's
data the adjusted close, so dividends are reinvested). ``open``/``high``/``low``/``close`` all
hold the level (a close-only index), ``change`` its daily return, ``volume`` the counted
members' summed volume; the code is added to ``instruments/all.txt``. A benchmark that has a
close file is left as it is (``benchmark_written`` False).

Writes go through ``ConfinedWriter`` (inside the folder only, each file atomic). Problems
(unsafe names, no market file or calendar, the field already there without ``overwrite``, no
counted member on any day) are all collected first; any of them raises ``WeightsError`` and
nothing is written. ``dry_run`` reports what would be written and writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.inference.panel import InputError

from .build import ConfinedWriter, bin_bytes, date_only, freq_problem
from .checkfolder import read_bin
from .sources import code_problem

log = logging.getLogger(__name__)

BASE_LEVEL = 1000.0
SHOWN = 10  # names a warning lists


@dataclass
class WeightsReport:
    provider: str = ""
    market: str = ""
    field_name: str = ""
    method: str = "equal"
    dry_run: bool = False
    files: int = 0  # weight files (written, or to write on a dry run)
    members: int = 0  # instruments counted as a member on at least one day
    days: int = 0  # days with at least one counted member
    first_day: str | None = None
    last_day: str | None = None
    members_min: int = 0
    members_max: int = 0
    excluded_member_days: int = 0
    missing_members: list[str] = field(default_factory=list)
    benchmark: str | None = None
    benchmark_written: bool = False
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(vars(self))


class WeightsError(InputError):
    """``write_weights`` refused: the message lists the problems, ``report.errors`` all."""

    def __init__(self, report: WeightsReport):
        super().__init__(
            f"qlib-data weights for {report.market!r} in {report.provider} refused, nothing "
            f"written: {len(report.errors)} problem(s):\n  " + "\n  ".join(report.errors)
        )
        self.report = report


def weight_field(market: str) -> str:
    """The field EnhancedIndexingStrategy reads for ``market`` (``$<market>_weight``)."""
    return f"{market}_weight"


def read_spans(path: Path) -> pd.DataFrame:
    """``CODE<TAB>start<TAB>end`` lines as a frame (code upper-cased, dates parsed)."""
    rows = [
        ln.split("\t")[:3] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()
    ]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) < 3]
    if bad:
        raise InputError(f"{path}: line {bad[0]} is not CODE<TAB>start<TAB>end")
    df = pd.DataFrame(rows, columns=["code", "start", "end"])
    df["code"] = df["code"].str.strip().str.upper()
    df["start"], df["end"] = pd.to_datetime(df["start"]), pd.to_datetime(df["end"])
    return df


def membership(spans: pd.DataFrame, calendar: pd.DatetimeIndex) -> pd.DataFrame:
    """Days x codes, True where the code is a member that day (inclusive spans)."""
    codes = sorted(spans["code"].unique())
    out = np.zeros((len(calendar), len(codes)), dtype=bool)
    col = {c: j for j, c in enumerate(codes)}
    for row in spans.itertuples():
        out[(calendar >= row.start) & (calendar <= row.end), col[row.code]] = True
    return pd.DataFrame(out, index=calendar, columns=codes)


def read_field(root: Path, codes, name: str, freq: str, calendar) -> pd.DataFrame:
    """Days x codes of one field (NaN where a code has no file or no value)."""
    cols = {}
    for code in codes:
        path = root / "features" / code.lower() / f"{name}.{freq}.bin"
        if path.exists():
            start, values = read_bin(path)
            cols[code] = pd.Series(
                values.astype(float), index=calendar[start : start + len(values)]
            )
    return pd.DataFrame(cols, index=calendar, columns=list(codes), dtype=float)


def member_weights(
    members: pd.DataFrame, close: pd.DataFrame, cap: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Point-in-time weights (days x codes): each day's counted members (a member with a close,
    and a positive cap when ``cap`` is given) weighted equally or by cap, summing to 1."""
    counted = members & close.reindex_like(members).notna()
    if cap is not None:
        cap = cap.reindex_like(members)
        counted &= cap.gt(0) & np.isfinite(cap)
        raw = cap.where(counted, 0.0)
    else:
        raw = counted.astype(float)
    total = raw.sum(axis=1)
    return raw.div(total.where(total > 0), axis=0).fillna(0.0)


def benchmark_series(
    weights: pd.DataFrame, close: pd.DataFrame, volume: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The weighted members' index (module docstring): open/high/low/close = level, change,
    volume; on the days from the first to the last with weights."""
    held = weights.sum(axis=1) > 0
    if not held.any():
        raise InputError("no day has a weighted member: no benchmark series to build")
    days = weights.index[held.to_numpy().nonzero()[0][0] : held.to_numpy().nonzero()[0][-1] + 1]
    last = close.ffill()
    r = (last / last.shift(1) - 1).loc[days]
    w_prev = weights.shift(1).loc[days]
    known = w_prev.where(r.notna(), 0.0)
    ret = (known * r.fillna(0.0)).sum(axis=1) / known.sum(axis=1).where(lambda s: s > 0)
    ret.iloc[0] = 0.0
    level = BASE_LEVEL * (1 + ret.fillna(0.0)).cumprod()
    out = pd.DataFrame({"open": level, "high": level, "low": level, "close": level})
    out["change"] = ret.where(ret.index != days[0])
    if volume is not None:
        out["volume"] = volume.loc[days].where(weights.loc[days] > 0).sum(axis=1, min_count=1)
    return out


def _fmt(days, freq: str) -> list[str]:
    return [d.strftime("%Y-%m-%d" if date_only(freq) else "%Y-%m-%d %H:%M:%S") for d in days]


def _problems(root: Path, market: str, cap_field, benchmark, freq: str) -> list[str]:
    probs = [freq_problem(freq), code_problem(market, "market")]
    probs += [code_problem(cap_field, "cap field") if cap_field is not None else None]
    probs += [code_problem(benchmark, "benchmark") if benchmark is not None else None]
    probs = [p for p in probs if p]
    if probs:
        return probs
    for rel in (f"calendars/{freq}.txt", "instruments/all.txt", f"instruments/{market}.txt"):
        if not (root / rel).is_file():
            probs.append(f"{root / rel} is missing")
    return probs


def write_weights(
    provider: str | Path,
    market: str,
    cap_field: str | None = None,
    benchmark: str | None = None,
    freq: str = "day",
    overwrite: bool = False,
    dry_run: bool = False,
) -> WeightsReport:
    """Write ``$<market>_weight`` (and a missing benchmark series) into ``provider``."""
    root = Path(provider)
    report = WeightsReport(provider=str(root), market=market, dry_run=dry_run)
    report.method = f"cap:{cap_field}" if cap_field else "equal"
    report.benchmark = benchmark.upper() if benchmark else None
    report.errors += _problems(root, market, cap_field, benchmark, freq)
    if report.errors:
        raise WeightsError(report)
    report.field_name = name = weight_field(market)
    calendar = pd.DatetimeIndex(
        pd.to_datetime(pd.read_csv(root / "calendars" / f"{freq}.txt", header=None)[0])
    )
    every = read_spans(root / "instruments" / "all.txt")
    members = membership(read_spans(root / "instruments" / f"{market}.txt"), calendar)
    listed = list(every["code"].unique())
    candidates = listed + [c for c in members.columns if c not in set(listed)]
    priced = [
        c for c in candidates if (root / "features" / c.lower() / f"close.{freq}.bin").exists()
    ]
    unlisted = sorted(set(priced) - set(listed))
    if unlisted:
        report.warnings.append(
            f"{len(unlisted)} member(s) with data are not in instruments/all.txt, e.g. "
            f"{unlisted[:SHOWN]}: Qlib's EnhancedIndexingStrategy reads D.instruments('all') "
            "and will not see their weights"
        )
    codes = sorted(set(priced) | set(members.columns))
    close = read_field(root, codes, "close", freq, calendar)
    cap = read_field(root, codes, cap_field, freq, calendar) if cap_field else None
    members = members.reindex(columns=codes, fill_value=False)
    weights = member_weights(members, close, cap)
    counted = weights > 0
    report.missing_members = sorted(
        c for c in members.columns if members[c].any() and close[c].isna().all()
    )
    report.excluded_member_days = int((members & ~counted).to_numpy().sum())
    per_day = counted.sum(axis=1)
    live = per_day[per_day > 0]
    if live.empty:
        report.errors.append(
            f"no member of {market!r} has a close{' and a cap' * bool(cap_field)} on any day"
        )
    else:
        report.days, report.members = len(live), int(counted.any().sum())
        report.first_day, report.last_day = _fmt(live.index[[0, -1]], freq)
        report.members_min, report.members_max = int(live.min()), int(live.max())
    if report.excluded_member_days:
        miss = report.missing_members
        report.warnings.append(
            f"{report.excluded_member_days} member-day(s) left out (no close"
            + (f" or no positive {cap_field}" if cap_field else "")
            + f" that day); {len(miss)} member(s) have no close at all"
            + (f", e.g. {miss[:SHOWN]}" if miss else "")
        )
    existing = [
        c for c in priced if (root / "features" / c.lower() / f"{name}.{freq}.bin").exists()
    ]
    if existing and not overwrite:
        report.errors.append(
            f"field {name!r} already exists for {len(existing)} instrument(s), e.g. "
            f"{existing[:5]}; pass overwrite=True (--overwrite) to replace it"
        )
    bench = None
    has_bench = benchmark and (root / "features" / benchmark.lower() / f"close.{freq}.bin").exists()
    if has_bench:
        report.warnings.append(
            f"benchmark {report.benchmark} already has a close series; left as it is"
        )
    elif benchmark and not live.empty:
        volume = read_field(root, codes, "volume", freq, calendar)
        bench = benchmark_series(weights, close, volume)
    writer = ConfinedWriter(root)
    paths = [f"features/{c.lower()}/{name}.{freq}.bin" for c in priced]
    if bench is not None:
        paths += [f"features/{benchmark.lower()}/{f}.{freq}.bin" for f in [*bench.columns, name]]
        paths.append("instruments/all.txt")
    for rel in paths:
        try:
            writer.path(rel)
        except InputError as exc:
            report.errors.append(str(exc))
    report.files = len(paths)
    for w in report.warnings:
        log.warning(w)
    if report.errors:
        raise WeightsError(report)
    if dry_run:
        return report
    pos = pd.Series(np.arange(len(calendar)), index=calendar)
    for code in priced:
        start, values = read_bin(root / "features" / code.lower() / f"close.{freq}.bin")
        w = weights[code].iloc[start : start + len(values)].to_numpy()
        writer.write(f"features/{code.lower()}/{name}.{freq}.bin", bin_bytes(start, w))
    if bench is not None:
        first = int(pos[bench.index[0]])
        for col in bench.columns:
            data = bin_bytes(first, bench[col].to_numpy())
            writer.write(f"features/{benchmark.lower()}/{col}.{freq}.bin", data)
        writer.write(
            f"features/{benchmark.lower()}/{name}.{freq}.bin",
            bin_bytes(first, np.zeros(len(bench))),
        )
        text = (root / "instruments" / "all.txt").read_text(encoding="utf-8").splitlines()
        keep = [
            ln
            for ln in text
            if ln.strip() and ln.split("\t")[0].strip().upper() != report.benchmark
        ]
        span = _fmt(bench.index[[0, -1]], freq)
        keep.append(f"{report.benchmark}\t{span[0]}\t{span[1]}")
        writer.write("instruments/all.txt", "\n".join(keep) + "\n")
        report.benchmark_written = True
    return report
