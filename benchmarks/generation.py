"""Cached generation engine vs the plain full-recompute loop (the published algorithm).

Kronos-small dimensions, random weights, float32, CPU. Prints one JSON object:
{"cases": [{"name", "engine_s", "reference_s", "speedup", "max_rel_diff", "tokens_per_s",
"reference_tokens_per_s", "identical_tokens", "peak_rss_mb"}, ...], ...}

    python benchmarks/generation.py            # all three cases
    python benchmarks/generation.py --cases c  # one case
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch

from kronos_alpha import Kronos, KronosTokenizer
from kronos_alpha.inference.data import time_features
from kronos_alpha.inference.generation import generate, generate_reference
from kronos_alpha.model.configs import KRONOS_SMALL, TOKENIZER_BASE, without_dropout

# name: (series, context, pred_len, sample_count)
CASES = {"a": (1, 400, 120, 1), "b": (1, 256, 120, 1), "c": (32, 90, 10, 5)}
MAX_CONTEXT = 512


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inputs(tokenizer, n, context, pred_len, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, context, 6, generator=g).clamp(-5, 5)
    # Five-minute bars, through the package's one calendar-feature function.
    times = pd.date_range("2024-01-01 09:30", periods=context + pred_len, freq="5min")
    stamp = torch.from_numpy(time_features(times))
    stamp = stamp.expand(n, -1, -1)
    s1, s2 = tokenizer.encode(x, half=True)
    return s1, s2, stamp[:, :context].contiguous(), stamp[:, context:].contiguous()


def timed(fn, repeats):
    best = float("inf")
    out = None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best, out


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_case(name: str, repeats: int, device: str = "cpu") -> dict:
    """One case in this process: the engine first (its peak RSS), then the reference."""
    torch.manual_seed(0)
    model = Kronos(**without_dropout(KRONOS_SMALL)).eval().to(device)
    tokenizer = KronosTokenizer(**TOKENIZER_BASE).eval().to(device)
    n, context, pred_len, samples = CASES[name]
    s1, s2, stamp, future = (t.to(device) for t in inputs(tokenizer.cpu(), n, context, pred_len))
    tokenizer.to(device)
    args = (model, s1, s2, stamp, future, pred_len, MAX_CONTEXT, samples, 1.0, 1, 1.0)  # greedy
    generate(*args)  # warm-up (allocator, thread pool)
    engine_s, (e1, e2) = timed(lambda: generate(*args), repeats)
    engine_rss = peak_rss_mb()
    reference_s, (r1, r2) = timed(lambda: generate_reference(*args), 1)
    # Decode both token streams and compare the forecasts they give.
    w = slice(max(0, e1.shape[1] - MAX_CONTEXT), e1.shape[1])
    with torch.no_grad():
        ze = tokenizer.decode((e1[:, w], e2[:, w]))[:, -pred_len:]
        zr = tokenizer.decode((r1[:, w], r2[:, w]))[:, -pred_len:]
    rel = ((ze - zr).abs() / zr.abs().clamp_min(1e-6)).max().item()
    tokens = n * samples * pred_len
    return {
        "name": name,
        "series": n,
        "context": context,
        "pred_len": pred_len,
        "sample_count": samples,
        "engine_s": round(engine_s, 4),
        "reference_s": round(reference_s, 4),
        "speedup": round(reference_s / engine_s, 2),
        "tokens_per_s": round(tokens / engine_s, 1),
        "reference_tokens_per_s": round(tokens / reference_s, 1),
        "identical_tokens": bool(torch.equal(e1, r1) and torch.equal(e2, r2)),
        "max_rel_diff": rel,
        "peak_rss_mb": round(engine_rss, 1),
        "reference_peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="abc", help="which of a, b, c to run")
    parser.add_argument(
        "--repeats", type=int, default=3, help="engine timing repeats (best is kept)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (the targets' device) or cuda")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:  # one case per process, so each peak RSS is its own
        print(json.dumps(run_case(args.cases, args.repeats, args.device)))
        return
    cases = []
    for name in args.cases:
        cmd = [sys.executable, __file__, "--child", "--cases", name, "--repeats", str(args.repeats)]
        cmd += ["--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        cases.append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        "cases": cases,
        "targets": {"a": 6, "b": 10, "c": 25},
        "targets_met": all(
            c["speedup"] >= {"a": 6, "b": 10, "c": 25}[c["name"]] and c["identical_tokens"]
            for c in cases
        ),
        "model": "Kronos-small dimensions, random weights, float32, greedy",
        "max_context": MAX_CONTEXT,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "threads": args.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
