"""Calibration of the forecast distribution: conformalised location-scale quantiles.

A few sampled paths give under-dispersed sample quantiles by construction (five samples
span a 10-90% interval that should cover 80% of outcomes only about half the time), and the
sampled spread of a model trained elsewhere need not match this market's. The calibrator
turns each forecast row into a distribution

    R = centre + scale * Z,   centre = intercept + slope * ret_mean,

where Z's quantiles are the empirical quantiles of the standardised residuals
(realised - centre) / scale on past decision dates (split-conformal: with exchangeable
residuals the central interval of level a covers a of new outcomes). ``slope`` is the least
squares slope of the realised return on ``ret_mean``, clipped to [0, 1]: a sample mean
without skill is shrunk away instead of adding its noise. ``drift``: ``"zero"`` (the default)
centres the residuals on their median and takes intercept = -slope * mean(ret_mean), so
the location carries Kronos's skill and nothing else; ``"fitted"`` keeps the calibration
span's mean return as a drift. Measured on CSI300 (fit 2019, test 2020-21): a bull year's
mean 5-day return (+0.9%) carried into the next two years costs CRPS and Brier score, so
zero drift is the default (README, "Calibrated uncertainty"). The scale is one of

- ``ret_std``: the sampled horizon returns' spread;
- ``pred_vol``: the sampled paths' bar volatility times sqrt(horizon) (all steps and
  samples pooled, so steadier than ret_std with few samples);
- ``hist_vol``: the context window's bar volatility times sqrt(horizon) (the naive scale);
- ``ewma_vol``: the context's RiskMetrics EWMA volatility times sqrt(horizon);
- ``blend``: the geometric mean of pred_vol's and hist_vol's scales;
- ``fitted``: exp(b0 + b1 log pred_vol + b2 log hist_vol + b3 log ewma_vol) (each times
  sqrt(horizon)), the elasticities b1..b3 >= 0 fitted by least squares of log|residual| on
  the three logs (Harvey's multiplicative heteroscedasticity; normalised conformal
  prediction with a learned scale, Lei et al. 2018). It weighs Kronos's spread against the
  history's by how well each tracked the calibration dates' outcomes, and a sum of
  elasticities below one shrinks every row's scale toward the cross-section's level.

The default is ``fitted`` alone: it nests the three volatility scales (and the blend), so
a choice among them adds only noise. Given several candidate ``scales``, each is fitted on
the earlier half of the calibration dates and scored (CRPS) on the later half, and the best
is refitted on all. Measured in a development study on 2013-2015 CSI300 dates (before
every test span reported in the README; rolling 250-bar calibration, purged by the
horizon, CRPS against the 60-bar Gaussian; ``benchmarks/calibration_scales.py``): hist_vol
+1.0%, ewma_vol -0.55%, fitted -0.75%, and the held-out choice among all six -0.16%: between
near-equal scales, 25 held-out dates choose by noise.

Why not PIT recalibration (a monotone map of each row's sample CDF): with few samples most
outcomes fall outside the sampled range (PIT 0 or 1), and no map of [0, 1] onto itself can
put quantiles beyond the samples. Measured on CSI300 (README, "Calibrated uncertainty").

The calibrator is plain data: ``to_dict`` is JSON, saved with ``save`` through the one
writer and read back with ``Calibrator.load``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .settings import SettingsError, quantile_column

SCALES = ("ret_std", "pred_vol", "hist_vol", "ewma_vol", "blend", "fitted")
DEFAULT_SCALES = ("fitted",)
FITTED_BASIS = ("pred_vol", "hist_vol", "ewma_vol")  # the fitted scale's regressors
FITTED_MIN_ROWS = 16  # four coefficients: at least four rows per coefficient
TINY_VOL = 1e-8  # a zero volatility's log is taken here (a flat context), not at -inf
DRIFTS = ("zero", "fitted")
LEVELS = tuple(float(x) for x in np.round(np.linspace(0.005, 0.995, 199), 6))
GRID = 99  # quantiles per row for CRPS: levels (i + 0.5) / GRID
MIN_PAIRS = 40
CALIBRATED = ("ret_median", "ret_std", "prob_up")  # plus every ret_qNN
FORMAT = "kronos-alpha calibrator"
VERSION = 1


class CalibrationError(ValueError):
    """Calibration cannot be fitted or applied; the message names the date or setting."""


def grid_levels(n: int = GRID) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


def crps_quantiles(q: np.ndarray, y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """CRPS per row from quantiles ``q`` (n, L) at evenly spread ``levels``: twice the mean
    pinball loss over the levels (the quantile form of the CRPS integral)."""
    d = np.asarray(y, np.float64)[:, None] - q
    return 2 * np.mean(np.maximum(levels * d, (levels - 1) * d), axis=1)


def fitted_scale(table: pd.DataFrame, horizon: int, coef) -> np.ndarray:
    """The ``fitted`` scale: exp(coef[0] + sum coef[i] log(basis_i sqrt(horizon)))."""
    log_s = np.full(len(table), coef[0])
    for b, name in zip(coef[1:], FITTED_BASIS):
        v = table[name].to_numpy(np.float64) * np.sqrt(horizon)
        log_s = log_s + b * np.log(np.maximum(v, TINY_VOL))  # NaN stays NaN: the floor
    return np.exp(log_s)


def row_scale(table: pd.DataFrame, kind: str, horizon: int, coef=()) -> np.ndarray:
    """The raw scale of each forecast row for scale ``kind`` (see the module docstring)."""
    check_scale(kind)
    need = {"ret_std": ("ret_std",), "blend": ("pred_vol", "hist_vol"), "fitted": FITTED_BASIS}
    missing = [c for c in need.get(kind, (kind,)) if c not in table.columns]
    if missing:
        raise CalibrationError(
            f"calibration scale {kind!r} reads the forecast table's column {missing[0]!r}, "
            "which this table lacks"
        )
    root = np.sqrt(horizon)
    if kind == "ret_std":
        return table["ret_std"].to_numpy(np.float64)
    if kind in ("pred_vol", "hist_vol", "ewma_vol"):
        return table[kind].to_numpy(np.float64) * root
    if kind == "blend":
        pv = table["pred_vol"].to_numpy(np.float64)
        hv = table["hist_vol"].to_numpy(np.float64)
        return np.sqrt(pv * hv) * root
    return fitted_scale(table, horizon, coef)


def check_scale(kind) -> None:
    """Refuse an unknown calibration scale, naming it."""
    if kind not in SCALES:
        raise SettingsError(f"calibration scale must be one of {SCALES}, got {kind!r}")


def fit_scale_model(table: pd.DataFrame, residual: np.ndarray, horizon: int) -> tuple:
    """The ``fitted`` scale's coefficients: least squares of log|residual| on the logs of
    the FITTED_BASIS scales, elasticities >= 0 (non-negative least squares on centred
    columns, then the intercept). Rows with a missing or zero basis value are left out of
    the fit (they get the floor when applied)."""
    from scipy.optimize import nnls

    v = np.column_stack([row_scale(table, b, horizon) for b in FITTED_BASIS])
    e = np.abs(residual)
    # a zero volatility (a flat context) would be a log(TINY_VOL) lever on the fit: left out
    ok = (np.isfinite(v) & (v > TINY_VOL)).all(1) & np.isfinite(e)
    x, e = np.log(v[ok]), e[ok]
    if len(e) < FITTED_MIN_ROWS:
        raise CalibrationError(
            f"the fitted scale needs at least {FITTED_MIN_ROWS} rows with finite, positive "
            f"{', '.join(FITTED_BASIS)}, got {len(e)}; pass other scales"
        )
    target = np.log(np.maximum(e, 1e-3 * np.median(e) + 1e-12))  # exact zeros: not -inf
    mean_x, mean_t = x.mean(0), target.mean()
    b = nnls(x - mean_x, target - mean_t)[0]
    return (float(mean_t - b @ mean_x), *map(float, b))


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration (see the module docstring). Build with :func:`fit`."""

    horizon: int
    scale: str
    intercept: float
    slope: float
    floor: float
    z: tuple  # quantiles of the standardised residuals at LEVELS
    z_min: float
    z_max: float
    first_date: str
    last_date: str
    realised_end: str  # the last bar time whose close the fit read
    pairs: int
    settings: dict = field(default_factory=dict)  # the sampling settings it was fitted under
    scores: dict = field(default_factory=dict)  # held-out CRPS per scale considered
    drift: str = "zero"
    coef: tuple = ()  # the fitted scale's (b0, b1, b2, b3); empty for the other scales

    # -- the calibrated distribution of each row ---------------------------------------------
    def centre(self, table: pd.DataFrame) -> np.ndarray:
        return self.intercept + self.slope * table["ret_mean"].to_numpy(np.float64)

    def spread(self, table: pd.DataFrame) -> np.ndarray:
        s = row_scale(table, self.scale, self.horizon, self.coef)
        return np.maximum(np.nan_to_num(s, nan=self.floor), self.floor)

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        levels = np.concatenate([[0.0], LEVELS, [1.0]])
        z = np.concatenate([[self.z_min], self.z, [self.z_max]])
        return levels, z

    def z_quantile(self, levels) -> np.ndarray:
        lv, z = self._knots()
        return np.interp(np.asarray(levels, np.float64), lv, z)

    def quantiles(self, table: pd.DataFrame, levels) -> np.ndarray:
        """Calibrated return quantiles (rows, levels)."""
        zq = self.z_quantile(levels)
        return self.centre(table)[:, None] + self.spread(table)[:, None] * zq[None, :]

    def cdf(self, table: pd.DataFrame, y) -> np.ndarray:
        """Calibrated P(R <= y) per row: the PIT of realised returns ``y``."""
        lv, z = self._knots()
        zy = (np.asarray(y, np.float64) - self.centre(table)) / self.spread(table)
        return np.interp(zy, z, lv)

    def quantile_grid(self, table: pd.DataFrame, n: int = GRID) -> np.ndarray:
        """n calibrated quantiles per row at levels (i + 0.5) / n: an equally weighted ensemble
        of the calibrated distribution, usable wherever sampled returns are."""
        return self.quantiles(table, grid_levels(n))

    def apply(self, table: pd.DataFrame, quantiles) -> pd.DataFrame:
        """The table with calibrated ret_qNN, ret_median, ret_std and prob_up; the raw sample
        statistics kept as raw_ret_qNN, raw_ret_median, raw_ret_std and raw_prob_up."""
        out = table.copy()
        if len(out) == 0:
            for c in [*CALIBRATED, *map(quantile_column, quantiles)]:
                out[f"raw_{c}"] = out[c]
            return out
        zq = self.z_quantile(grid_levels())
        s = self.spread(table)
        names = [quantile_column(q) for q in quantiles]
        for c, v in zip(names, self.quantiles(table, quantiles).T):
            out[f"raw_{c}"], out[c] = out[c], v
        out["raw_ret_median"], out["ret_median"] = (
            out["ret_median"],
            self.quantiles(table, [0.5])[:, 0],
        )
        out["raw_ret_std"], out["ret_std"] = out["ret_std"], s * float(zq.std())
        out["raw_prob_up"], out["prob_up"] = out["prob_up"], 1 - self.cdf(table, 0.0)
        return out

    def check_settings(self, settings) -> None:
        """Refuse another horizon; warn when the sampling settings differ from the fit's."""
        if settings.horizon != self.horizon:
            raise CalibrationError(
                f"the calibrator was fitted for horizon {self.horizon}, the forecaster's horizon "
                f"is {settings.horizon}: calibrate again, or set_calibrator(None)"
            )
        changed = {k: v for k, v in self.settings.items() if getattr(settings, k, v) != v}
        if changed:
            now = {k: getattr(settings, k) for k in changed}
            warnings.warn(
                f"the calibrator was fitted under {changed}, the forecaster now samples with "
                f"{now}: its intervals may no longer cover; calibrate again",
                stacklevel=4,
            )

    # -- plain data --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        return {
            "format": FORMAT,
            "version": VERSION,
            **d,
            "z": list(self.z),
            "coef": list(self.coef),
        }

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibrator") -> Calibrator:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CalibrationError(f"{source} is not a kronos-alpha calibrator (no format tag)")
        if d.get("version") != VERSION:
            raise CalibrationError(
                f"{source} has calibrator version {d.get('version')}, not {VERSION}"
            )
        fields = {k: v for k, v in d.items() if k not in ("format", "version")}
        try:
            coef = tuple(float(v) for v in fields.get("coef", ()))
            cal = cls(**{**fields, "z": tuple(float(v) for v in fields["z"]), "coef": coef})
        except (TypeError, KeyError, ValueError) as exc:
            raise CalibrationError(f"{source} is malformed: {exc}") from None
        z = np.asarray(cal.z)
        if len(z) != len(LEVELS) or not np.isfinite(z).all() or np.any(np.diff(z) < 0):
            raise CalibrationError(f"{source}: z must be {len(LEVELS)} finite, sorted quantiles")
        if cal.scale not in SCALES or not (np.isfinite(cal.floor) and cal.floor > 0):
            raise CalibrationError(f"{source}: scale {cal.scale!r} / floor {cal.floor} invalid")
        c = np.asarray(cal.coef)
        want = 1 + len(FITTED_BASIS) if cal.scale == "fitted" else 0
        if len(c) != want or not np.isfinite(c).all() or np.any(c[1:] < 0):
            raise CalibrationError(
                f"{source}: scale {cal.scale!r} needs {want} finite coefficients (elasticities "
                f">= 0), got {list(cal.coef)}"
            )
        return cal

    def save(self, path) -> Path:
        from ..files import write_json

        return write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path) -> Calibrator:
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibrator file not found: {path}")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"calibrator file {path} is not JSON: {exc}") from None
        return cls.from_dict(d, f"calibrator file {path}")

    @classmethod
    def build(cls, value) -> Calibrator | None:
        """None, a Calibrator, its dict, or a JSON file path."""
        if value is None or isinstance(value, Calibrator):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        if isinstance(value, (str, Path)):
            return cls.load(value)
        raise CalibrationError(
            f"calibrator must be a Calibrator, its dict, a JSON path or None, got {type(value).__name__}"
        )


