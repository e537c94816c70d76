"""A panel - a dict {instrument: frame} or one (datetime, instrument) frame - split into one
checked, time-indexed frame per instrument (``split_panel``): instrument names and time zones
agree, timestamps are unique, rows are in time order. The bars inside each frame are checked
by ``panel`` (the input boundary) when a door reads them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .panel import (
    TIME_COLUMNS,
    InputError,
    clean_columns,
    column_name,
    instrument_name,
    missing_prices,
    to_datetime_index,
)


def frame_by_time(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """One instrument's frame indexed by its timestamps: its DatetimeIndex, or - for a frame
    with a plain RangeIndex, as ``read_csv`` returns - its date column (see TIME_COLUMNS)."""
    df = df.copy()
    if not isinstance(df.index, pd.DatetimeIndex) and isinstance(df.index, pd.RangeIndex):
        named = [c for c in df.columns if column_name(c) in TIME_COLUMNS]
        if named:
            df = df.set_index(named[0])
            where = f"{where} column {named[0]!r}"
        else:
            where = f"{where}.index"
    else:
        where = f"{where}.index"
    df.index = to_datetime_index(df.index, where)
    if df.index.hasnans:
        raise InputError(f"{where} has NaT at row {int(np.argmax(df.index.isna()))}")
    return df


def split_panel(panel) -> dict[str, pd.DataFrame]:
    """A long (datetime, instrument) frame or a dict of frames -> {instrument: frame by time}."""
    if isinstance(panel, dict):
        if not panel:
            raise InputError("panel is an empty dict")
        frames, keys = {}, {}
        for name, df in panel.items():
            if not isinstance(df, pd.DataFrame):
                raise InputError(f"panel[{name!r}] must be a DataFrame, got {type(df).__name__}")
            key = instrument_name(name)
            if key in keys:
                raise InputError(
                    f"panel keys {keys[key]!r} and {name!r} are both instrument {key!r}; "
                    "give every instrument one distinct name"
                )
            keys[key] = name
            frames[key] = frame_by_time(df, f"panel[{name!r}]")
    elif isinstance(panel, pd.DataFrame):
        if not isinstance(panel.index, pd.MultiIndex) or panel.index.nlevels != 2:
            raise InputError(
                "panel must be indexed by a (datetime, instrument) MultiIndex, or be a dict "
                f"{{instrument: DataFrame}}; got index {type(panel.index).__name__} {list(panel.index.names)}"
            )
        names = list(panel.index.names)
        if "datetime" in names and "instrument" in names:
            t_level, i_level = names.index("datetime"), names.index("instrument")
        else:  # unnamed levels: the datetime-like one is the time
            first = panel.index.get_level_values(0)
            is_time = pd.api.types.is_datetime64_any_dtype(first) or isinstance(
                first[0], pd.Timestamp
            )
            t_level, i_level = (0, 1) if is_time else (1, 0)
        dup = panel.index.duplicated()
        if dup.any():
            row = panel.index[dup][0]
            raise InputError(
                f"panel has {int(dup.sum())} duplicated (datetime, instrument) row(s); first {row!r}"
            )
        times = to_datetime_index(panel.index.get_level_values(t_level), "panel datetime level")
        if times.hasnans:
            raise InputError(f"panel datetime level has NaT at row {int(np.argmax(times.isna()))}")
        raw = panel.index.get_level_values(i_level)
        inst = raw.map(instrument_name)
        if inst.nunique() != raw.nunique():
            pairs = pd.Series(raw.unique()).groupby(pd.Index(raw.unique()).map(instrument_name))
            clash = next(list(g) for _, g in pairs if len(g) > 1)
            raise InputError(
                f"panel instruments {clash[0]!r} and {clash[1]!r} are both instrument "
                f"{instrument_name(clash[0])!r}; give every instrument one distinct name"
            )
        body = clean_columns(panel.reset_index(drop=True), "panel")
        body.index = times
        frames = {name: g for name, g in body.groupby(np.asarray(inst), sort=True)}
    else:
        raise InputError(
            f"panel must be a DataFrame or a dict of DataFrames, got {type(panel).__name__}"
        )
    tzs = {str(df.index.tz) for df in frames.values()}
    if len(tzs) > 1:
        raise InputError(
            f"the panel's instruments are in different time zones {sorted(tzs)} (None: naive); "
            "give them all in one zone, or all naive"
        )
    out = {}
    unsorted = []
    for name, df in frames.items():
        if df.index.has_duplicates:
            raise InputError(
                f"instrument {name!r} has a duplicated timestamp {df.index[df.index.duplicated()][0]}"
            )
        if not df.index.is_monotonic_increasing:
            unsorted.append(name)
            df = df.sort_index()
        clean = clean_columns(df, f"instrument {name!r}")
        missing = missing_prices(clean.columns)
        if missing:
            raise InputError(
                f"instrument {name!r} is missing price column(s) {missing}; it has {list(df.columns)}"
            )
        out[name] = clean
    if unsorted:
        warnings.warn(
            f"panel rows were not in time order for {len(unsorted)} instrument(s) (first {unsorted[0]!r}); "
            "sorted them",
            stacklevel=3,
        )
    return out
