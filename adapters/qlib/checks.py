"""Checks that turn Qlib's quiet failures into errors: an absent field file, a benchmark
without prices, a segment the dataset does not have."""

from __future__ import annotations

from kronos_alpha.strategies.alpha158 import provider_folder

from kronos_alpha.inference.panel import InputError


def missing_field_files(codes, fields, freq: str = "day") -> dict[str, list[str]]:
    """field -> instruments whose ``features/<code>/<field>.<freq>.bin`` is absent.

    Qlib reads an absent field as all-NaN without a word; this is how we notice.
    """
    root = provider_folder(freq)
    if root is None:
        return {}
    out: dict[str, list[str]] = {}
    for code in codes:
        for f in fields:
            if not (root / "features" / str(code).lower() / f"{f}.{freq}.bin").exists():
                out.setdefault(f, []).append(str(code))
    return out


def check_benchmark(benchmark: str, start_time=None, end_time=None, freq: str = "day") -> None:
    """Raise InputError when the backtest benchmark has no close prices in the data.

    Qlib otherwise fails deep inside the backtest (or reports a flat benchmark).
    """
    from qlib.data import D

    try:
        df = D.features([benchmark], ["$close"], start_time, end_time, freq=freq)
    except (KeyError, ValueError, IndexError) as exc:
        raise InputError(
            f"benchmark {benchmark!r} cannot be read from the Qlib data: {exc}"
        ) from exc
    if df.empty or df["$close"].isna().all():
        root = provider_folder(freq)
        where = f" in {root}" if root else ""
        raise InputError(
            f"benchmark {benchmark!r} has no $close data{where} between {start_time} and {end_time}"
        )


def segment_slice(dataset, segment) -> slice:
    """A dataset segment (its name, a (start, end) pair or a slice) as a slice of dates."""
    if isinstance(segment, str):
        if segment not in dataset.segments:
            raise InputError(f"dataset has no segment {segment!r}; it has {list(dataset.segments)}")
        segment = dataset.segments[segment]
    if isinstance(segment, slice):
        return segment
    start, end = segment
    return slice(start, end)