def check_choices(scales, drift: str) -> None:
    """Refuse an unknown scale or drift, naming it."""
    if isinstance(scales, str) or not len(scales):
        raise SettingsError(
            f"calibration scales must be a non-empty sequence of {SCALES}, got {scales!r}"
        )
    for s in scales:
        check_scale(s)
    if drift not in DRIFTS:
        raise SettingsError(f"calibration drift must be one of {DRIFTS}, got {drift!r}")


# -- fitting -----------------------------------------------------------------------------------
def _fit_one(table: pd.DataFrame, y: np.ndarray, horizon: int, scale: str, drift: str) -> dict:
    x = table["ret_mean"].to_numpy(np.float64)
    vx = x.var()
    slope = float(np.clip(np.cov(x, y, bias=True)[0, 1] / vx, 0.0, 1.0)) if vx > 0 else 0.0
    intercept = float((y.mean() if drift == "fitted" else 0.0) - slope * x.mean())
    residual = y - intercept - slope * x
    centred = residual - np.median(residual) if drift == "zero" else residual
    coef = fit_scale_model(table, centred, horizon) if scale == "fitted" else ()
    raw = row_scale(table, scale, horizon, coef)
    positive = raw[np.isfinite(raw) & (raw > 0)]
    floor = float(np.quantile(positive, 0.01)) if len(positive) else 1e-6
    floor = max(floor, 1e-8)
    s = np.maximum(np.nan_to_num(raw, nan=floor), floor)
    z = residual / s
    if drift == "zero":
        z = z - np.median(z)
    return {
        "scale": scale,
        "intercept": intercept,
        "slope": slope,
        "floor": floor,
        "z": tuple(float(v) for v in np.quantile(z, LEVELS)),
        "z_min": float(z.min()),
        "z_max": float(z.max()),
        "drift": drift,
        "coef": coef,
    }


