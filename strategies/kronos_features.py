"""Kronos as features: forecast statistics and reduced embeddings per (datetime, instrument).

The one place where Kronos outputs become factor columns, for the Qlib handler
(``kronos_alpha.adapters.qlib.KronosAlpha158``), the walk-forward baseline
``lgb_alpha158_kronos`` and anyone stacking Kronos with their own model:

- forecast statistics from ``Forecaster.forecast``: pred_return, the return quantiles,
  ret_std, prob_up, pred_vol and the paths' mean / min / max (``FORECAST_FEATURES``);
- optionally the embedding (``Forecaster.embed``) reduced to ``components`` principal
  components by a PCA fitted on rows with datetime <= ``fit_end`` only, so no later row
  shapes the reduction (its state is plain data: ``PCAState``).

Columns are prefixed ``KRONOS_`` (Qlib's feature columns are upper case: ``KRONOS_PRED_RETURN``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kronos_alpha.inference.settings import SettingsError, check_integer

FORECAST_FEATURES = (
    "pred_return",
    "ret_std",
    "prob_up",
    "pred_vol",
    "path_mean",
    "path_min",
    "path_max",
)
PREFIX = "KRONOS_"


@dataclass(frozen=True)
class PCAState:
    """A fitted PCA as plain data: x -> (x - mean) @ components.T."""

    mean: tuple
    components: tuple  # (k, d) rows
    explained_variance_ratio: tuple
    fit_rows: int
    fit_end: str

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - np.asarray(self.mean)) @ np.asarray(self.components).T


@dataclass(frozen=True)
class KronosFeatures:
    """The feature frame, the PCA that reduced the embedding (or None) and the forecaster's
    reports (forecast, embed)."""

    frame: pd.DataFrame
    pca: PCAState | None
    reports: dict


def fit_pca(emb: pd.DataFrame, components: int, fit_end) -> PCAState:
    from sklearn.decomposition import PCA

    t = emb.index.get_level_values("datetime")
    fit_rows = emb[t <= pd.Timestamp(fit_end)].to_numpy(np.float64)
    if len(fit_rows) < components + 1:
        raise SettingsError(
            f"embedding PCA with {components} components needs more than {components} rows up to "
            f"fit_end {fit_end}, got {len(fit_rows)}"
        )
    pca = PCA(n_components=components, svd_solver="full", random_state=0).fit(fit_rows)
    return PCAState(
        tuple(pca.mean_.tolist()),
        tuple(map(tuple, pca.components_.tolist())),
        tuple(pca.explained_variance_ratio_.tolist()),
        len(fit_rows),
        str(pd.Timestamp(fit_end)),
    )


def kronos_features(
    forecaster, panel, dates=None, components: int = 0, fit_end=None, pca: PCAState | None = None
) -> KronosFeatures:
    """Feature columns for every forecast row of ``panel`` at ``dates``.

    ``components`` > 0 adds ``KRONOS_PC1..`` from the embedding: the PCA is ``pca`` when
    given (fitted before), else fitted on rows with datetime <= ``fit_end`` (required then).
    """
    components = check_integer("components", components, 0)
    table = forecaster.forecast(panel, dates)
    reports = {"forecast": dict(forecaster.report)}
    cols = [*FORECAST_FEATURES[:1], *forecaster.settings.quantile_columns, *FORECAST_FEATURES[1:]]
    frame = table[cols].rename(columns=lambda c: PREFIX + c.upper())
    if components:
        if pca is None and fit_end is None:
            raise SettingsError(
                "components > 0 needs fit_end (the last date the PCA may see) or a fitted pca"
            )
        emb = forecaster.embed(panel, dates)
        reports["embed"] = dict(forecaster.report)
        pca = pca or fit_pca(emb, int(components), fit_end)
        pcs = pca.transform(emb.to_numpy())
        names = [f"{PREFIX}PC{i + 1}" for i in range(pcs.shape[1])]
        frame = frame.join(pd.DataFrame(pcs, index=emb.index, columns=names), how="left")
    return KronosFeatures(frame.astype(np.float64), pca, reports)
