"""kronos-alpha: Kronos candlestick foundation models for Qlib, backtrader and vectorbt."""

from .data import InputError
from .forecaster import Forecaster
from .hub import CheckpointError
from .model import Kronos
from .predictor import KronosPredictor, auto_device
from .tokenizer import KronosTokenizer

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
