"""Loading the OHLCV panel and the benchmark returns from a Qlib provider folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kronos_alpha.inference.panel import clean_columns

from .errors import StrategyInputError

FIELDS = ["$open", "$high", "$low", "$close", "$volume", "$factor"]


def init_qlib(provider_uri: str | Path, region: str = "cn") -> None:
    import qlib
    from qlib.config import C

    uri = str(Path(provider_uri).resolve())
    if not Path(uri).is_dir():
        raise FileNotFoundError(f"Qlib provider folder not found: {uri}")
    if getattr(C, "registered", False) and str(C.get("provider_uri", {}).get("day", "")) == uri:
        return
    qlib.init(provider_uri=uri, region=region, kernels=1)


def load_panel(
    provider_uri: str | Path,
    instruments: str | list[str] = "csi300",
    start: str | None = None,
    end: str | None = None,
    benchmark: str = "SH000300",
    region: str = "cn",
) -> tuple[pd.DataFrame, pd.Series]:
    """``instruments``: a Qlib pool name (``csi300``), a list, or a comma-separated string.

    Returns (panel indexed by (datetime, instrument) with open high low close volume factor,
    benchmark daily close-to-close return by date)."""
    init_qlib(provider_uri, region)
    from qlib.data import D

    if isinstance(instruments, str) and "," in instruments:
        instruments = [s.strip() for s in instruments.split(",") if s.strip()]
    pool = D.instruments(instruments) if isinstance(instruments, str) else list(instruments)
    panel = D.features(pool, FIELDS, start_time=start, end_time=end)
    if panel.empty:
        raise StrategyInputError(f"no data for {instruments!r} between {start} and {end}")
    panel = clean_columns(panel, f"Qlib features of {instruments!r}", features_only=False)
    panel = panel.swaplevel().sort_index()
    panel.index.names = ["datetime", "instrument"]
    bench = D.features([benchmark], ["$close"], start_time=start, end_time=end)
    if bench.empty:
        raise StrategyInputError(f"benchmark {benchmark} has no data between {start} and {end}")
    close = bench["$close"].droplevel(0)
    close.index = pd.DatetimeIndex(close.index, name="datetime")
    return panel, (close / close.shift(1) - 1).rename(benchmark)
