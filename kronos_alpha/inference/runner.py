"""Running windows through the model: cache, shards, memory-sized batches, progress.

Shared by ``Forecaster.forecast`` (sampled paths) and ``Forecaster.embed`` (hidden states):
a ``Job`` says what one window yields and how a batch of windows is computed; this module
looks windows up in the cache, splits the rest between ranks, groups them by context length
into batches that fit in memory, and stores each batch as it finishes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import distributed
from .cache import ForecastCache, settings_digest, window_key
from .data import Window
from .device import batch_windows, check_fits, window_bytes


@dataclass(frozen=True)
class Job:
    """What each window yields: an array of ``shape`` from ``compute(windows, length)``.

    ``kind`` keeps its cache entries apart from other jobs'; ``fstamps`` (future stamps by
    decision time) and ``seeds`` (one per window, or None) enter the cache key.
    """

    kind: str
    shape: tuple
    compute: Callable  # (list of windows, context length, their seeds) -> list of arrays
    fstamps: dict
    seeds: list
    rows: int  # rows each window decodes (sampled paths; 1 for an embedding)
    horizon: int  # steps each row generates (0 for an embedding)


@dataclass
class Outcome:
    results: list
    from_cache: int
    corrupt: int
    computed_here: int


def run_windows(
    loaded, settings, windows: list[Window], lookback: int, job: Job, digest
) -> Outcome:
    """Every window's array, from the cache or computed (this rank's share; gathered)."""
    s = settings
    sampled = job.kind == "paths"  # an embedding draws nothing: any seed may use the cache
    use_cache = s.cache_dir is not None and (s.seed is not None or not sampled)
    if s.cache_dir is not None and not use_cache:
        warnings.warn(
            "seed=None samples afresh each run, so the forecast cache is not used", stacklevel=4
        )
    cache = ForecastCache(s.cache_dir) if use_cache else None
    results: list = [None] * len(windows)
    keys: list = [None] * len(windows)
    if cache is not None:
        base = settings_digest(s, digest(), loaded.max_context, loaded.dtype, loaded.device)
        base = base if sampled else f"{job.kind}:{base}"
        for i, w in enumerate(windows):
            bars, stamp = w.bars(min(lookback, w.end + 1))
            fstamp = job.fstamps.get(w.time, np.zeros(0))
            keys[i] = window_key(base, bars, stamp, fstamp, job.seeds[i])
            results[i] = cache.get(keys[i], job.shape)
    from_cache = sum(r is not None for r in results)
    distributed.barrier()  # every rank has looked up before any rank writes
    todo = [i for i, r in enumerate(results) if r is None]
    mine = todo[distributed.rank() :: distributed.world_size()]

    def store(batch: list[int], arrays) -> None:  # saved as each batch finishes
        for j, arr in zip(batch, arrays):
            results[mine[j]] = arr
            if cache is not None:
                cache.put(keys[mine[j]], arr)

    compute_all(
        loaded, settings, [windows[i] for i in mine], [job.seeds[i] for i in mine], lookback,
        job, store,
    )  # fmt: skip
    if distributed.active():
        for i, arr in distributed.gather([(i, results[i]) for i in mine]):
            results[i] = arr
    return Outcome(results, from_cache, 0 if cache is None else cache.corrupt, len(mine))


def batches(loaded, settings, windows: list[Window], lookback: int, job: Job) -> list[list[int]]:
    """Window positions grouped by context length, in batches that fit in memory."""
    st = loaded
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        groups.setdefault(min(lookback, w.end + 1), []).append(i)
    out = []
    for length, members in sorted(groups.items()):
        graphs = settings.cuda_graphs and job.horizon > 0  # embeddings generate nothing
        shape = (length, job.rows, job.horizon, graphs)
        size = settings.batch_size or batch_windows(
            st.model, st.tokenizer, st.dtype, st.device, *shape
        )
        per = window_bytes(st.model, st.tokenizer, st.dtype, *shape)
        check_fits(per, len(windows), min(size, len(members)), job.rows, job.horizon, st.device)
        out += [members[k : k + size] for k in range(0, len(members), size)]
    return out


def compute_all(loaded, settings, windows, seeds, lookback: int, job: Job, store) -> None:
    """Compute every window, batch by batch; ``store(positions, arrays)`` takes each batch."""
    from tqdm.auto import tqdm

    groups = batches(loaded, settings, windows, lookback, job)
    quiet = not settings.progress or distributed.rank() != 0 or len(groups) < 2
    desc = "forecast" if job.kind == "paths" else job.kind
    bar = tqdm(total=len(windows), desc=desc, unit="win", disable=True if quiet else None)
    for members in groups:
        length = min(lookback, windows[members[0]].end + 1)
        arrays = job.compute([windows[i] for i in members], length, [seeds[i] for i in members])
        store(members, list(arrays))
        bar.update(len(members))
    bar.close()


def run_report(loaded, series, windows, counts, outcome, calendar, start, int8=False) -> dict:
    """What a forecast or embed call did (``Forecaster.report``)."""
    skipped = counts["skipped"]
    return {
        "requested": counts["requested"],
        "computed": len(windows) - outcome.from_cache,
        "computed_by_this_rank": outcome.computed_here,
        "from_cache": outcome.from_cache,
        "skipped": dict(skipped),
        "skipped_total": int(sum(skipped.values())),
        "suspended_bars_dropped": int(sum(x.dropped for x in series.values())),
        "suspended_bars_filled": int(sum(x.filled for x in series.values())),
        "ohlc_inconsistent_bars": int(sum(x.inconsistent for x in series.values())),
        "cache_corrupt_recomputed": outcome.corrupt,
        "lookback": counts["lookback"],
        "min_history": counts["min_history"],
        "max_context": loaded.max_context,
        "model": loaded.source,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "int8_weights": bool(int8),  # the predictor's Linear layers (dtype: the rest)
        "world_size": distributed.world_size(),
        "calendar": calendar,
        "seconds": round(time.perf_counter() - start, 3),
    }
