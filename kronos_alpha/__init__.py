"""kronos-alpha: Kronos candlestick foundation models for Qlib, backtrader and vectorbt."""

from .hub import CheckpointError
from .model import Kronos
from .tokenizer import KronosTokenizer

__version__ = "0.1.0"
__all__ = ["CheckpointError", "Kronos", "KronosTokenizer", "__version__"]
