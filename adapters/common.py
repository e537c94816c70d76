"""What the backtrader and vectorbt adapters share: which forecaster, which settings, which band.

Both are thin shells over one ``Forecaster``: a user's, or one shared per named model.
"""

from __future__ import annotations

from kronos_alpha.inference.forecaster import Forecaster
from kronos_alpha.inference.settings import ForecastSettings

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
    if len(quantiles) != 2 or not 0 < quantiles[0] < quantiles[1] < 1:
        raise ValueError(
            f"quantiles must be (lower, upper) with 0 < lower < upper < 1, got {quantiles!r}"
        )
    return float(quantiles[0]), float(quantiles[1])


def with_band(settings: ForecastSettings, band) -> ForecastSettings:
    """The settings with the band's levels among the forecaster's quantiles."""
    return settings.replace(quantiles=tuple(sorted({*settings.quantiles, *band})))
