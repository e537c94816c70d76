"""The CUDA-graph generation step (``inference.graphs.generate_graphed``) against the plain
cached engine (``generation.generate``) and the full-recompute reference
(``generation.generate_reference``), on a GPU.

Kronos-small dimensions, random weights, random tokens with 5-minute calendar stamps,
greedy (top_k=1), max_context 512. Prints one JSON object:

- single: one series, context 256, 120 steps, float32. graphed_s, engine_s (best of
  --repeats after a warm-up call) and reference_s (best of --reference-repeats);
  speedup = reference_s / graphed_s, speedup_vs_engine = engine_s / graphed_s;
  identical_tokens: graphed == reference, engine_identical_tokens: engine == reference.
- cross_section: 300 series x 20 steps, context 90, sample_count 1 and 5, in float32 and
  bf16 (the model cast). windows_per_s (series forecast per second) of graphed, engine and
  reference (the reference run once: it may be slow). float32: identical_tokens (graphed
  == reference) and engine_identical_tokens. bf16 makes no identity claim:
  token_agreement_with_float32 is the share of generated (s1, s2) pairs equal to the
  float32 graphed run's (free-running: after one flipped token the paths continue from
  different contexts), and graphed_engine_agreement the same share against bf16 ``generate``.

Graphed times include building the static buffers and capturing the graphs, which
``generate_graphed`` does on every call.

Without a CUDA device every figure is null, "reason" says so, and it exits 0: no estimate.

    python benchmarks/cuda_graphs.py
    python benchmarks/cuda_graphs.py --repeats 5 --reference-repeats 2
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import pandas as pd
import torch

from kronos_alpha import Kronos
from kronos_alpha.inference import generation
from kronos_alpha.inference.data import time_features
from kronos_alpha.inference.graphs import generate_graphed
from kronos_alpha.model.configs import KRONOS_SMALL, without_dropout

MAX_CONTEXT = 512
SINGLE = dict(series=1, context=256, pred_len=120, sample_count=1)
CROSS = dict(series=300, context=90, pred_len=20)
CROSS_SAMPLES = (1, 5)
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def inputs(model, series, context, pred_len, device, seed=0):
    """Random (s1, s2) context tokens and the stamps of 5-minute bars."""
    g = torch.Generator().manual_seed(seed)
    s1 = torch.randint(0, 2**model.s1_bits, (series, context), generator=g)
    s2 = torch.randint(0, 2**model.s2_bits, (series, context), generator=g)
    times = pd.date_range("2024-01-01 09:30", periods=context + pred_len, freq="5min")
    stamp = torch.from_numpy(time_features(times)).expand(series, -1, -1).contiguous()
    tensors = (s1, s2, stamp[:, :context].contiguous(), stamp[:, context:].contiguous())
    return tuple(t.to(device) for t in tensors)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_time(fn, repeats: int, device, warm_up: bool = True):
    """(best seconds of ``repeats`` calls, the last call's result); a warm-up call first."""
    if warm_up:
        fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def same(a, b) -> bool:
    return bool(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]))


def agreement(a, b, context: int) -> float:
    """Share of generated positions where both (s1, s2) tokens are equal."""
    g = slice(context, None)
    return round(float(((a[0][:, g] == b[0][:, g]) & (a[1][:, g] == b[1][:, g])).float().mean()), 4)


def single_case(model, device, repeats: int, reference_repeats: int, case=SINGLE) -> dict:
    s1, s2, stamp, future = inputs(model, case["series"], case["context"], case["pred_len"], device)
    args = (model, s1, s2, stamp, future, case["pred_len"], MAX_CONTEXT, case["sample_count"])
    greedy = dict(temperature=1.0, top_k=1, top_p=1.0)
    graphed_s, graphed = best_time(lambda: generate_graphed(*args, **greedy), repeats, device)
    engine_s, engine = best_time(lambda: generation.generate(*args, **greedy), repeats, device)
    reference_s, reference = best_time(
        lambda: generation.generate_reference(*args, **greedy), reference_repeats, device, False
    )
    return {
        **case,
        "dtype": "float32",
        "graphed_s": round(graphed_s, 4),
        "engine_s": round(engine_s, 4),
        "reference_s": round(reference_s, 4),
        "speedup": round(reference_s / graphed_s, 2),
        "speedup_vs_engine": round(engine_s / graphed_s, 2),
        "engine_speedup": round(reference_s / engine_s, 2),
        "identical_tokens": same(graphed, reference),
        "engine_identical_tokens": same(engine, reference),
    }


