"""Kronos inside Qlib: one ``module_path`` for every class a workflow YAML names.

``task.model``::

    class: KronosModel
    module_path: kronos_alpha.adapters.qlib
    kwargs: {lookback: 90, horizon: 2, sample_count: 5, signal: pred_return}

``dataset.kwargs.handler``: ``KronosHandler`` (raw bars), ``Alpha158Checked`` or
``KronosAlpha158`` (Alpha158 joined with Kronos features, for LightGBM);
``port_analysis_config.strategy``: ``TopKWeightStrategy`` or
``CheckedEnhancedIndexingStrategy`` (its risk-model folder from ``write_riskmodel_files``),
all with ``module_path: kronos_alpha.adapters.qlib``.

Modules: ``handler`` (KronosHandler, raw_bars), ``model`` (KronosModel), ``calibration``
(its calibration on the valid segment), ``features`` (KronosAlpha158), ``checks``
(absent field files, the benchmark, segments), ``data`` (provider folders: ``kronos-alpha
qlib-data build|check``), ``weights`` (``qlib-data weights``: the ``$<market>_weight`` field
EnhancedIndexingStrategy reads, and a benchmark series), ``subset`` (a writable copy of part
of a folder), ``strategies`` (the Qlib strategy classes), ``riskmodel`` and ``enhanced``
(risk model, signal and Qlib backtest of the enhanced-indexing book, end to end).
A name is imported from its module when first asked for, so that ``data`` (pure
numpy/pandas) does not load Qlib's model and backtest stack.
"""

from __future__ import annotations

import importlib

EXPORTS = {
    "Alpha158Checked": "kronos_alpha.strategies.alpha158",
    "CheckedEnhancedIndexingStrategy": ".strategies",
    "EnhancedIndexingRun": ".enhanced",
    "WeightsError": ".weights",
    "book_exposures": ".strategies",
    "copy_provider": ".subset",
    "enhanced_indexing_backtest": ".enhanced",
    "write_weights": ".weights",
    "KronosAlpha158": ".features",
    "KronosFeatureLoader": ".features",
    "KronosHandler": ".handler",
    "KronosModel": ".model",
    "TopKWeightStrategy": ".strategies",
    "check_benchmark": ".checks",
    "missing_field_files": ".checks",
    "raw_bars": ".handler",
    "write_riskmodel_files": ".riskmodel",
}


def __getattr__(name):
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(EXPORTS))


__all__ = sorted(EXPORTS)
