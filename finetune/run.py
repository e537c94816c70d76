"""The two fine-tuning stages, end to end: data -> tokenizer -> predictor.

Stage 1 trains the tokenizer (if ``tokenizer.train``); stage 2 trains the predictor on
the tokens of the frozen stage-1 tokenizer. Each stage resumes from its saved state when
``output_dir`` already holds one for the same configuration.

Output folder::

    config.yaml              the resolved configuration
    data_report.json         windows per split, masked bars, short series
    tokenizer/best/          Hub format (config.json + model.safetensors)
    tokenizer/log.csv        step, epoch, split, loss, parts, lr, grad_norm
    tokenizer/state/         resumable training state (training_state.safetensors)
    predictor/best/ ...      the same for the predictor
    result.json              val losses before/after, steps, timings, paths
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from kronos_alpha.files import open_run, write_json
from kronos_alpha.inference.panel import InputError
from kronos_alpha.model import Kronos
from kronos_alpha.model.tokenizer import KronosTokenizer
from kronos_alpha.model.zoo import check_compatible

from .checkpoint import recover, save_pretrained_atomic
from .config import ConfigError, FinetuneConfig, split_range
from .objectives import PredictorObjective, TokenizerObjective
from .runtime import Runtime
from .sources import csv_series, panel_series, qlib_series
from .trainer import Trainer
from .windows import split_windows


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_series(cfg: FinetuneConfig, panel=None):
    d = cfg.data
    ranges = [
        split_range(getattr(d, s), f"data.{s}") for s in ("train", "valid", "test") if getattr(d, s)
    ]
    if d.source == "panel":
        if panel is None:
            raise ConfigError(
                "data.source is 'panel': pass the panel to run_finetune(cfg, panel=...)"
            )
        series = panel_series(panel, d.time_column)
    elif d.source == "csv":
        series = csv_series(d.csv_dir, d.time_column)
    else:
        series = qlib_series(
            d.provider_uri,
            d.market,
            ranges[0][0],
            ranges[-1][1],
            d.fields,
            d.region,
            d.freq,
            d.instruments,
        )
    if d.instruments:
        have = {s.name for s in series}
        missing = [n for n in d.instruments if n not in have]
        if missing:
            raise InputError(f"data.instruments names series not in the data: {missing[:10]}")
        series = [s for s in series if s.name in set(d.instruments)]
    if d.max_instruments:
        series = series[: d.max_instruments]
    return series


def build_datasets(cfg: FinetuneConfig, panel=None):
    """{'train': WindowDataset, 'valid': ..., ['test': ...]}; an empty split is an error."""
    d = cfg.data
    ranges = {
        s: split_range(getattr(d, s), f"data.{s}")
        for s in ("train", "valid", "test")
        if getattr(d, s)
    }
    sets = split_windows(
        load_series(cfg, panel), ranges, d.lookback, d.horizon, d.clip, d.stride, d.gap
    )
    for name, ds in sets.items():
        if len(ds) == 0:
            r = ds.report
            raise InputError(
                f"data.{name} ({r['start']} .. {r['end']}) has no complete window of "
                f"{d.lookback}+{d.horizon} tradable bars ({r['series_too_short']} series too short, "
                f"{r['suspended_bars_masked']} suspended bars masked)"
            )
    return sets


def init_module(cls, stage: str, cfg: FinetuneConfig):
    s = getattr(cfg, stage)
    if s.init == "fresh":
        torch.manual_seed(cfg.seed)
        return cls(**cfg.fresh_config(stage))
    if Path(s.init).exists():
        recover(s.init)  # a best/ folder whose swap was interrupted
    return cls.from_pretrained(s.init)


def check_resumable(cfg: FinetuneConfig, out: Path) -> None:
    saved = out / "config.yaml"
    if saved.exists():
        import yaml

        old = yaml.safe_load(saved.read_text())
        new = cfg.to_dict()
        diff = _diff(old, new)
        if diff:
            raise ConfigError(
                f"{out} holds a run with another configuration (differs in {diff[:5]}); "
                "use a new output_dir or restart=True (CLI: --restart)"
            )


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in ("progress", "tensorboard"):
                continue
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_finetune(cfg: FinetuneConfig, panel=None, restart: bool = False, on_step=None) -> dict:
    """Run both stages; returns (and writes to result.json) the summary.

    ``on_step(stage, global_step)`` is called after every optimizer step (tests use it to
    interrupt a run by raising ``StopTraining``).
    """
    cfg.validate()
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _run(cfg, panel, restart, on_step)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: FinetuneConfig, panel, restart: bool, on_step) -> dict:
    out = Path(cfg.output_dir)
    rt = Runtime.create(cfg.device, cfg.amp, cfg.progress, cfg.tensorboard)
    if rt.main:
        open_run(out, "finetune", restart=restart)
        check_resumable(cfg, out)
        cfg.to_yaml(out / "config.yaml")
    seed_everything(cfg.seed)
    sets = build_datasets(cfg, panel)
    if rt.main:
        write_json(out / "data_report.json", {k: v.report for k, v in sets.items()})

    tokenizer = init_module(KronosTokenizer, "tokenizer", cfg)
    model = init_module(Kronos, "predictor", cfg)
    try:
        check_compatible(model, tokenizer)
    except ValueError as exc:
        raise ConfigError(
            f"predictor ({cfg.predictor.init}) and tokenizer ({cfg.tokenizer.init}): {exc}"
        ) from None

    result = {"output_dir": str(out), "data": {k: v.report for k, v in sets.items()}}
    seed_everything(cfg.seed)
    if cfg.tokenizer.train:
        hook = None if on_step is None else (lambda step: on_step("tokenizer", step))
        tr = Trainer("tokenizer", TokenizerObjective(tokenizer), sets["train"], sets["valid"], cfg.tokenizer,
                     out / "tokenizer", cfg.seed, rt)  # fmt: skip
        result["tokenizer"] = summary = tr.fit(on_step=hook)
        if summary["stopped"]:
            return _finish(out, result, rt)
        tokenizer = tr.load_best()
    elif rt.main:
        save_pretrained_atomic(tokenizer, out / "tokenizer" / "best")
    tokenizer = tokenizer.eval()

    seed_everything(cfg.seed + 1)
    if cfg.predictor.train:
        hook = None if on_step is None else (lambda step: on_step("predictor", step))
        tr = Trainer("predictor", PredictorObjective(model, tokenizer), sets["train"], sets["valid"],
                     cfg.predictor, out / "predictor", cfg.seed, rt)  # fmt: skip
        result["predictor"] = summary = tr.fit(on_step=hook)
        if summary["stopped"]:
            return _finish(out, result, rt)
        tr.load_best()
    elif rt.main:
        save_pretrained_atomic(model, out / "predictor" / "best")
    result["tokenizer_path"] = str(out / "tokenizer" / "best")
    result["model_path"] = str(out / "predictor" / "best")
    return _finish(out, result, rt)


def _finish(out: Path, result: dict, rt) -> dict:
    if rt.main:
        write_json(out / "result.json", result)
    return result


def print_summary(result: dict) -> None:
    print(json.dumps(result, indent=2, default=str))
