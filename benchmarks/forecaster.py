"""Forecaster throughput on the CPU: windows/s with a cold and a warm forecast cache, peak RSS.

Default size (issue 3): 300 instruments x 20 decision dates, lookback 90, horizon 10,
sample_count 5, with random weights (throughput does not depend on the weights' values)
on Kronos-small and Kronos-base dimensions, each in its own process (so each peak RSS is
its own), and Kronos-Tokenizer-base dimensions. Prints one JSON object (``runs``: one
entry per model). Threads: 1 by default - on a shared 2-core box a second OpenMP thread
stalls every operation whenever another process holds a core; ``--threads`` to choose.

    python benchmarks/forecaster.py                 # the full size, both models (long)
    python benchmarks/forecaster.py --instruments 30 --dates 2 --models small   # a quick look

Measured 2026-12-01, this project's 2-core CPU, 100 x 4 (400 windows), float32, cold /
warm windows/s and peak RSS: 1 thread: Kronos-small 8.65 / 906 (1.32 GB), Kronos-base
(102.3M parameters, 48 windows per batch) 2.49 / 885 (2.11 GB); 2 threads: small 15.96 /
830 (1.39 GB), base 4.57 / 883 (2.13 GB).

Measured 2026-11-26 (Kronos-small dims, random weights, float32):
- this project's 2-core CPU, quiet, 2 threads, full 300 x 20: 19.2 windows/s cold (312 s),
  5,048 windows/s warm (1.2 s), 1.50 GB peak RSS, 78 windows per batch. An earlier session
  measured 14.3 windows/s (420 s, 1.29 GB); an A/B at 78 x 6 on one machine state gave the
  same throughput for the older and the current per-token step (about 17 windows/s each),
  so that gap is the machine, not the step: with 390 rows per step the batched work is
  not bound by the per-operation overhead the current step removed.
- H200 (torch 2.11+cu130), full 300 x 20: 1,591 windows/s cold, 5,466/s warm (1.45 GB RSS);
  a bf16 model with a float32 tokenizer ran slower (about 1,075 windows/s cold).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from kronos_alpha import Forecaster, Kronos, KronosTokenizer
from kronos_alpha.inference.device import batch_windows, torch_dtype
from kronos_alpha.model.configs import KRONOS_BASE, KRONOS_SMALL, TOKENIZER_BASE, without_dropout

MODELS = {"small": KRONOS_SMALL, "base": KRONOS_BASE}


def random_panel(n_instruments: int, n_bars: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2015-01-05", periods=n_bars)
    c = 30 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_instruments)), axis=0))
    o = c * np.exp(rng.normal(0, 0.005, c.shape))
    frame = {
        "open": o,
        "high": np.maximum(o, c) * 1.01,
        "low": np.minimum(o, c) * 0.99,
        "close": c,
        "volume": rng.uniform(1e5, 1e6, c.shape),
    }
    names = [f"S{i:04d}" for i in range(n_instruments)]
    index = pd.MultiIndex.from_product([idx, names], names=["datetime", "instrument"])
    return pd.DataFrame({k: v.reshape(-1) for k, v in frame.items()}, index=index)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instruments", type=int, default=300)
    p.add_argument("--dates", type=int, default=20)
    p.add_argument("--lookback", type=int, default=90)
    p.add_argument("--horizon", type=int, default=10)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: auto)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (see above)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.add_argument(
        "--models", default="small,base", help="comma-separated: small, base (Kronos dims)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.models.split(",")
    if any(n not in MODELS for n in names):
        p.error(f"--models: choose from {', '.join(MODELS)}")
    if len(names) > 1:  # one process per model: its own peak RSS
        argv = sys.argv[1:] if argv is None else list(argv)
        runs = []
        for name in names:
            cmd = [sys.executable, __file__, *argv, "--models", name]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps({"benchmark": "forecaster", "runs": runs}, indent=2))
        return 0
    torch.manual_seed(0)
    model = Kronos(**without_dropout(MODELS[names[0]])).eval()
    tokenizer = KronosTokenizer(**TOKENIZER_BASE).eval()
    panel = random_panel(args.instruments, args.lookback + args.dates)
    dates = panel.index.get_level_values(0).unique()[-args.dates :]
    with tempfile.TemporaryDirectory() as cache_dir:
        fc = Forecaster(
            model, tokenizer, lookback=args.lookback, horizon=args.horizon, sample_count=args.samples,
            device=args.device, dtype=args.dtype, batch_size=args.batch_size, cache_dir=cache_dir,
            progress=sys.stderr.isatty(),
        )  # fmt: skip
        fc.load()
        t0 = time.perf_counter()
        cold = fc.forecast(panel, dates=dates)
        cold_s = time.perf_counter() - t0
        cold_report = dict(fc.report)
        t0 = time.perf_counter()
        warm = fc.forecast(panel, dates=dates)
        warm_s = time.perf_counter() - t0
        assert fc.report["from_cache"] == len(cold) and warm.equals(cold)
        cache_bytes = sum(
            os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache_dir) for f in fs
        )
    n = len(cold)
    length = min(args.lookback, fc.max_context_)  # what the forecaster's batches are sized for
    dtype = torch_dtype(fc.dtype, fc.device_)
    batch = args.batch_size or batch_windows(
        fc.model_, fc.tokenizer_, dtype, fc.device_, length, args.samples, args.horizon
    )
    print(
        json.dumps(
            {
                "benchmark": "forecaster",
                "instruments": args.instruments,
                "dates": args.dates,
                "windows": n,
                "lookback": args.lookback,
                "horizon": args.horizon,
                "sample_count": args.samples,
                "model": f"Kronos-{names[0]} dims, random weights",
                "parameters": sum(p.numel() for p in model.parameters()),
                "device": fc.device_,
                "dtype": cold_report["dtype"],
                "torch_threads": torch.get_num_threads(),
                "batch_windows": batch,
                "cold_seconds": round(cold_s, 2),
                "cold_windows_per_s": round(n / cold_s, 2),
                "warm_seconds": round(warm_s, 3),
                "warm_windows_per_s": round(n / warm_s, 1),
                "cache_mb": round(cache_bytes / 2**20, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
