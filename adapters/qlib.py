"""Kronos inside Qlib: a ``Model`` for workflow YAMLs and a handler of raw OHLCV bars.

``task.model``::

    class: KronosModel
    module_path: kronos_alpha.adapters.qlib
    kwargs: {lookback: 90, horizon: 2, sample_count: 5, signal: pred_return}

``dataset.kwargs.handler``::

    class: KronosHandler
    module_path: kronos_alpha.adapters.qlib

The model is a thin shell over :class:`kronos_alpha.Forecaster` (the one inference path):
``predict`` turns the handler's raw bars into a panel, asks the forecaster for the decision
dates of the segment, and returns one column of its table as the score.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from kronos_alpha.strategies.alpha158 import Alpha158Checked, has_field, provider_folder
from qlib.contrib.data.handler import check_transform_proc
from qlib.data.dataset import DatasetH, TSDatasetH
from qlib.data.dataset.handler import DataHandler, DataHandlerLP
from qlib.log import get_module_logger
from qlib.model.base import ModelFT

from kronos_alpha.inference.panel import InputError

log = get_module_logger("kronos_alpha")  # Qlib's logger: shows up in qrun's output

OHLC = ["open", "high", "low", "close"]
BAR_FIELDS = OHLC + ["volume", "amount"]
# Qlib's standard label: the return from the next close to the one after (trade at t+1).
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
SIGNALS = ("pred_return", "ret_mean", "ret_median", "return_risk", "prob_up")


def missing_field_files(codes, fields, freq: str = "day") -> dict[str, list[str]]:
    """field -> instruments whose ``features/<code>/<field>.<freq>.bin`` is absent.

    Qlib reads an absent field as all-NaN without a word; this is how we notice.
    """
    root = provider_folder(freq)
    if root is None:
        return {}
    out: dict[str, list[str]] = {}
    for code in codes:
        for f in fields:
            if not (root / "features" / str(code).lower() / f"{f}.{freq}.bin").exists():
                out.setdefault(f, []).append(str(code))
    return out


def check_benchmark(benchmark: str, start_time=None, end_time=None, freq: str = "day") -> None:
    """Raise InputError when the backtest benchmark has no close prices in the data.

    Qlib otherwise fails deep inside the backtest (or reports a flat benchmark).
    """
    from qlib.data import D

    try:
        df = D.features([benchmark], ["$close"], start_time, end_time, freq=freq)
    except (KeyError, ValueError, IndexError) as exc:
        raise InputError(
            f"benchmark {benchmark!r} cannot be read from the Qlib data: {exc}"
        ) from exc
    if df.empty or df["$close"].isna().all():
        root = provider_folder(freq)
        where = f" in {root}" if root else ""
        raise InputError(
            f"benchmark {benchmark!r} has no $close data{where} between {start_time} and {end_time}"
        )


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
            amount = has_field("amount", freq) is not False
        self.fields = OHLC + ["volume"] + (["amount"] if amount else [])
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


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return base


def _segment_slice(dataset, segment) -> slice:
    if isinstance(segment, str):
        if segment not in dataset.segments:
            raise InputError(f"dataset has no segment {segment!r}; it has {list(dataset.segments)}")
        segment = dataset.segments[segment]
    if isinstance(segment, slice):
        return segment
    start, end = segment
    return slice(start, end)


def raw_bars(handler, end=None) -> pd.DataFrame:
    """The handler's unprocessed feature columns up to ``end`` as open/high/low/close[/volume/amount]."""
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
    names = {c: str(c).lower().lstrip("$") for c in df.columns}
    if len(set(names.values())) != len(names):
        raise InputError(f"handler feature columns collide after dropping '$': {list(df.columns)}")
    df = df.rename(columns=names)
    missing = [c for c in OHLC if c not in df.columns]
    if missing:
        raise InputError(
            f"{type(handler).__name__} provides no {missing} column(s); Kronos needs raw open/high/low/close "
            f"(use kronos_alpha.adapters.qlib.KronosHandler). Feature columns: {list(df.columns)[:12]}"
        )
    df = df[[c for c in BAR_FIELDS if c in df.columns]].astype(np.float64)
    if df.index.names != ["datetime", "instrument"]:
        df = df.swaplevel().sort_index() if df.index.names == ["instrument", "datetime"] else df
    return df


