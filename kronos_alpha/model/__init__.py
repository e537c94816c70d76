"""The Kronos model: tokenizer (BSQ), autoregressive predictor, Hub loading and the zoo."""

from .hub import CheckpointError
from .kronos import Kronos
from .tokenizer import KronosTokenizer

__all__ = ["CheckpointError", "Kronos", "KronosTokenizer"]
