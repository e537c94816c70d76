"""What the backtrader and vectorbt adapters share: which forecaster, which settings, which
band, which feature columns.

Both are thin shells over one ``Forecaster``: a user's, or one shared per named model. Each
applies its overrides with ``Forecaster.with_settings``, which keeps a calibrated forecaster's
calibrator (``Forecaster.calibrate`` / ``set_calibrator``): the band and ``prob_up`` are then
the calibrated distribution's. A calibrator is fitted for one horizon, so an override of the
horizon is refused up front (``check_calibration``).
"""

from __future__ import annotations

from kronos_alpha.inference.calibration import CalibrationError
from kronos_alpha.inference.forecaster import Forecaster
from kronos_alpha.inference.settings import (
    ForecastSettings,
    SettingsError,
    check_real,
    quantile_column,
)

# The forecast statistics both adapters carry beside pred_return and the band (lines /
# outputs of the same names; the strategies' KRONOS_* feature columns hold the same values).
FEATURES = ("ret_std", "pred_vol", "path_mean", "path_min", "path_max")

_SHARED: dict = {}  # (model, tokenizer) -> Forecaster: every door naming a model shares one load


def base_forecaster(forecaster, model, tokenizer, door: str) -> Forecaster:
    """The user's forecaster, or the one shared by every adapter naming the same model."""
    if forecaster is not None:
        if not isinstance(forecaster, Forecaster):
            raise TypeError(
                f"forecaster must be a kronos_alpha.Forecaster, got {type(forecaster).__name__}"
            )
        return forecaster
    if model is None:
        raise ValueError(f"{door} needs forecaster= (a Forecaster) or model= (a name)")
    key = (str(model), str(tokenizer))
    if key not in _SHARED:
        _SHARED[key] = Forecaster(model=model, tokenizer=tokenizer, progress=False)
    return _SHARED[key]


def start_settings(base: Forecaster, settings) -> ForecastSettings:
    """``settings=``: a ForecastSettings replaces the forecaster's; a mapping changes them."""
    if isinstance(settings, ForecastSettings):
        return settings
    if settings is None:
        return base.settings
    return base.settings.replace(**dict(settings))


def band_quantiles(quantiles) -> tuple[float, float]:
    """The (lower, upper) levels of the two band outputs."""
    try:
        lower, upper = (check_real("quantiles", q) for q in quantiles)
        ok = 0 < lower < upper < 1
    except (TypeError, ValueError):  # not a pair, or not numbers
        ok = False
    if not ok:
        raise SettingsError(
            f"quantiles must be (lower, upper) with 0 < lower < upper < 1, got {quantiles!r}"
        )
    return lower, upper


def with_band(settings: ForecastSettings, band) -> ForecastSettings:
    """The settings with the band's levels among the forecaster's quantiles."""
    return settings.replace(quantiles=tuple(sorted({*settings.quantiles, *band})))


def band_columns(band, names) -> list[str]:
    """The forecast table's columns for the adapter's ``names``: ``lower`` and ``upper`` are the
    band's quantile columns, every other name is the column of the same name."""
    alias = {"lower": quantile_column(band[0]), "upper": quantile_column(band[1])}
    return [alias.get(n, n) for n in names]


def check_calibration(base: Forecaster, settings: ForecastSettings, door: str) -> None:
    """A calibrated forecaster's copy keeps its calibrator: refuse a horizon it was not fitted
    for now, naming the door, rather than at the first forecast inside the backtest."""
    cal = getattr(base, "calibrator_", None)
    if cal is not None and settings.horizon != cal.horizon:
        raise CalibrationError(
            f"{door}: horizon {settings.horizon} differs from the horizon {cal.horizon} the "
            f"forecaster's calibrator was fitted for (decision dates {cal.first_date} .. "
            f"{cal.last_date}): leave the horizon to the forecaster, calibrate one for horizon "
            f"{settings.horizon}, or pass a copy without it (copy.copy(fc).set_calibrator(None))"
        )
