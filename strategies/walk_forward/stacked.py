"""lgb_alpha158_kronos: LightGBM on Alpha158 plus Kronos's forecast statistics (and optionally
principal components of its embedding), beside lgb_alpha158.

- Features: ``kronos_features`` (``strategies/kronos_features.py``) from the zero-shot
  forecaster: KRONOS_PRED_RETURN, the quantiles, KRONOS_RET_STD, KRONOS_PROB_UP,
  KRONOS_PRED_VOL, KRONOS_PATH_MEAN/MIN/MAX, all raw (uncalibrated) sample statistics.
  A forecast at t reads bars <= t only (the forecaster's guarantee), so a feature row at t
  holds nothing after t.
- Rows: Kronos forecasts cost time, so the train / valid rows are the dates every
  ``lightgbm.kronos_features.every`` bars (None: ``windows.decision_every``) on the decision
  grid's phase (``windows.grid_dates``), among them the member rows with a label and a
  forecast. With a 5-bar label, every 5th day loses little: consecutive labels overlap.
  lgb_alpha158 keeps every day's rows, so the two differ in rows as well as in features.
- ``components`` > 0: the embedding (``Forecaster.embed``) reduced by a PCA fitted on the
  rows of the window's train segment only (``kronos_features.fit_pca`` with fit_end = the
  train end); the valid and test rows are transformed by that PCA. Its state is plain data
  in the window's ``result.json``.
- Regularisation: Qlib's lambda_l1 / lambda_l2 (205.7 / 581, published for daily rows) are
  divided by ``every``. LightGBM's penalties act on a leaf's sums of gradients and hessians,
  which shrink with its rows: the same penalties on a fifth of the rows stopped every split
  (measured on the CSI300 example: one tree, a constant score in every window, RankIC NaN).
  ``lightgbm.kronos_features.params`` overrides the result.
- Ablation (``ablation: true``): lgb_alpha158_sparse is Alpha158 alone on the very same rows
  with the same parameters, so lgb_alpha158_kronos minus lgb_alpha158_sparse is the Kronos
  features' effect and lgb_alpha158_sparse minus lgb_alpha158 the sparser rows'.
- Refitted with lgb_alpha158 (every ``lightgbm.every`` windows); a window between predicts
  with the latest earlier fit and its PCA.

Feature rows are kept by date for the run (``KronosRows``): a date's forecasts and embedding
are computed (or read from the forecast cache) once, whichever window first needs them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..kronos_features import PREFIX, PCAState, fit_pca, kronos_features
from .baselines import design, fit_lgb, lgb_params
from .config import LookAheadError
from .windows import grid_dates

CHUNK = 20  # decision dates per forecaster call (names: the members at any of them)


class KronosRows:
    """Kronos feature rows by decision date for one forecaster: the forecast statistics
    (``kronos_features`` with no components) and, with ``components``, the embedding."""

    def __init__(self, cfg: dict, data, forecaster):
        self.cfg, self.data, self.fc = cfg, data, forecaster
        self.components = int(cfg["lightgbm"]["kronos_features"]["components"])
        self.stats: dict = {}  # date -> frame
        self.emb: dict = {}
        self.seconds = 0.0

    def _compute(self, dates: list) -> None:
        import time

        t0 = time.perf_counter()
        k, cal = self.cfg["kronos"], self.data.calendar
        extra = k["history_bars"] or 3 * k["lookback"] + 60
        for i in range(0, len(dates), CHUNK):
            chunk = dates[i : i + CHUNK]
            members = self.data.members.reindex(pd.DatetimeIndex(chunk))
            names = members.columns[members.any()]
            start = cal[max(0, cal.get_loc(chunk[0]) - extra)]
            panel = self.data.cut(chunk[-1], start, names)
            if panel.index.get_level_values("datetime").max() > chunk[-1]:
                raise LookAheadError(f"the Kronos feature panel reaches past {chunk[-1]}")
            frame = kronos_features(self.fc, panel, chunk).frame
            emb = self.fc.embed(panel, chunk) if self.components else None
            by_date = dict(tuple(frame.groupby(level="datetime")))
            emb_by = dict(tuple(emb.groupby(level="datetime"))) if emb is not None else {}
            for t in chunk:
                self.stats[t] = by_date.get(t, frame.iloc[:0])
                if emb is not None:
                    self.emb[t] = emb_by.get(t, emb.iloc[:0])
        self.seconds += time.perf_counter() - t0

    def frame(self, dates, pca: PCAState | None = None, stats_only: bool = False) -> pd.DataFrame:
        """Feature rows at ``dates``: statistics, then KRONOS_PC1.. (the PCA given)."""
        dates = [pd.Timestamp(t) for t in dates]
        todo = [t for t in dates if t not in self.stats]
        if todo:
            self._compute(todo)
        out = pd.concat([self.stats[t] for t in dates])
        if self.components and not stats_only:
            if pca is None:
                raise ValueError("components > 0 needs the window's fitted PCA")
            out = out.join(self._pcs(dates, pca), how="left")
        return out

    def embedding(self, dates) -> pd.DataFrame:
        dates = [pd.Timestamp(t) for t in dates]
        todo = [t for t in dates if t not in self.emb]
        if todo:
            self._compute(todo)
        return pd.concat([self.emb[t] for t in dates])

    def _pcs(self, dates, pca: PCAState) -> pd.DataFrame:
        emb = self.embedding(dates)  # as kronos_features names them
        pcs = pca.transform(emb.to_numpy())
        names = [f"{PREFIX}PC{i + 1}" for i in range(pcs.shape[1])]
        return pd.DataFrame(pcs, index=emb.index, columns=names)


def train_dates(cfg: dict, data, win: dict) -> list:
    every = cfg["lightgbm"]["kronos_features"]["every"]
    return grid_dates(cfg, data.calendar, win["train"][0], win["valid"][1], every)


def sparse_params(cfg: dict) -> dict:
    """The stacked models' LightGBM parameters: lambda_l1 / lambda_l2 divided by ``every``."""
    kf = cfg["lightgbm"]["kronos_features"]
    every = int(kf["every"] or cfg["windows"]["decision_every"])
    params = lgb_params(cfg)
    for key in ("lambda_l1", "lambda_l2"):
        if key in params:
            params[key] = float(params[key]) / every
    return {**params, **kf["params"]}


