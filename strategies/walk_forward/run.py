"""The run: every window computed (or read back), then the report.

Resuming: each finished window is a folder ``windows/wNNN_YYYYMMDD/`` of plain files, no
pickle: ``signals.parquet``, ``hist_vol.parquet``, ``samples_<model>.parquet`` (one column per
sampled path), ``lgb_model.txt`` (LightGBM's own model text, when the window fitted one) and,
written last, ``result.json`` (the window's segments and dates, fit summaries, forecaster
reports, seconds). A window is finished when its ``result.json`` exists. Every window, computed
now or earlier, is read back from its folder before it enters the report, so a resumed run
reports exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.files import open_run, remove_stale_parts, write_json, write_parquet, write_text

from .baselines import alpha158_frames, fit_lgb, hist_vol, load_booster, price_signals
from .config import (
    WalkForwardConfigError,
    enabled_models,
    forecast_settings,
    load_config,
    model_paths,
)
from .data import Data
from .kronos import Forecasters, finetune_window, kronos_forecast
from .windows import rolling_windows

RESULT = "result.json"


def _check_resumable(cfg: dict, out: Path) -> None:
    saved = out / "config.json"
    key = {k: v for k, v in cfg.items() if k not in ("output_dir", "progress")}
    text = json.dumps(key, sort_keys=True, default=str, indent=1)
    if saved.exists() and saved.read_text() != text:
        raise WalkForwardConfigError(
            f"{out} holds a walk-forward run with another configuration; use a new output_dir "
            "or restart (CLI: --restart)"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text(saved, text)


class _Fits:
    """The latest LightGBM fit and fine-tune, each refitted every ``every`` windows."""

    def __init__(self):
        self.lgb = None  # (booster model text, info)
        self.ft = None  # info
        self._booster = (None, None)  # (model text, the booster loaded from it)

    def booster(self):
        text = self.lgb[0]
        if self._booster[0] != text:
            self._booster = (text, load_booster(text))
        return self._booster[1]


def run_window(cfg, data, win, frames, fits: _Fits, forecasters, out: Path) -> dict:
    t0 = time.perf_counter()
    index = data.eligible(win["dates"])
    result = {"window": win, "fits": {}, "reports": {}, "samples": {}}
    models = enabled_models(cfg)
    columns = {}
    if cfg["kronos"]["enabled"]:
        fc = forecasters.get("base", *model_paths(cfg))
        pred, samp, rep = kronos_forecast(cfg, data, fc, win, index)
        index = index.intersection(pred.index, sort=False).sort_values()  # the common universe
        columns["kronos_zero_shot"] = pred
        result["samples"]["kronos_zero_shot"] = samp.reindex(index)
        result["reports"]["kronos_zero_shot"] = rep
    signals = price_signals(data, cfg, index)
    if "lgb_alpha158" in models:
        if win["index"] % cfg["lightgbm"]["every"] == 0 or fits.lgb is None:
            fits.lgb = fit_lgb(cfg, data, frames, win)
            result["lgb_model"] = fits.lgb[0]
        info = fits.lgb[1]
        X = frames["feature"].reindex(index).to_numpy()
        best = info["best_iteration"] or None
        signals["lgb_alpha158"] = fits.booster().predict(X, num_iteration=best)
        result["fits"]["lgb_alpha158"] = info
    if "kronos_finetuned" in models:
        if win["index"] % cfg["finetune"]["every"] == 0 or fits.ft is None:
            fits.ft = finetune_window(cfg, data, win, out)
        info = fits.ft
        fc = forecasters.get("finetuned", info["model_path"], info["tokenizer_path"])
        pred, samp, rep = kronos_forecast(cfg, data, fc, win, index)
        columns["kronos_finetuned"] = pred
        result["samples"]["kronos_finetuned"] = samp.reindex(index)
        result["reports"]["kronos_finetuned"] = rep
        result["fits"]["kronos_finetuned"] = info
    for name, s in columns.items():
        signals[name] = s.reindex(index).to_numpy()
    result["signals"] = signals[[m for m in models if m in signals]]
    result["hist_vol"] = pd.Series(
        hist_vol(data, cfg["baselines"]["hist_vol_window"], index), index=index
    )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def run_walk_forward(config, restart: bool = False, report: bool = True) -> dict:
    """Run (or resume) every window, then write the report; returns a summary dict."""
    import torch
    from tqdm.auto import tqdm

    cfg = load_config(config)
    out = open_run(cfg["output_dir"], "walk-forward", restart=restart)
    _check_resumable(cfg, out)
    remove_stale_parts(out)  # what a killed writer of an earlier run left
    threads = torch.get_num_threads()
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    try:
        t0 = time.perf_counter()
        data = Data(cfg)
        windows = rolling_windows(cfg, data.calendar)
        if not windows:
            raise WalkForwardConfigError("the out-of-sample span holds no decision date")
        frames = alpha158_frames(cfg, data, windows, out) if cfg["lightgbm"]["enabled"] else None
        forecasters = None
        if cfg["kronos"]["enabled"]:
            forecasters = Forecasters(forecast_settings(cfg, out / "forecast_cache"))
        fits, results, computed = _Fits(), [], 0
        bar = tqdm(windows, desc="walk-forward", unit="window", disable=not cfg["progress"])
        for win in bar:
            folder = window_folder(out, win)
            if (folder / RESULT).exists():
                res = read_window(folder)
                _restore_fits(res, fits)
            else:
                save_window(run_window(cfg, data, win, frames, fits, forecasters, out), folder)
                res = read_window(folder)  # the report reads every window as a resume would
                computed += 1
            results.append(res)
        summary = {
            "output_dir": str(out),
            "windows": len(windows),
            "windows_computed": computed,
            "windows_resumed": len(windows) - computed,
            "seconds_windows": round(time.perf_counter() - t0, 1),
        }
        if report:
            from .report import write_walk_forward_report

            summary.update(write_walk_forward_report(results, data, cfg, out))
        return summary
    finally:
        torch.set_num_threads(threads)


def _restore_fits(res: dict, fits: _Fits) -> None:
    """A resumed window hands its fits on to the windows after it."""
    if "lgb_model" in res:
        fits.lgb = (res["lgb_model"], res["fits"]["lgb_alpha158"])
    if "kronos_finetuned" in res["fits"]:
        fits.ft = res["fits"]["kronos_finetuned"]


# -- a window's files ----------------------------------------------------------------------
def window_folder(out: Path, win: dict) -> Path:
    return Path(out) / "windows" / f"w{win['index']:03d}_{win['test'][0]:%Y%m%d}"


def save_window(res: dict, folder: Path) -> None:
    """A window's result as parquet frames, model text and JSON (``result.json`` last)."""
    folder = Path(folder)
    write_parquet(folder / "signals.parquet", res["signals"])
    write_parquet(folder / "hist_vol.parquet", res["hist_vol"].to_frame("hist_vol"))
    for name, samp in res["samples"].items():
        samp = samp.set_axis([str(c) for c in samp.columns], axis=1)  # parquet: string names
        write_parquet(folder / f"samples_{name}.parquet", samp)
    if "lgb_model" in res:
        write_text(folder / "lgb_model.txt", res["lgb_model"])
    win = res["window"]
    meta = {
        "window": {
            "index": int(win["index"]),
            **{k: [str(t) for t in win[k]] for k in ("train", "valid", "test", "dates")},
        },
        "fits": res["fits"],
        "reports": res["reports"],
        "samples": list(res["samples"]),
        "lgb_model": "lgb_model" in res,
        "seconds": res["seconds"],
    }
    write_json(folder / RESULT, _plain(meta))