class KronosModel(ModelFT):
    """Kronos as a Qlib model. Every prediction goes through :class:`kronos_alpha.Forecaster`.

    Parameters mirror the forecaster's; ``signal`` picks the score: ``pred_return`` (the
    forecaster's predicted return), ``ret_mean``, ``ret_median``, ``return_risk``
    (ret_mean / ret_std) or ``prob_up``.
    """

    def __init__(
        self,
        model=None,
        tokenizer=None,
        lookback: int = 90,
        horizon: int = 2,
        sample_count: int = 5,
        T: float = 1.0,
        top_k: int = 0,
        top_p: float = 0.9,
        seed: int = 0,
        device=None,
        dtype=None,
        max_context=None,
        batch_size=None,
        cache_dir=None,
        min_history=None,
        fill_suspended: bool = False,
        signal: str = "pred_return",
        progress: bool = True,
        finetune_config: dict | None = None,
        benchmark: str | None = None,
    ):
        super().__init__()
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
        if signal == "return_risk" and sample_count < 2:
            raise ValueError(
                "signal 'return_risk' divides by the spread of the samples: it needs sample_count >= 2"
            )
        self.model, self.tokenizer = model, tokenizer
        self.lookback, self.horizon, self.sample_count = lookback, horizon, sample_count
        self.T, self.top_k, self.top_p, self.seed = T, top_k, top_p, seed
        self.device, self.dtype, self.max_context, self.batch_size = (
            device,
            dtype,
            max_context,
            batch_size,
        )
        self.cache_dir, self.min_history, self.fill_suspended = (
            cache_dir,
            min_history,
            fill_suspended,
        )
        self.signal, self.progress = signal, progress
        if finetune_config is not None and not isinstance(finetune_config, dict):
            raise ValueError(
                f"finetune_config must be a mapping (FinetuneConfig fields), got {finetune_config!r}"
            )
        self.finetune_config = finetune_config
        self.finetuned = None  # the fine-tuning summary, when fit() fine-tuned
        # the backtest's benchmark, when given, is checked in fit(): before the long predict
        # rather than after it, where Qlib's backtest would fail on it
        self.benchmark = benchmark
        self.fitted_on = None  # the data range fit() saw
        self.last_report = None  # the forecaster's counts from the last predict()

    # The forecaster holds torch modules: built lazily and kept under "_" so that Qlib's
    # pickling drops it; a model loaded from params.pkl builds it again from the settings.
    def forecaster(self):
        fc = getattr(self, "_forecaster", None)
        if fc is None:
            from kronos_alpha import Forecaster

            fc = Forecaster(
                model=self.model,
                tokenizer=self.tokenizer,
                lookback=self.lookback,
                horizon=self.horizon,
                sample_count=self.sample_count,
                T=self.T,
                top_k=self.top_k,
                top_p=self.top_p,
                seed=self.seed,
                device=self.device,
                dtype=self.dtype,
                max_context=self.max_context,
                batch_size=self.batch_size,
                cache_dir=self.cache_dir,
                min_history=self.min_history,
                fill_suspended=self.fill_suspended,
                progress=self.progress,
            )
            self._forecaster = fc
        return fc

    def _check_dataset(self, dataset) -> None:
        if not isinstance(dataset, DatasetH):
            raise InputError(
                f"KronosModel needs a qlib DatasetH or TSDatasetH, got {type(dataset).__name__}"
            )
        if isinstance(dataset, TSDatasetH) and dataset.step_len < self.lookback:
            log.warning(
                "TSDatasetH step_len=%d is shorter than lookback=%d; KronosModel reads %d bars of context "
                "from the handler (set step_len: %d to make the YAML say what the model sees)",
                dataset.step_len,
                self.lookback,
                self.lookback,
                self.lookback,
            )

    def fit(self, dataset, reweighter=None):
        """Checks the data and records its range. With ``finetune_config`` it then fine-tunes
        on the train/valid segments (see :meth:`finetune`); otherwise the pretrained weights
        are used as they are."""
        if reweighter is not None:
            raise ValueError("KronosModel.fit does not use a reweighter")
        self._check_dataset(dataset)
        seg = _segment_slice(dataset, "train") if "train" in dataset.segments else slice(None, None)
        bars = raw_bars(dataset.handler, seg.stop)
        dates = bars.index.get_level_values("datetime")
        bars = bars[
            (dates >= pd.Timestamp(seg.start or dates.min()))
            & (dates <= pd.Timestamp(seg.stop or dates.max()))
        ]
        if bars.empty:
            raise InputError(
                f"the train segment {seg.start}..{seg.stop} has no data in the handler"
            )
        dates = bars.index.get_level_values("datetime")
        self.fitted_on = {
            "start": str(dates.min().date()),
            "end": str(dates.max().date()),
            "instruments": int(bars.index.get_level_values("instrument").nunique()),
            "rows": len(bars),
        }
        if self.benchmark:
            segs = [_segment_slice(dataset, k) for k in dataset.segments]
            check_benchmark(
                self.benchmark, self.fitted_on["start"], max(pd.Timestamp(g.stop) for g in segs)
            )
        if self.finetune_config is not None:
            log.info(
                "KronosModel.fit: train data %s; fine-tuning (finetune_config given)",
                self.fitted_on,
            )
            return self.finetune(dataset)
        log.info(
            "KronosModel.fit: no fine-tuning; the pretrained weights are used as they are. Train data: %s",
            self.fitted_on,
        )
        return self

    def finetune(self, dataset, **overrides):
        """Fine-tune tokenizer and predictor with ``kronos_alpha.finetune`` on the dataset's
        train and valid segments (bars up to the end of valid only), then predict with the
        best checkpoints. ``finetune_config`` (and ``overrides``) are FinetuneConfig fields;
        ``data.train``/``data.valid``, ``data.lookback``/``data.horizon`` and the stages'
        ``init`` default to the dataset's segments and this model's settings.
        """
        from kronos_alpha.finetune import FinetuneConfig, run_finetune

        self._check_dataset(dataset)
        conf = _merge(copy.deepcopy(self.finetune_config or {}), overrides)
        data = conf.setdefault("data", {})
        data.setdefault("source", "panel")
        data.setdefault("lookback", self.lookback)
        data.setdefault("horizon", self.horizon)
        for split in ("train", "valid"):
            if split not in data:
                seg = _segment_slice(dataset, split)
                data[split] = [
                    str(pd.Timestamp(seg.start).date()),
                    str(pd.Timestamp(seg.stop).date()),
                ]
        sources = {"predictor": self.model, "tokenizer": self.tokenizer}
        for stage, src in sources.items():
            if "init" not in conf.get(stage, {}):
                if not isinstance(src, (str, Path)):
                    raise ValueError(
                        f"fine-tuning starts from checkpoints: give KronosModel {('model' if stage == 'predictor' else 'tokenizer')}"
                        f" as a folder or Hub id (or finetune_config.{stage}.init), got {src!r}"
                    )
                conf.setdefault(stage, {})["init"] = str(src)
        conf.setdefault("output_dir", "kronos_finetune")
        conf.setdefault("progress", self.progress)
        cfg = FinetuneConfig.from_dict(conf)
        end = max(pd.Timestamp(cfg.data.train[1]), pd.Timestamp(cfg.data.valid[1]))
        bars = raw_bars(dataset.handler, end)
        bars = bars[~bars[OHLC].isna().all(axis=1)]
        panel = {str(k): g.droplevel("instrument") for k, g in bars.groupby(level="instrument")}
        result = run_finetune(cfg, panel=panel)
        if "model_path" not in result:
            raise RuntimeError(f"fine-tuning stopped before it finished; see {cfg.output_dir}")
        self.model, self.tokenizer = result["model_path"], result["tokenizer_path"]
        self._forecaster = None
        self.finetuned = {k: result.get(k) for k in ("output_dir", "model_path", "tokenizer_path")}
        log.info("KronosModel.finetune: predicting with %s", self.finetuned)
        return self

    def predict(self, dataset, segment="test") -> pd.Series:
        """Scores for every (datetime, instrument) of the segment with enough history."""
        self._check_dataset(dataset)
        seg = _segment_slice(dataset, segment)
        bars = raw_bars(dataset.handler, seg.stop)
        no_bar = bars[OHLC].isna().all(axis=1)
        bars = bars[~no_bar]  # Qlib's NaN rows mean "no bar that day" (not listed / no data)
        dates = bars.index.get_level_values("datetime")
        in_seg = np.ones(len(bars), dtype=bool)
        if seg.start is not None:
            in_seg &= dates >= pd.Timestamp(seg.start)
        if seg.stop is not None:
            in_seg &= dates <= pd.Timestamp(seg.stop)
        in_seg &= self._members(dataset.handler, bars.index)
        targets = bars.index[in_seg]
        if len(targets) == 0:
            span = f"{dates.min()}..{dates.max()}" if len(dates) else "nothing"
            raise InputError(
                f"segment {segment!r} ({seg.start}..{seg.stop}) has no data; the handler holds {span}"
            )
        # only instruments with something to score enter the panel (with their whole history)
        wanted = bars.index.get_level_values("instrument").isin(
            targets.get_level_values("instrument").unique()
        )
        fc = self.forecaster()
        table = fc.forecast(bars[wanted], dates=targets.get_level_values("datetime").unique())
        table = table.reindex(targets.intersection(table.index))
        self.last_report = dict(getattr(fc, "report", {}) or {})
        skipped = len(targets) - len(table)
        if skipped:
            log.warning(
                "KronosModel.predict: %d of %d (datetime, instrument) rows got no score (short history or "
                "suspension); forecaster report: %s",
                skipped,
                len(targets),
                self.last_report,
            )
        score = self.score(table).astype(np.float64)
        bad = ~np.isfinite(score.to_numpy())
        if bad.any():  # return_risk when every sampled path agrees (zero spread)
            log.warning(
                "KronosModel.predict: %d score(s) of signal %r are not finite; left out",
                bad.sum(),
                self.signal,
            )
            score = score[~bad]
        score.name = "score"
        return score.sort_index()

    def score(self, table: pd.DataFrame) -> pd.Series:
        if self.signal == "return_risk":
            return table["ret_mean"] / table["ret_std"].replace(0.0, np.nan)
        return table[self.signal]

    @staticmethod
    def _members(handler, index: pd.MultiIndex) -> np.ndarray:
        spans = getattr(handler, "membership", None)
        if not spans:
            return np.ones(len(index), dtype=bool)
        ok = np.zeros(len(index), dtype=bool)
        dates = index.get_level_values("datetime")
        groups = (
            pd.Series(np.arange(len(index)))
            .groupby(index.get_level_values("instrument").to_numpy())
            .indices
        )
        for code, pos in groups.items():
            for s, e in spans.get(code, ()):
                ok[pos] |= (dates[pos] >= s) & (dates[pos] <= e)
        return ok


__all__ = ["Alpha158Checked", "KronosHandler", "KronosModel", "check_benchmark", "raw_bars"]
