"""Fine-tuning throughput on the CPU at Kronos-small dimensions; prints one JSON object.

Predictor: d_model 512, 8 layers, 8 heads, ff_dim 1024, s1/s2 bits 10 (Kronos-small), on the
tokens of a frozen tokenizer with Kronos-Tokenizer-base dimensions. Tokenizer stage: the
tokenizer-base module itself. Batch 16, window 100 (lookback 90 + horizon 10), one full
optimizer step (forward, backward, clipping, AdamW, OneCycle) per batch through the
finetune Trainer. Random weights: speed does not depend on them.

    python benchmarks/finetune.py [--steps 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import pandas as pd
import torch
from kronos_alpha.finetune import (
    PredictorObjective,
    Runtime,
    StageConfig,
    TokenizerObjective,
    Trainer,
)
from kronos_alpha.finetune.config import split_range
from kronos_alpha.finetune.sources import panel_series
from kronos_alpha.finetune.windows import split_windows

from kronos_alpha import Kronos, KronosTokenizer

SMALL = dict(
    s1_bits=10, s2_bits=10, n_layers=8, d_model=512, n_heads=8, ff_dim=1024,
    ffn_dropout_p=0.25, attn_dropout_p=0.1, resid_dropout_p=0.25, token_dropout_p=0.1, learn_te=True,
)  # fmt: skip
TOKENIZER_BASE = dict(
    d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4,
    ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0,
    s1_bits=10, s2_bits=10, beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4,
)  # fmt: skip


def synthetic_panel(n=600, seed=0):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = c * (1 + rng.normal(0, 0.002, n))
    df = pd.DataFrame(
        {"open": o, "high": np.maximum(o, c) * 1.003, "low": np.minimum(o, c) * 0.997, "close": c,
         "volume": rng.uniform(1e5, 2e5, n)},
        index=pd.bdate_range("2015-01-01", periods=n),
    )  # fmt: skip
    return {"X": df}


def time_stage(trainer: Trainer, steps: int, batch: int) -> tuple[float, float]:
    """(samples per wall second, samples per process-CPU second / threads).

    The second figure is what the machine would give without other jobs on it."""
    order = np.arange(len(trainer.train_set))
    trainer.objective.train()
    trainer._step(order[:batch])  # warm-up (allocations, first-call paths)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        trainer._step(order[(i + 1) * batch : (i + 2) * batch])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return round(steps * batch / wall, 2), round(steps * batch * torch.get_num_threads() / cpu, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    series = panel_series(synthetic_panel())
    rng = {
        "train": split_range(["2015-01-01", "2016-12-31"], "train"),
        "valid": split_range(["2017-01-01", "2018-12-31"], "valid"),
    }
    sets = split_windows(series, rng, 90, 10, 5.0)
    rt = Runtime.create(args.device, "auto", progress=False)
    tok = KronosTokenizer(**TOKENIZER_BASE)
    model = Kronos(**SMALL)
    result = {
        "benchmark": "finetune_train_step",
        "device": str(rt.device),
        "amp": str(rt.amp_dtype),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "batch": args.batch,
        "window": 100,
        "timed_steps": args.steps,
        "predictor_params": sum(p.numel() for p in model.parameters()),
        "tokenizer_params": sum(p.numel() for p in tok.parameters()),
    }
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        cfg = StageConfig(
            batch_size=args.batch, epochs=1, lr=2e-4, betas=[0.9, 0.999], clip_grad=2.0
        )
        tok_tr = Trainer(
            "tokenizer", TokenizerObjective(tok), sets["train"], sets["valid"], cfg, out, 0, rt
        )
        result["tokenizer_samples_per_s"], result["tokenizer_samples_per_cpu_s"] = time_stage(
            tok_tr, args.steps, args.batch
        )
        cfg = StageConfig(batch_size=args.batch, epochs=1, lr=4e-5)
        pred = Trainer(
            "predictor",
            PredictorObjective(model, tok),
            sets["train"],
            sets["valid"],
            cfg,
            out,
            0,
            rt,
        )  # freezes tok
        result["predictor_samples_per_s"], result["predictor_samples_per_cpu_s"] = time_stage(
            pred, args.steps, args.batch
        )
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if rt.device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
