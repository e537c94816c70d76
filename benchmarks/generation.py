"""Cached generation engine vs the plain full-recompute loop (the published algorithm), on
its own and through the public API, against the machine's measured limit.

Kronos-small dimensions, random weights, float32, greedy (top_k=1), CPU. Each case runs in
its own process; engine and reference runs alternate and the best of each is kept. Prints
one JSON object; per case:

- engine_s / reference_s: ``generate`` vs ``generate_reference`` on the same tokens;
  identical_tokens compares them.
- api_s / api_reference_s: the same case through ``KronosPredictor.predict`` (one series)
  or ``predict_batch`` (case c) from raw bars, engine vs ``KronosPredictor(reference=True)``
  (full recompute, every path's window decoded); api_identical_tokens compares the tokens
  both generated, api_max_rel_diff their forecasts.
- limit_s: the floor of the engine's work through the API on this machine: every phase's
  FLOPs at the measured sgemm rate or its bytes (weights, and the keys/values a one-token
  step reads) at the measured memory bandwidth, whichever is slower (``floor.py``);
  achieved = limit_s / api_s; limit_speedup = api_reference_s / limit_s, the most any
  implementation of the engine's work could reach against this reference here.

    python benchmarks/generation.py                 # all three cases, 1 torch thread
    python benchmarks/generation.py --cases c --threads 2
    python benchmarks/generation.py --cases b --int8 [--model base]   # the int8 columns

``--int8`` adds the int8 weight mode (``inference.quantize``) to every case, alternated
with the other runs: int8_engine_s and int8_speedup (the int8 engine against the same
float32 reference loop), int8_api_s and int8_api_speedup (``KronosPredictor(int8=True)``
against the float32 reference through the API); int8_token_agreement, the share of the
generated (s1, s2) tokens identical to the float32 engine's greedy ones (a free-running
comparison: after the first flipped token the two continue from different contexts), and
int8_step_agreement, the share of positions where int8 and float32 pick the same greedy
s1 token given the same tokens (the float32 path); int8_api_close_mean_rel_diff, the mean
|relative difference| of the forecast closes; int8_limit_s / int8_achieved, the int8 mode's
floor (``floor.py``, ``int8=True``: the predictor's products at int8_gops, the fbgemm
kernel's best measured rate, weights one byte each). ``--model base``: Kronos-base dimensions.
Measured 2026-12-01, case (b), 1 thread, two runs each (load 2-5): int8 API 42.2x and 37.0x
over the reference for Kronos-small (float32 API 20.6x and 22.1x in the same runs) and 52.4x
and 32.2x for Kronos-base (float32 32.1x and 18.1x); random weights' tokens: 0.8% identical
free-running, 83% of the teacher-forced greedy s1 tokens.

Measured 2026-12-01 on this project's 2-core CPU (--repeats 3 --reference-repeats 2),
API speed-up (engine alone) / limit_speedup, identical tokens and forecasts in every case:
1 thread: (a) 10.75x (10.46x) / 15.4x, (b) 22.6x (22.2x) / 36.4x, (c) 31.0x (34.8x) / 42.5x;
2 threads: (a) 10.2x (10.0x) / 16.6x, (b) 18.0x (20.5x) / 46.2x, (c) 26.7x (32.0x) / 42.2x.
Again 2026-12-01 after the window pass (``TokenStep.window``), one ``--int8`` run, 1 thread:
API (engine) / limit / achieved: (a) 10.91x (10.37x) / 15.1x / 0.72, (b) 20.81x (22.73x) /
34.1x / 0.61, (c) 32.79x (36.23x) / 45.1x / 0.73; int8 API 16.3x / 29.9x / 44.4x, reaching
0.59 / 0.35 / 0.71 of the int8 floor.
Again after ``decode_paths`` reuses one key/value buffer, one ``--int8`` run, 1 thread: (a)
10.85x (10.71x) / 16.0x / 0.68, (b) 21.86x (22.84x) / 41.6x / 0.53, (c) 33.09x (38.29x) /
47.2x / 0.70; int8 API 16.75x / 39.85x / 45.45x.
The one-token steps are bound by memory, the reference by arithmetic, so a second thread
helps the reference more. 1 thread is the default because on this shared box its figures
repeat; with 2, one busy core stalls every operation (a 2-thread reference run of (a) took
113 s and 25 s in one session).
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
from floor import int8_rate, limit_seconds, machine_rates  # benchmarks/floor.py, beside

from kronos_alpha import Kronos, KronosPredictor, KronosTokenizer
from kronos_alpha.inference import generation
from kronos_alpha.inference.data import time_features
from kronos_alpha.inference.quantize import quantize_int8
from kronos_alpha.model.configs import KRONOS_BASE, KRONOS_SMALL, TOKENIZER_BASE, without_dropout

# name: (series, context, pred_len, sample_count)
CASES = {"a": (1, 400, 120, 1), "b": (1, 256, 120, 1), "c": (32, 90, 10, 5)}
TARGETS = {"a": 10, "b": 16, "c": 40}  # API vs reference through the API (issue 17)
INT8_TARGETS = {"b": 25}  # int8 mode through the API vs the float32 reference (issue 17)
MODELS = {"small": KRONOS_SMALL, "base": KRONOS_BASE}
MAX_CONTEXT = 512


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def token_inputs(tokenizer, n, context, pred_len, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, context, 6, generator=g).clamp(-5, 5)
    # Five-minute bars, through the package's one calendar-feature function.
    times = pd.date_range("2024-01-01 09:30", periods=context + pred_len, freq="5min")
    stamp = torch.from_numpy(time_features(times)).expand(n, -1, -1)
    with torch.no_grad():
        s1, s2 = tokenizer.encode(x, half=True)
    return s1, s2, stamp[:, :context].contiguous(), stamp[:, context:].contiguous()


def bar_inputs(n, context, pred_len, seed=0):
    """Random-walk OHLCV bars (one frame per series) and their 5-minute timestamps."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2024-01-01 09:30", periods=context + pred_len, freq="5min")
    frames = []
    for _ in range(n):
        c = 30 * np.exp(np.cumsum(rng.normal(0, 0.01, context)))
        o = c * np.exp(rng.normal(0, 0.003, context))
        frames.append(
            pd.DataFrame(
                {"open": o, "high": np.maximum(o, c) * 1.01, "low": np.minimum(o, c) * 0.99,
                 "close": c, "volume": rng.uniform(1e5, 1e6, context),
                 "amount": rng.uniform(1e6, 1e7, context)}
            )
        )  # fmt: skip
    return frames, pd.Series(times[:context]), pd.Series(times[context:])


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t, out


