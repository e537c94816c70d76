"""Bar sources for fine-tuning: a Qlib provider, a folder of CSV files, or a pandas panel.

Each returns a list of ``windows.Series`` sorted by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kronos_alpha.inference.panel import InputError, clean_columns, priced_mask

from .windows import Series, series_from_frame


def panel_series(panel, time_column: str | None = None) -> list[Series]:
    """A dict {name: DataFrame} or a DataFrame indexed by (instrument, datetime)."""
    if isinstance(panel, pd.DataFrame):
        if not isinstance(panel.index, pd.MultiIndex) or panel.index.nlevels != 2:
            raise InputError("a panel DataFrame needs a two-level (instrument, datetime) index")
        panel = {str(k): g.droplevel(0) for k, g in panel.groupby(level=0, sort=True)}
    if not isinstance(panel, dict) or not panel:
        raise InputError(
            "the panel must be a non-empty dict of DataFrames or a (instrument, datetime) DataFrame"
        )
    return [series_from_frame(panel[k], str(k), time_column) for k in sorted(panel)]


def csv_series(folder, time_column: str = "timestamps") -> list[Series]:
    """Every ``*.csv`` / ``*.csv.gz`` file in ``folder`` is one instrument named after the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"data.csv_dir {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise InputError(f"data.csv_dir {str(folder)!r} holds no .csv or .csv.gz files")
    out = []
    for p in files:
        df = pd.read_csv(p)
        if time_column not in df.columns:
            raise InputError(f"{p}: no timestamp column {time_column!r}; it has {list(df.columns)}")
        out.append(series_from_frame(df, p.name.split(".csv")[0], time_column))
    return out


def qlib_series(
    provider_uri: str,
    market: str,
    start,
    end,
    fields=("open", "high", "low", "close", "volume"),
    region: str = "cn",
    freq: str = "day",
    instruments: list[str] | None = None,
) -> list[Series]:
    """Bars from a Qlib provider. Qlib has no amount field here: it is derived from volume
    (``ohlcv_matrix``). Calendar days missing inside a series (e.g. outside index
    membership) become suspended bars, so no window jumps over them. ``instruments``, when
    given, replaces the market's universe."""
    import qlib
    from qlib.data import D

    if not Path(provider_uri).expanduser().is_dir():
        raise FileNotFoundError(f"data.provider_uri {provider_uri!r} is not a folder")
    qlib.init(provider_uri=str(Path(provider_uri).expanduser()), region=region)
    cal = pd.DatetimeIndex(D.calendar(start_time=start, end_time=end, freq=freq))
    if len(cal) == 0:
        raise InputError(f"the Qlib calendar has no {freq} bars between {start} and {end}")
    exprs = [f"${f}" for f in fields]
    universe = list(instruments) if instruments else D.instruments(market)
    df = D.features(universe, exprs, start_time=start, end_time=end, freq=freq)
    if df is None or df.empty:
        what = f"instruments {list(instruments)[:5]}" if instruments else f"market {market!r}"
        raise InputError(f"Qlib {what} has no bars between {start} and {end}")
    df = clean_columns(df, f"Qlib market {market!r}")
    out = []
    for name, g in df.groupby(level="instrument", sort=True):
        g = g.droplevel("instrument")
        g = g.reindex(cal[(cal >= g.index[0]) & (cal <= g.index[-1])])
        if "volume" in g.columns:
            g.loc[~priced_mask(g), "volume"] = np.nan
        out.append(series_from_frame(g, str(name)))
    return out