def read_window(folder: Path) -> dict:
    """What ``save_window`` wrote, as ``run_window`` returned it."""
    folder = Path(folder)
    meta = json.loads((folder / RESULT).read_text())
    w = meta["window"]
    win = {"index": w["index"]}
    for k in ("train", "valid", "test"):
        win[k] = tuple(pd.Timestamp(t) for t in w[k])
    win["dates"] = [pd.Timestamp(t) for t in w["dates"]]
    samples = {}
    for name in meta["samples"]:
        samp = pd.read_parquet(folder / f"samples_{name}.parquet")
        if list(samp.columns) != [str(i) for i in range(samp.shape[1])]:
            raise ValueError(f"{folder}: samples_{name}.parquet columns are not 0..S-1")
        samples[name] = samp.set_axis(pd.RangeIndex(samp.shape[1]), axis=1)
    res = {
        "window": win,
        "fits": meta["fits"],
        "reports": meta["reports"],
        "samples": samples,
        "signals": pd.read_parquet(folder / "signals.parquet"),
        "hist_vol": pd.read_parquet(folder / "hist_vol.parquet")["hist_vol"].rename(None),
        "seconds": meta["seconds"],
    }
    if meta["lgb_model"]:
        res["lgb_model"] = (folder / "lgb_model.txt").read_text(encoding="utf-8")
    return res


def _plain(obj):
    """JSON-ready: numpy scalars as Python numbers, tuples as lists, timestamps as text."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, pd.Timestamp):
        return str(obj)
    return obj
