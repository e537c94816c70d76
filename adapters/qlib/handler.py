"""The handler of raw OHLCV bars Kronos reads, and ``raw_bars``: any Qlib handler's
unprocessed features through the one input boundary (``kronos_alpha.inference.panel``)."""

from __future__ import annotations

import pandas as pd
from kronos_alpha.strategies.alpha158 import has_field, provider_folder
from qlib.contrib.data.handler import check_transform_proc
from qlib.data.dataset.handler import DataHandler, DataHandlerLP

from kronos_alpha.inference.panel import (
    AMOUNT_COL,
    PRICE_COLS,
    VOLUME_COL,
    InputError,
    clean_columns,
    missing_prices,
    numeric_matrix,
)

from .checks import missing_field_files

# Qlib's standard label: the return from the next close to the one after (trade at t+1).
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


class KronosHandler(DataHandlerLP):
    """Raw bars for Kronos: ``open high low close volume`` (and ``amount`` when the data has it;
    otherwise the forecaster derives it as volume * mean(OHLC), as upstream does), plus
    Qlib's standard label ``Ref($close, -2)/Ref($close, -1) - 1`` as ``LABEL0``.

    No feature processors by default: Kronos normalises each context window itself, and a
    cross-sectional normaliser would destroy the prices it reads. ``full_history`` loads each
    market member's bars from before it joined the market too (the context needs them) and
    keeps the membership spans in ``membership`` so that scores are only given to members.
    """

    def __init__(
        self,
        instruments="csi300",
        start_time=None,
        end_time=None,
        freq="day",
        infer_processors=None,
        learn_processors=None,
        fit_start_time=None,
        fit_end_time=None,
        amount="auto",
        label=(LABEL,),
        full_history=True,
        filter_pipe=None,
        inst_processors=None,
        **kwargs,
    ):
        from qlib.data import D

        self.freq = freq
        if amount == "auto":
            amount = has_field(AMOUNT_COL, freq) is not False
        self.fields = PRICE_COLS + [VOLUME_COL] + ([AMOUNT_COL] if amount else [])
        self.membership = None
        if full_history and isinstance(instruments, (str, dict)):
            pool = D.instruments(instruments) if isinstance(instruments, str) else instruments
            spans = D.list_instruments(pool, start_time=start_time, end_time=end_time, freq=freq)
            self.membership = {
                k: [(pd.Timestamp(s), pd.Timestamp(e)) for s, e in v] for k, v in spans.items()
            }
            instruments = sorted(self.membership)
        if isinstance(label, str):
            label = [label]
        data_loader = {
            "class": "QlibDataLoader",
            "kwargs": {
                "config": {
                    "feature": ([f"${f}" for f in self.fields], list(self.fields)),
                    "label": (list(label), [f"LABEL{i}" for i in range(len(label))]),
                },
                "filter_pipe": filter_pipe,
                "freq": freq,
                "inst_processors": inst_processors,
            },
        }
        super().__init__(
            instruments=instruments,
            start_time=start_time,
            end_time=end_time,
            data_loader=data_loader,
            infer_processors=check_transform_proc(
                list(infer_processors or []), fit_start_time, fit_end_time
            ),
            learn_processors=check_transform_proc(
                list(
                    learn_processors if learn_processors is not None else [{"class": "DropnaLabel"}]
                ),
                fit_start_time,
                fit_end_time,
            ),
            **kwargs,
        )

    def setup_data(self, *args, **kwargs):
        super().setup_data(*args, **kwargs)
        self.check_fields()

    def check_fields(self) -> None:
        """Raise InputError when a bar field is absent from the provider folder."""
        raw = self._data
        if raw is None or raw.empty:
            return
        codes = raw.index.get_level_values("instrument").unique()
        missing = missing_field_files(codes, self.fields, self.freq)
        feature = raw["feature"] if "feature" in raw.columns.get_level_values(0) else raw
        for f in self.fields:
            if f in feature.columns and feature[f].isna().all():
                missing.setdefault(f, list(codes))
        if missing:
            root = provider_folder(self.freq)
            detail = "; ".join(
                f"{f}.{self.freq}.bin for {len(c)} instrument(s), e.g. {c[:3]}"
                for f, c in missing.items()
            )
            raise InputError(f"the Qlib provider folder {root} lacks {detail}")


def raw_bars(handler, end=None) -> pd.DataFrame:
    """The handler's unprocessed feature columns up to ``end`` as open/high/low/close[/volume/amount],
    indexed by (datetime, instrument). Column names go through ``panel.clean_columns``: two
    columns that are the same once lower-cased and without ``$`` are an error naming both."""
    if isinstance(handler, DataHandlerLP):
        try:
            df = handler.fetch(slice(None, end), col_set="feature", data_key=DataHandlerLP.DK_R)
        except (AttributeError, KeyError):  # drop_raw=True handlers keep no raw data
            raise InputError(
                f"{type(handler).__name__} keeps no raw data (drop_raw=True?); Kronos needs unprocessed prices"
            ) from None
    elif isinstance(handler, DataHandler):
        df = handler.fetch(slice(None, end), col_set="feature")
    else:
        raise InputError(
            f"dataset.handler must be a Qlib DataHandler, got {type(handler).__name__}"
        )
    bars = clean_columns(df, f"{type(handler).__name__} feature columns")
    missing = missing_prices(bars.columns)
    if missing:
        raise InputError(
            f"{type(handler).__name__} provides no {missing} column(s); Kronos needs raw open/high/low/close "
            f"(use kronos_alpha.adapters.qlib.KronosHandler). Feature columns: {list(df.columns)[:12]}"
        )
    what = f"{type(handler).__name__} feature columns"
    values = numeric_matrix(bars, list(bars.columns), what)  # text, bool, dates: named
    bars = pd.DataFrame(values, index=bars.index, columns=bars.columns)
    if bars.index.names == ["instrument", "datetime"]:
        bars = bars.swaplevel().sort_index()
    return bars