def recorded(store: dict, name: str, fn):
    """fn, keeping the tokens of its last call (what the API generated) in store[name]."""

    def run(*args, **kwargs):
        store[name] = out = fn(*args, **kwargs)
        return out

    return run


def step_agreement(model, qmodel, tok1, tok2, stamps, context: int) -> float:
    """Share of generated positions where both models' greedy s1 token is the same, given
    the same preceding tokens (one full pass each over the last window)."""
    end = tok1.shape[1] - 1  # inputs: every token but the last
    w = slice(max(0, end - MAX_CONTEXT), end)
    with torch.inference_mode():
        a = model.decode_s1(tok1[:, w], tok2[:, w], stamps[:, w])[0].argmax(-1)
        b = qmodel.decode_s1(tok1[:, w], tok2[:, w], stamps[:, w])[0].argmax(-1)
    gen = slice(max(0, context - 1 - w.start), None)  # the logits of generated positions
    return float((a[:, gen] == b[:, gen]).float().mean())


def int8_columns(best, out, model, qmodel, stamps, context, name, limit) -> dict:
    (e1, e2), (q1, q2) = out["engine"], out["int8"]
    g = slice(context, None)
    same = (e1[:, g] == q1[:, g]) & (e2[:, g] == q2[:, g])
    differs = (~same).any(0).nonzero()
    api = np.stack([f["close"].to_numpy() for f in out["api"]])
    api8 = np.stack([f["close"].to_numpy() for f in out["int8_api"]])
    return {
        "int8_engine_s": round(best["int8"], 4),
        "int8_speedup": round(best["reference"] / best["int8"], 2),
        "int8_vs_engine": round(best["engine"] / best["int8"], 2),
        "int8_api_s": round(best["int8_api"], 4),
        "int8_api_speedup": round(best["api_reference"] / best["int8_api"], 2),
        "int8_api_target": INT8_TARGETS.get(name),
        "int8_limit_s": round(limit["total_s"], 4),
        "int8_achieved": round(limit["total_s"] / best["int8_api"], 3),
        "int8_limit_phases_s": {k: round(v, 4) for k, v in limit["phases_s"].items()},
        "int8_token_agreement": round(float(same.float().mean()), 4),
        "int8_s1_agreement": round(float((e1[:, g] == q1[:, g]).float().mean()), 4),
        "int8_first_difference_step": int(differs[0]) if len(differs) else None,
        "int8_step_agreement": round(step_agreement(model, qmodel, e1, e2, stamps, context), 4),
        "int8_api_close_mean_rel_diff": float(np.mean(np.abs(api8 / api - 1))),
    }


