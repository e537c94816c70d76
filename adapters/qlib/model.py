"""KronosModel: Kronos as a Qlib ``Model`` for workflow YAMLs.

``task.model``::

    class: KronosModel
    module_path: kronos_alpha.adapters.qlib
    kwargs: {lookback: 90, horizon: 2, sample_count: 5, signal: pred_return}

The model is a thin shell over :class:`kronos_alpha.Forecaster` (the one inference path):
``predict`` turns the handler's raw bars into a panel, asks the forecaster for the decision
dates of the segment, and returns one column of its table as the score.

The handler holds bars after a decision date (up to the segment's end); the forecaster never
reads them, prices or times: the future bar times come from the settings' ``calendar``, by
default the exchange the instrument codes name, else the one of Qlib's region (cn: XSHG,
us: XNYS). A prediction at t equals one from a handler that ends at t.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from qlib.data.dataset import DatasetH, TSDatasetH
from qlib.log import get_module_logger
from qlib.model.base import ModelFT

from kronos_alpha.inference.exchange import infer_exchange
from kronos_alpha.inference.forecaster import Forecaster
from kronos_alpha.inference.panel import PRICE_COLS, InputError
from kronos_alpha.inference.settings import ForecastSettings, SettingsError, merge_mappings

from .calibration import check_calibration_param, fit_calibration
from .checks import check_benchmark, segment_slice
from .handler import raw_bars

log = get_module_logger("kronos_alpha")  # Qlib's logger: shows up in qrun's output

SIGNALS = ("pred_return", "ret_mean", "ret_median", "return_risk", "prob_up")
# Qlib's label Ref($close, -2)/Ref($close, -1) - 1 spans the two closes after t (t+1 -> t+2):
# a forecast must reach t+2 to cover it, so the model's default horizon is 2, not 10.
QLIB_HORIZON = 2
OWN_PARAMS = ("model", "tokenizer", "signal", "finetune_config", "benchmark", "settings",
              "calibrate", "calibration_every", "calibration_tune")  # fmt: skip
CALIBRATION_PARAMS = {"calibrate": True, "calibration_every": 1, "calibration_tune": False}
# changing one of these makes the forecaster built from them stale
FORECASTER_INPUTS = ("model", "tokenizer", "settings")


def qlib_settings(settings, fields: dict) -> ForecastSettings:
    """The model's ForecastSettings: a ForecastSettings is taken as it is; a mapping (a YAML
    block) and ``fields`` change the defaults, which are ForecastSettings' with horizon 2."""
    unknown = sorted(set(fields) - set(ForecastSettings.names()))
    if unknown:
        raise SettingsError(
            f"KronosModel has no parameter {unknown[0]!r}; it takes {list(OWN_PARAMS)} and the "
            f"ForecastSettings fields {list(ForecastSettings.names())}"
        )
    if isinstance(settings, ForecastSettings):
        return settings.replace(**fields) if fields else settings
    if settings is not None and not isinstance(settings, dict):
        raise SettingsError(
            f"settings must be a ForecastSettings or a mapping, got {type(settings).__name__}"
        )
    return ForecastSettings.build(
        ForecastSettings(horizon=QLIB_HORIZON), **{**(settings or {}), **fields}
    )


def auto_calendar(settings: ForecastSettings, codes) -> ForecastSettings:
    """``calendar=None`` (auto): the exchange the codes name, else Qlib's region's."""
    if settings.calendar is not None:
        return settings
    from qlib.config import C

    found = infer_exchange(codes, region=C.get("region"))
    return settings if found is None else settings.replace(calendar=found)


def check_signal(signal, settings) -> None:
    """``signal`` is one of SIGNALS; ``return_risk`` needs at least two samples to spread."""
    if signal is not None and signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    if signal == "return_risk" and settings is not None and settings.sample_count < 2:
        raise ValueError(
            "signal 'return_risk' divides by the spread of the samples: it needs sample_count >= 2"
        )


