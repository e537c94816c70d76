"""Inference: bars checked (``panel``), model inputs (``data``), sampled paths (``paths`` over the
``generation`` engine), forecasts out (``forecaster``)."""
