"""Qlib provider folders from CSV/parquet bars (``build``), and a checker for existing folders
(``check``): ``kronos-alpha qlib-data build|check``. Pure numpy/pandas: no Qlib import.

Layout written (Qlib's file storage, as ``scripts/dump_bin.py`` writes it):

- ``calendars/<freq>.txt``: every date seen in the input, sorted;
- ``instruments/all.txt`` (and ``instruments/<market>.txt``): ``CODE<TAB>first<TAB>last``;
- ``features/<code lower>/<field>.<freq>.bin``: little-endian float32, the first value is the
  index of the instrument's first date in the calendar, then one value per calendar day up to
  its last date (days it has no row for are NaN).

Fields: open, high, low, close, volume, plus factor when given; ``change`` is recomputed as a
fraction (close / previous close - 1); ``amount`` is written when given or derivable as
vwap * volume, ``vwap`` when given or derivable as amount / volume. Nothing is filled in:
a suspension stays visible (volume 0 or NaN), and the build reports it.

Modules: ``sources`` reads the input (files, instrument codes, dates through the input
boundary ``panel.to_datetime_index``); ``build`` validates it all, then writes through one
``ConfinedWriter`` (``kronos_alpha.files.atomic_write`` inside the output folder only);
``checkfolder`` verifies a folder. Their policies are in their docstrings; this module
re-exports the names, so ``kronos_alpha.adapters.qlib.data`` stays the one import path.
"""

from __future__ import annotations

from kronos_alpha.inference.panel import OHLC_TOL, InputError

from .build import (
    OPTIONAL,
    BuildError,
    BuildReport,
    ConfinedWriter,
    bin_bytes,
    build,
    derive_fields,
    freq_problem,
    validate_bars,
)
from .checkfolder import CheckReport, check, read_bin
from .sources import CODE_NAMES, DATE_NAMES, code_from_filename, code_problem, read_bars

__all__ = [
    "CODE_NAMES",
    "DATE_NAMES",
    "OHLC_TOL",
    "OPTIONAL",
    "BuildError",
    "BuildReport",
    "CheckReport",
    "ConfinedWriter",
    "InputError",
    "bin_bytes",
    "build",
    "check",
    "code_from_filename",
    "code_problem",
    "derive_fields",
    "freq_problem",
    "read_bars",
    "read_bin",
    "validate_bars",
]
