"""Kronos in the walk-forward: forecasters (zero-shot and fine-tuned) and per-window fine-tunes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kronos_alpha.inference.settings import ForecastSettings

from .config import LookAheadError, model_paths
from .data import Data


class Forecasters:
    """One Forecaster per role ("base", "finetuned"), all from the run's one ForecastSettings.

    A forecaster is built when its role first asks for it and kept for every later window
    (the model loads once); the fine-tuned one is replaced only when a new fine-tune arrives.
    """

    def __init__(self, settings: ForecastSettings):
        self.settings = settings
        self._made: dict = {}  # role -> ((model, tokenizer), Forecaster)

    def get(self, role: str, model: str, tokenizer: str):
        from kronos_alpha.inference.forecaster import Forecaster

        key = (str(model), str(tokenizer))
        have = self._made.get(role)
        if have is None or have[0] != key:
            self._made[role] = (key, Forecaster(model, tokenizer, self.settings))
        return self._made[role][1]


def kronos_forecast(cfg: dict, data: Data, forecaster, win: dict, index: pd.MultiIndex):
    """(forecast table, h-bar returns (rows as the table, one column per member), the
    forecaster's report) from a panel cut at the window's last decision date (and
    ``history_bars`` bars before its first). The members are the sampled returns, or for a
    calibrated forecaster its 99 calibrated quantiles (``calibrated_returns_``). Each date's
    future bar times come from the settings' calendar (``forecast_settings``), not from the
    later dates' rows, so every date's forecast is the one a panel cut at that date gives."""
    k = cfg["kronos"]
    extra = k["history_bars"] or 3 * k["lookback"] + 60
    first = data.calendar.get_loc(win["dates"][0])
    start = data.calendar[max(0, first - extra)]
    names = index.get_level_values("instrument").unique()
    panel = data.cut(win["dates"][-1], start, names)
    table = forecaster.forecast(panel, win["dates"])
    calibrated = getattr(forecaster, "calibrator_", None) is not None
    members = forecaster.calibrated_returns_ if calibrated else forecaster.sample_returns_
    return table, members, dict(forecaster.report)


def finetune_window(cfg: dict, data: Data, win: dict, out: Path) -> dict:
    """Fine-tune the base checkpoint on the window's train/valid segments (panel cut at valid end)."""
    from kronos_alpha.finetune import FinetuneConfig, run_finetune

    folder = out / "finetune" / f"w{win['index']:03d}"
    done = folder / "result.json"
    if done.exists():
        res = json.loads(done.read_text())
        if "model_path" in res:
            return _finetune_info(res, win)
    model, tokenizer = model_paths(cfg)
    f, k = cfg["finetune"], cfg["kronos"]
    a, b = win["train"][0], win["valid"][1]
    span = data.members.loc[a:b]
    names = span.columns[span.any()]
    cut = data.cut(b, None, names)[["open", "high", "low", "close", "volume"]]
    last = cut.index.get_level_values("datetime").max()
    if last > pd.Timestamp(b):  # a real check, not an assert that python -O removes
        raise LookAheadError(
            f"window {win['index']}: the fine-tune panel reaches {last}, after {b}"
        )
    series = {
        str(n): g.droplevel("instrument") for n, g in cut.groupby(level="instrument", sort=True)
    }
    fc = FinetuneConfig.from_dict(
        {
            "data": {
                "source": "panel",
                "lookback": k["lookback"],
                "horizon": cfg["windows"]["horizon"],
                "stride": f["stride"],
                "gap": cfg["windows"]["horizon"],
                "train": [str(win["train"][0].date()), str(win["train"][1].date())],
                "valid": [str(win["valid"][0].date()), str(win["valid"][1].date())],
            },
            "tokenizer": {"init": tokenizer, **{"train": False, **f["tokenizer"]}},
            "predictor": {"init": model, **f["predictor"]},
            "output_dir": str(folder),
            "seed": int(cfg["seed"]) + 100,
            "device": "cpu" if cfg["num_threads"] else "auto",
            "max_context": f["max_context"],
            "num_threads": cfg["num_threads"],
            "progress": False,
        }
    )
    res = run_finetune(fc, panel=series)
    if "model_path" not in res:
        raise RuntimeError(f"fine-tuning of window {win['index']} stopped early: {res}")
    return _finetune_info(res, win)


def _finetune_info(res: dict, win: dict) -> dict:
    pred = res.get("predictor", {})
    return {
        "fitted_in_window": win["index"],
        "model_path": res["model_path"],
        "tokenizer_path": res["tokenizer_path"],
        "val_loss_before": pred.get("val_loss_before"),
        "val_loss_best": pred.get("val_loss_best"),
        "data_end": str(win["valid"][1].date()),
        "train_end": str(win["train"][1].date()),  # the last bar it learned from
    }