def fit(
    table: pd.DataFrame,
    realised: np.ndarray,
    horizon: int,
    settings: dict,
    realised_end,
    scales=DEFAULT_SCALES,
    drift: str = "zero",
) -> Calibrator:
    """Fit on forecast rows ``table`` (raw statistics) and their realised horizon returns.

    ``scales``: the candidate scales. Each is fitted on the earlier half of the decision
    dates and scored (CRPS) on the later half (``scores``); the best is refitted on all.
    """
    y = np.asarray(realised, np.float64)
    ok = np.isfinite(y)
    table, y = table[ok], y[ok]
    if len(y) < MIN_PAIRS:
        raise CalibrationError(
            f"calibration needs at least {MIN_PAIRS} forecasts with realised returns, got {len(y)}"
        )
    check_choices(scales, drift)
    times = table.index.get_level_values("datetime")
    scores = {}
    dates = times.unique().sort_values()
    if len(dates) >= 2:  # held-out CRPS: fit on the earlier half of the dates, score the later
        cut = dates[len(dates) // 2]
        early, late = times < cut, times >= cut
        levels = grid_levels()
        for s in scales:
            part = Calibrator(
                horizon, **_fit_one(table[early], y[early], horizon, s, drift), first_date="",
                last_date="", realised_end="", pairs=int(early.sum()),
            )  # fmt: skip
            q = part.quantiles(table[late], levels)
            scores[s] = float(crps_quantiles(q, y[late], levels).mean())
    elif len(scales) > 1:
        raise CalibrationError("choosing the scale needs at least two calibration dates")
    best = min(scores, key=scores.get) if scores else scales[0]
    return Calibrator(
        horizon,
        **_fit_one(table, y, horizon, best, drift),
        first_date=str(times.min()),
        last_date=str(times.max()),
        realised_end=str(realised_end),
        pairs=len(y),
        settings=dict(settings),
        scores=scores,
    )
