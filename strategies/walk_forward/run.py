"""The run: every window computed (or read back), then the report.

Resuming: each finished window is a folder ``windows/wNNN_YYYYMMDD/`` of plain files, no
pickle: ``signals.parquet``, ``hist_vol.parquet``, ``prob_up.parquet`` (each Kronos model's
P(R > 0)), ``samples_<model>.parquet`` (one column per sampled path; for a calibrated model its
99 calibrated quantiles), ``lgb_model.txt`` / ``lgbk_model.txt`` / ``lgbs_model.txt`` (LightGBM's own
model text of lgb_alpha158 / lgb_alpha158_kronos / lgb_alpha158_sparse, when the window
fitted one) and, written last,
``result.json`` (the window's segments and dates, fit summaries with each calibrator as its
JSON and the embedding PCA as plain numbers, forecaster reports, seconds). A window is finished when its ``result.json`` exists. Every window, computed
now or earlier, is read back from its folder before it enters the report, so a resumed run
reports exactly what an uninterrupted one does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from kronos_alpha.files import (
    open_run,
    plain_json,
    remove_stale_parts,
    write_json,
    write_parquet,
    write_text,
)

from .baselines import alpha158_frames, fit_lgb, hist_vol, load_booster, price_signals
from .calibration import calibrate_window
from .config import (
    CALIBRATED,
    WalkForwardConfigError,
    enabled_models,
    forecast_settings,
    load_config,
    model_paths,
)
from .data import Data
from .kronos import Forecasters, finetune_window, kronos_forecast
from .stacked import KronosRows, fit_lgb_kronos, fit_lgb_sparse, predict_lgb_kronos
from .windows import rolling_windows

RESULT = "result.json"
# LightGBM model texts: lgb_alpha158, lgb_alpha158_kronos, lgb_alpha158_sparse
MODEL_TEXTS = ("lgb_model", "lgbk_model", "lgbs_model")


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
    """The latest LightGBM fits and fine-tune, each refitted every ``every`` windows."""

    def __init__(self):
        self.lgb = None  # (booster model text, info)
        self.lgbk = None  # the same for lgb_alpha158_kronos
        self.lgbs = None  # and for lgb_alpha158_sparse
        self.ft = None  # info
        self._boosters: dict = {}  # model text -> the booster loaded from it (the latest two)

    def booster(self, key: str = "lgb"):
        text = getattr(self, key)[0]
        if text not in self._boosters:
            self._boosters = {t: b for t, b in self._boosters.items() if t in self._texts()}
            self._boosters[text] = load_booster(text)
        return self._boosters[text]

    def _texts(self):
        return {f[0] for f in (self.lgb, self.lgbk, self.lgbs) if f is not None}


def _kronos_models(cfg, data, win, index, fc, raw: str, after, result, columns) -> pd.MultiIndex:
    """The raw model ``raw`` (and its calibrated twin): signals, members, prob_up, reports."""
    table, samp, rep = kronos_forecast(cfg, data, fc, win, index)
    index = index.intersection(table.index, sort=False).sort_values()
    runs = {raw: (table, samp, rep)}
    twin = next((c for c, r in CALIBRATED.items() if r == raw), None)
    if twin in enabled_models(cfg):
        cal_fc, info = calibrate_window(cfg, data, fc, win, after)
        result["fits"][twin] = info
        if cal_fc is not None:
            runs[twin] = kronos_forecast(cfg, data, cal_fc, win, index)
    for name, (table, samp, rep) in runs.items():
        columns[name] = table["pred_return"]
        result["samples"][name] = samp.reindex(index)
        result["prob_up"][name] = table["prob_up"].reindex(index)
        result["reports"][name] = rep
    return index


def run_window(cfg, data, win, frames, fits: _Fits, forecasters, out: Path, rows=None) -> dict:
    t0 = time.perf_counter()
    index = data.eligible(win["dates"])
    result = {"window": win, "fits": {}, "reports": {}, "samples": {}, "prob_up": {}}
    models = enabled_models(cfg)
    columns = {}
    if cfg["kronos"]["enabled"]:
        fc = forecasters.get("base", *model_paths(cfg))
        index = _kronos_models(cfg, data, win, index, fc, "kronos_zero_shot", None, result, columns)
    signals = price_signals(data, cfg, index)
    refit = win["index"] % cfg["lightgbm"]["every"] == 0
    if "lgb_alpha158" in models:
        if refit or fits.lgb is None:
            fits.lgb = fit_lgb(cfg, data, frames, win)
            result["lgb_model"] = fits.lgb[0]
        info = fits.lgb[1]
        X = frames["feature"].reindex(index).to_numpy()
        best = info["best_iteration"] or None
        signals["lgb_alpha158"] = fits.booster().predict(X, num_iteration=best)
        result["fits"]["lgb_alpha158"] = info
    if "lgb_alpha158_sparse" in models:
        if refit or fits.lgbs is None:
            fits.lgbs = fit_lgb_sparse(cfg, data, frames, win, rows)
            result["lgbs_model"] = fits.lgbs[0]
        info = fits.lgbs[1]
        X = frames["feature"].reindex(index).to_numpy()
        best = info["best_iteration"] or None
        signals["lgb_alpha158_sparse"] = fits.booster("lgbs").predict(X, num_iteration=best)
        result["fits"]["lgb_alpha158_sparse"] = info
    if "lgb_alpha158_kronos" in models:
        if refit or fits.lgbk is None:
            fits.lgbk = fit_lgb_kronos(cfg, data, frames, win, rows)
            result["lgbk_model"] = fits.lgbk[0]
        info = fits.lgbk[1]
        signals["lgb_alpha158_kronos"] = predict_lgb_kronos(
            fits.booster("lgbk"), info, frames, rows, win["dates"], index
        )
        result["fits"]["lgb_alpha158_kronos"] = info
    if "kronos_finetuned" in models:
        if win["index"] % cfg["finetune"]["every"] == 0 or fits.ft is None:
            fits.ft = finetune_window(cfg, data, win, out)
        info = fits.ft
        fc = forecasters.get("finetuned", info["model_path"], info["tokenizer_path"])
        _kronos_models(cfg, data, win, index, fc, "kronos_finetuned", info.get("train_end"),
                       result, columns)  # fmt: skip
        result["fits"]["kronos_finetuned"] = info
    for name, s in columns.items():
        signals[name] = s.reindex(index).to_numpy()
    result["signals"] = signals[[m for m in models if m in signals]]
    result["prob_up"] = pd.DataFrame(result["prob_up"], index=index)
    result["hist_vol"] = pd.Series(
        hist_vol(data, cfg["baselines"]["hist_vol_window"], index), index=index
    )
    if rows is not None:
        # seconds the run has spent so far on Kronos feature rows (forecasts, embeddings)
        result["reports"]["lgb_alpha158_kronos"] = {"feature_rows_seconds": round(rows.seconds, 2)}
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
        forecasters = rows = None
        if cfg["kronos"]["enabled"]:
            forecasters = Forecasters(forecast_settings(cfg, out / "forecast_cache"))
        if "lgb_alpha158_kronos" in enabled_models(cfg):
            rows = KronosRows(cfg, data, forecasters.get("base", *model_paths(cfg)))
        fits, results, computed = _Fits(), [], 0
        bar = tqdm(windows, desc="walk-forward", unit="window", disable=not cfg["progress"])
        for win in bar:
            folder = window_folder(out, win)
            if (folder / RESULT).exists():
                res = read_window(folder)
                _restore_fits(res, fits)
            else:
                res = run_window(cfg, data, win, frames, fits, forecasters, out, rows)
                save_window(res, folder)
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
    if "lgbk_model" in res:
        fits.lgbk = (res["lgbk_model"], res["fits"]["lgb_alpha158_kronos"])
    if "lgbs_model" in res:
        fits.lgbs = (res["lgbs_model"], res["fits"]["lgb_alpha158_sparse"])
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
    write_parquet(folder / "prob_up.parquet", res["prob_up"])
    for name, samp in res["samples"].items():
        samp = samp.set_axis([str(c) for c in samp.columns], axis=1)  # parquet: string names
        write_parquet(folder / f"samples_{name}.parquet", samp)
    for key in MODEL_TEXTS:
        if key in res:
            write_text(folder / f"{key}.txt", res[key])
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
        **{key: key in res for key in MODEL_TEXTS[1:]},
        "seconds": res["seconds"],
    }
    write_json(folder / RESULT, plain_json(meta))


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
        "prob_up": pd.read_parquet(folder / "prob_up.parquet"),
        "seconds": meta["seconds"],
    }
    for key in MODEL_TEXTS:
        if meta.get(key):
            res[key] = (folder / f"{key}.txt").read_text(encoding="utf-8")
    return res