def _train_rows(cfg: dict, data, win: dict, rows: KronosRows, with_pca: bool):
    dates = train_dates(cfg, data, win)
    pca = None
    if rows.components and with_pca:
        fit_end = win["train"][1]
        emb = rows.embedding([t for t in dates if t <= fit_end])  # train rows only
        pca = fit_pca(emb, rows.components, fit_end)
    extra = rows.frame(dates, pca, stats_only=not with_pca)
    extra = extra.dropna(subset=[f"{PREFIX}PRED_RETURN"])  # rows with a Kronos forecast
    last = extra.index.get_level_values("datetime").max()
    if last > win["valid"][1]:
        raise LookAheadError(f"window {win['index']}: Kronos training rows reach {last}")
    return dates, extra, pca


def fit_lgb_kronos(cfg: dict, data, frames: dict, win: dict, rows: KronosRows):
    """(booster model text, fit summary with the PCA state) of LightGBM on Alpha158 + Kronos
    features, on the train segment's grid rows, early-stopped on the valid segment's."""
    dates, extra, pca = _train_rows(cfg, data, win, rows, with_pca=True)
    text, info = fit_lgb(cfg, data, frames, win, extra=extra, params=sparse_params(cfg))
    info = {**info, "kronos_columns": list(extra.columns), "grid_dates": len(dates)}
    info["pca"] = None if pca is None else pca_dict(pca)
    return text, info


def fit_lgb_sparse(cfg: dict, data, frames: dict, win: dict, rows: KronosRows):
    """The ablation: LightGBM on Alpha158 alone, on lgb_alpha158_kronos's rows and parameters."""
    dates, extra, _ = _train_rows(cfg, data, win, rows, with_pca=False)
    text, info = fit_lgb(cfg, data, frames, win, extra=extra.iloc[:, :0], params=sparse_params(cfg))
    return text, {**info, "grid_dates": len(dates)}


def predict_lgb_kronos(booster, info: dict, frames: dict, rows: KronosRows, dates, index):
    """Scores of the test rows ``index`` at ``dates`` with the fit's booster and PCA."""
    pca = None if info.get("pca") is None else PCAState(**info["pca"])
    extra = rows.frame(dates, pca)[info["kronos_columns"]]
    X = design(frames["feature"], index, extra)
    best = info["best_iteration"] or None
    return booster.predict(X.to_numpy(), num_iteration=best)


def pca_dict(pca: PCAState) -> dict:
    return {
        "mean": [float(v) for v in pca.mean],
        "components": [[float(v) for v in row] for row in pca.components],
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio],
        "fit_rows": int(pca.fit_rows),
        "fit_end": str(pca.fit_end),
    }


def explained(info: dict) -> float:
    """Share of the embedding's variance the fit's components keep (NaN without a PCA)."""
    p = info.get("pca")
    return float(np.sum(p["explained_variance_ratio"])) if p else float("nan")