def cross_section(model32, device, repeats: int, case=CROSS, samples=CROSS_SAMPLES) -> list:
    rows = []
    s1, s2, stamp, future = inputs(
        model32, case["series"], case["context"], case["pred_len"], device
    )
    float32_tokens = {}
    for name, dtype in DTYPES.items():
        model = model32 if dtype == torch.float32 else copy.deepcopy(model32).to(dtype)
        for count in samples:
            args = (model, s1, s2, stamp, future, case["pred_len"], MAX_CONTEXT, count, 1.0, 1)
            graphed_s, graphed = best_time(lambda a=args: generate_graphed(*a), repeats, device)
            engine_s, engine = best_time(lambda a=args: generation.generate(*a), repeats, device)
            reference_s, reference = best_time(
                lambda a=args: generation.generate_reference(*a), 1, device, warm_up=False
            )
            row = {
                **case,
                "sample_count": count,
                "dtype": name,
                "graphed_s": round(graphed_s, 4),
                "engine_s": round(engine_s, 4),
                "reference_s": round(reference_s, 4),
                "graphed_windows_per_s": round(case["series"] / graphed_s, 1),
                "engine_windows_per_s": round(case["series"] / engine_s, 1),
                "reference_windows_per_s": round(case["series"] / reference_s, 1),
                "speedup": round(reference_s / graphed_s, 2),
                "speedup_vs_engine": round(engine_s / graphed_s, 2),
            }
            if dtype == torch.float32:
                float32_tokens[count] = graphed
                row["identical_tokens"] = same(graphed, reference)
                row["engine_identical_tokens"] = same(engine, reference)
            else:
                ctx = case["context"]
                row["token_agreement_with_float32"] = agreement(graphed, float32_tokens[count], ctx)
                row["graphed_engine_agreement"] = agreement(graphed, engine, ctx)
            rows.append(row)
        del model
    return rows


def null_report(reason: str) -> dict:
    """The report's shape with every figure null."""
    figures = ("graphed_s", "engine_s", "reference_s", "speedup", "speedup_vs_engine")
    single = {**SINGLE, "dtype": "float32", **dict.fromkeys(figures)}
    single.update(engine_speedup=None, identical_tokens=None, engine_identical_tokens=None)
    rates = ("graphed_windows_per_s", "engine_windows_per_s", "reference_windows_per_s")
    cross = []
    for name in DTYPES:
        for count in CROSS_SAMPLES:
            row = {**CROSS, "sample_count": count, "dtype": name, **dict.fromkeys(figures + rates)}
            if name == "float32":
                row.update(identical_tokens=None, engine_identical_tokens=None)
            else:
                row.update(token_agreement_with_float32=None, graphed_engine_agreement=None)
            cross.append(row)
    return {"single": single, "cross_section": cross, "reason": reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="graphed / engine runs (best kept)")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="reference runs of the single case"
    )
    args = parser.parse_args()
    meta = {
        "model": "Kronos-small dimensions, random weights, greedy",
        "max_context": MAX_CONTEXT,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    if not torch.cuda.is_available():
        print(json.dumps({**null_report("no CUDA device here"), **meta, "device": None}, indent=2))
        return
    torch.manual_seed(0)
    model = Kronos(**without_dropout(KRONOS_SMALL)).eval().to("cuda")
    report = {
        "single": single_case(model, "cuda", args.repeats, args.reference_repeats),
        "cross_section": cross_section(model, "cuda", args.repeats),
        "reason": None,
    }
    device = {"device": torch.cuda.get_device_name(0), "repeats": args.repeats}
    print(json.dumps({**report, **meta, **device}, indent=2))


if __name__ == "__main__":
    main()