class KronosModel(ModelFT):
    """Kronos as a Qlib model. Every prediction goes through :class:`kronos_alpha.Forecaster`.

    ``KronosModel(model, tokenizer, signal, finetune_config, benchmark, settings, **fields)``:
    ``settings`` is a :class:`ForecastSettings` (or a mapping of its fields) and ``fields`` are
    ForecastSettings fields too, so a YAML's flat ``kwargs: {lookback: 90, horizon: 2}`` keeps
    working; they are stored as the one public ``settings`` (Qlib's pickling keeps it) and
    each is readable (and assignable, validated again) as an attribute: ``m.lookback``.

    The one default that differs from ForecastSettings' is ``horizon=2`` (when neither a
    ForecastSettings nor a horizon is given): Qlib's standard label
    ``Ref($close, -2)/Ref($close, -1) - 1`` spans the two closes after the decision time t
    (trade at the close of t+1, hold to t+2), so a forecast shorter than two bars could not
    cover what the backtest and the IC analysis score.

    ``signal`` picks the score: ``pred_return`` (the forecaster's predicted return),
    ``ret_mean``, ``ret_median``, ``return_risk`` (ret_mean / ret_std, needs sample_count >= 2)
    or ``prob_up``. ``finetune_config`` makes ``fit`` fine-tune (see :meth:`finetune`);
    ``benchmark`` is checked in ``fit``.

    ``calibrate`` (default true): ``fit`` calibrates the forecast distribution on the
    dataset's ``valid`` segment (see ``kronos_alpha.adapters.qlib.calibration``), on every
    ``calibration_every``-th date, also choosing (T, top_p) when ``calibration_tune``; with
    no valid segment it logs that no calibration was fitted. The fit is plain data in
    ``calibrator`` (a dict, kept by Qlib's pickling) and ``calibration_report``. The score
    ``pred_return`` is not changed by it; ``forecast()``'s quantiles, ret_median, ret_std
    and prob_up (and so the ``prob_up``, ``ret_median`` and ``return_risk`` signals) are the
    calibrated ones.
    """

    def __init__(
        self,
        model=None,
        tokenizer=None,
        signal: str = "pred_return",
        finetune_config: dict | None = None,
        benchmark: str | None = None,
        settings: ForecastSettings | dict | None = None,
        calibrate: bool = True,
        calibration_every: int = 1,
        calibration_tune: bool = False,
        **fields,
    ):
        super().__init__()
        if finetune_config is not None and not isinstance(finetune_config, dict):
            raise ValueError(
                f"finetune_config must be a mapping (FinetuneConfig fields), got {finetune_config!r}"
            )
        self.model, self.tokenizer = model, tokenizer
        self.signal = signal
        self.settings = qlib_settings(settings, fields)
        self.finetune_config = finetune_config
        self.finetuned = None  # the fine-tuning summary, when fit() fine-tuned
        # the backtest's benchmark, when given, is checked in fit(): before the long predict
        # rather than after it, where Qlib's backtest would fail on it
        if benchmark is not None and not isinstance(benchmark, str):
            raise SettingsError(
                f"benchmark must be an instrument code (e.g. 'SH000300'), got {benchmark!r}"
            )
        self.benchmark = benchmark
        self.fitted_on = None  # the data range fit() saw
        self.last_report = None  # the forecaster's counts from the last predict()
        self.calibrate, self.calibration_every = calibrate, calibration_every
        self.calibration_tune = calibration_tune
        self.calibrator = None  # the fitted calibration as plain data (Calibrator.to_dict())
        self.calibration_report = None

    # Settings read and write through the one validated object.
    def __getattr__(self, name):
        if name in ForecastSettings.names() and "settings" in vars(self):
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in ForecastSettings.names():
            name, value = "settings", self.settings.replace(**{name: value})
        if name == "settings":
            if not isinstance(value, ForecastSettings):
                raise SettingsError(
                    f"settings must be a ForecastSettings, got {type(value).__name__}"
                )
            check_signal(vars(self).get("signal"), value)
        elif name == "signal":
            check_signal(value, vars(self).get("settings"))
        elif name in CALIBRATION_PARAMS:
            check_calibration_param(name, value)
        if name in ("model", "tokenizer") and vars(self).get("calibrator") is not None:
            log.warning(
                "KronosModel: %s changed; the calibration fitted for the old one is dropped", name
            )
            vars(self)["calibrator"] = vars(self)["calibration_report"] = None
        object.__setattr__(self, name, value)
        if name in FORECASTER_INPUTS:
            vars(self).pop("_forecaster", None)

    def __setstate__(self, state: dict) -> None:
        # a params.pkl written before the settings were one object holds them one by one
        state = dict(state)
        if "settings" not in state:
            old = {k: state.pop(k) for k in ForecastSettings.names() if k in state}
            state["settings"] = ForecastSettings.build(None, **old)
        for k, v in {**CALIBRATION_PARAMS, "calibrator": None, "calibration_report": None}.items():
            state.setdefault(k, v)  # a params.pkl from before calibration
        super().__setstate__(state)

    # The forecaster holds torch modules: built lazily and kept under "_" so that Qlib's
    # pickling drops it; a model loaded from params.pkl builds it again from the settings
    # and the public ``calibrator`` (plain data).
    def forecaster(self) -> Forecaster:
        fc = getattr(self, "_forecaster", None)
        if fc is None:
            fc = Forecaster(self.model, self.tokenizer, settings=self.settings)
            fc.set_calibrator(vars(self).get("calibrator"))
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
        seg = segment_slice(dataset, "train") if "train" in dataset.segments else slice(None, None)
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
            segs = [segment_slice(dataset, k) for k in dataset.segments]
            check_benchmark(
                self.benchmark, self.fitted_on["start"], max(pd.Timestamp(g.stop) for g in segs)
            )
        if self.finetune_config is not None:
            log.info(
                "KronosModel.fit: train data %s; fine-tuning (finetune_config given)",
                self.fitted_on,
            )
            self.finetune(dataset)
        else:
            log.info(
                "KronosModel.fit: no fine-tuning; the pretrained weights are used as they are. "
                "Train data: %s",
                self.fitted_on,
            )
        return self.fit_calibration(dataset)

    def fit_calibration(self, dataset):
        """Calibrate on the dataset's valid segment (``calibrate``), or log why not."""
        return fit_calibration(self, dataset)

    def finetune(self, dataset, **overrides):
        """Fine-tune tokenizer and predictor with ``kronos_alpha.finetune`` on the dataset's
        train and valid segments (bars up to the end of valid only), then predict with the
        best checkpoints. ``finetune_config`` (and ``overrides``) are FinetuneConfig fields;
        ``data.train``/``data.valid``, ``data.lookback``/``data.horizon`` and the stages'
        ``init`` default to the dataset's segments and this model's settings.
        """
        from kronos_alpha.finetune import FinetuneConfig, run_finetune

        self._check_dataset(dataset)
        conf = merge_mappings(self.finetune_config or {}, overrides)
        data = conf.setdefault("data", {})
        data.setdefault("source", "panel")
        data.setdefault("lookback", self.lookback)
        data.setdefault("horizon", self.horizon)
        for split in ("train", "valid"):
            if split not in data:
                seg = segment_slice(dataset, split)
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
        bars = bars[~bars[PRICE_COLS].isna().all(axis=1)]
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
        table = self.forecast(dataset, segment)
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

    def forecast(self, dataset, segment="test") -> pd.DataFrame:
        """The forecaster's whole table (calibrated once ``fit`` calibrated) for every
        (datetime, instrument) of the segment that is scored; ``predict`` takes its signal."""
        self._check_dataset(dataset)
        seg = segment_slice(dataset, segment)
        bars = raw_bars(dataset.handler, seg.stop)
        no_bar = bars[PRICE_COLS].isna().all(axis=1)
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
        codes = targets.get_level_values("instrument").unique()
        settings = auto_calendar(fc.settings, codes)
        fc = fc if settings is fc.settings else fc.with_settings(settings)
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
        return table

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
