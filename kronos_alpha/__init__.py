"""kronos-alpha: Kronos candlestick foundation models for Qlib, backtrader and vectorbt."""

from .inference.forecaster import Forecaster
from .inference.panel import InputError
from .inference.predictor import KronosPredictor, auto_device
from .model import CheckpointError, Kronos, KronosTokenizer

__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "Forecaster",
    "InputError",
    "Kronos",
    "KronosPredictor",
    "KronosTokenizer",
    "auto_device",
    "__version__",
]
