"""Inference: bars in (``panel``), sampled paths (``generation``), forecasts out (``forecaster``)."""