def run_case(
    name: str, repeats: int, reference_repeats: int, device: str, int8=False, dims="small"
) -> dict:
    torch.manual_seed(0)
    model = Kronos(**without_dropout(MODELS[dims])).eval().to(device)
    tokenizer = KronosTokenizer(**TOKENIZER_BASE).eval()
    n, context, pred_len, samples = CASES[name]
    s1, s2, stamp, future = (t.to(device) for t in token_inputs(tokenizer, n, context, pred_len))
    tokenizer.to(device)
    args = (model, s1, s2, stamp, future, pred_len, MAX_CONTEXT, samples, 1.0, 1, 1.0)  # greedy
    frames, xt, yt = bar_inputs(n, context, pred_len)
    greedy = dict(T=1.0, top_k=1, top_p=1.0, sample_count=samples, verbose=False)
    engine_api = KronosPredictor(model, tokenizer, device=device, max_context=MAX_CONTEXT)
    reference_api = KronosPredictor(
        model, tokenizer, device=device, max_context=MAX_CONTEXT, reference=True
    )

    def through(predictor):
        if n == 1:
            return [predictor.predict(frames[0], xt, yt, pred_len, **greedy)]
        return predictor.predict_batch(frames, [xt] * n, [yt] * n, pred_len, **greedy)

    generate, generate_reference = generation.generate, generation.generate_reference
    tokens: dict = {}  # the API's generated tokens, engine and reference
    generation.generate = recorded(tokens, "engine", generation.generate)
    generation.generate_reference = recorded(tokens, "reference", generation.generate_reference)
    best = dict.fromkeys(["engine", "api", "reference", "api_reference"], float("inf"))
    best.update(int8=float("inf"), int8_api=float("inf"))
    qmodel, int8_runs = None, {}  # built after the float32 peak RSS is read
    out = {}
    timed(lambda: through(engine_api))  # warm-up (allocator, thread pool, stacked weights)
    engine_rss = None
    for r in range(max(repeats, reference_repeats)):
        if r < repeats:
            for key, fn in (("engine", lambda: generate(*args)),
                            ("api", lambda: through(engine_api))):  # fmt: skip
                t, out[key] = timed(fn)
                best[key] = min(best[key], t)
            if engine_rss is None:  # before any reference run or rate measurement
                engine_rss, rates = peak_rss_mb(), machine_rates()
            out["api_tokens"] = tokens["engine"]
            if int8:
                if not int8_runs:
                    qmodel = quantize_int8(model)
                    q_api = KronosPredictor(model, tokenizer, device, MAX_CONTEXT, int8=True)
                    int8_runs["int8"] = lambda q=qmodel: generate(q, *args[1:])
                    int8_runs["int8_api"] = lambda p=q_api: through(p)
                    for fn in int8_runs.values():
                        fn()  # warm-up: packed weights, the scripted kernel call
                for key, fn in int8_runs.items():
                    t, out[key] = timed(fn)
                    best[key] = min(best[key], t)
        if r < reference_repeats:
            for key, fn in (("reference", lambda: generate_reference(*args)),
                            ("api_reference", lambda: through(reference_api))):  # fmt: skip
                t, out[key] = timed(fn)
                best[key] = min(best[key], t)
            out["api_reference_tokens"] = tokens["reference"]
    rates = {k: max(v, machine_rates()[k]) for k, v in rates.items()}  # best before/after
    (e1, e2), (r1, r2) = out["engine"], out["reference"]
    (a1, a2), (b1, b2) = out["api_tokens"], out["api_reference_tokens"]
    api = np.stack([f.to_numpy() for f in out["api"]])
    api_ref = np.stack([f.to_numpy() for f in out["api_reference"]])
    limit = limit_seconds(model, tokenizer, n, context, pred_len, samples, MAX_CONTEXT, rates)
    tokens_total = n * samples * pred_len
    extra = {}
    if int8:
        stamps = torch.cat([stamp, future], 1).repeat_interleave(samples, 0)
        rates["int8_gops"] = max(int8_rate(), int8_rate())
        limit8 = limit_seconds(
            model, tokenizer, n, context, pred_len, samples, MAX_CONTEXT, rates, int8=True
        )
        extra = int8_columns(best, out, model, qmodel, stamps, context, name, limit8)
        extra["int8_gops"] = round(rates["int8_gops"], 1)
    return {
        "name": name,
        "model": f"Kronos-{dims} dimensions",
        "series": n,
        "context": context,
        "pred_len": pred_len,
        "sample_count": samples,
        "engine_s": round(best["engine"], 4),
        "reference_s": round(best["reference"], 4),
        "speedup": round(best["reference"] / best["engine"], 2),
        "identical_tokens": bool(torch.equal(e1, r1) and torch.equal(e2, r2)),
        "api_s": round(best["api"], 4),
        "api_reference_s": round(best["api_reference"], 4),
        "api_speedup": round(best["api_reference"] / best["api"], 2),
        "api_target": TARGETS[name],
        "api_identical_tokens": bool(torch.equal(a1, b1) and torch.equal(a2, b2)),
        "api_max_rel_diff": float(np.max(np.abs(api - api_ref) / np.abs(api_ref))),
        "limit_s": round(limit["total_s"], 4),
        "achieved": round(limit["total_s"] / best["api"], 3),
        "limit_speedup": round(best["api_reference"] / limit["total_s"], 1),
        "engine_limit_s": round(limit["generation_s"], 4),
        "engine_achieved": round(limit["generation_s"] / best["engine"], 3),
        "limit_phases_s": {k: round(v, 4) for k, v in limit["phases_s"].items()},
        "tokens_per_s": round(tokens_total / best["engine"], 1),
        "reference_tokens_per_s": round(tokens_total / best["reference"], 1),
        "peak_rss_mb": round(engine_rss, 1),
        "reference_peak_rss_mb": round(peak_rss_mb(), 1),
        "sgemm_gflops": round(rates["gflops"], 1),
        "bandwidth_gbs": round(rates["bandwidth"] / 1e9, 1),
        "threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="abc", help="which of a, b, c to run")
    parser.add_argument("--repeats", type=int, default=3, help="engine runs (best is kept)")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="reference runs, alternated with them"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core box a second OpenMP thread stalls "
        "every operation whenever another process holds a core)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (the targets' device) or cuda")
    parser.add_argument("--int8", action="store_true", help="add the int8 weight mode columns")
    parser.add_argument("--model", default="small", choices=sorted(MODELS), help="dimensions")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:  # one case per process, so each peak RSS is its own
        result = run_case(
            args.cases, args.repeats, args.reference_repeats, args.device, args.int8, args.model
        )
        print(json.dumps(result))
        return
    cases = []
    for name in args.cases:
        cmd = [sys.executable, __file__, "--child", "--cases", name, "--repeats", str(args.repeats)]
        cmd += ["--reference-repeats", str(args.reference_repeats), "--device", args.device]
        cmd += ["--threads", str(args.threads), "--model", args.model]
        cmd += ["--int8"] if args.int8 else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        cases.append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        "cases": cases,
        "api_targets": TARGETS,
        "api_targets_met": all(
            c["api_speedup"] >= TARGETS[c["name"]] and c["api_identical_tokens"] for c in cases
        ),
        "model": f"Kronos-{args.model} dimensions, random weights, float32, greedy",
        "max_context": MAX_CONTEXT,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
    if args.int8:
        summary["int8_api_targets"] = INT8_TARGETS
        summary["int8_api_targets_met"] = all(
            c["int8_api_speedup"] >= INT8_TARGETS[c["name"]]
            for c in cases
            if c["name"] in INT8_TARGETS
        )
        summary["int8_kernel"] = "fbgemm dynamic int8 (quantized::linear_dynamic, 7-bit inputs)"
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
