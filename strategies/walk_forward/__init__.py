"""Walk-forward evaluation of Kronos against honest baselines, window by window.

    from kronos_alpha.strategies.walk_forward import run_walk_forward
    summary = run_walk_forward("examples/walk_forward_csi300.yaml")

or ``kronos-alpha walk-forward --config FILE``. The report (markdown, PNG charts, one table of
every model against every metric) is written by ``report``.

Modules: ``config`` (defaults, checks, the one ForecastSettings of the run), ``data`` (panel,
calendar, point-in-time membership), ``windows`` (RollingGen, purge check, the decision grid
and calibration dates), ``baselines`` (price signals, historical volatility, LightGBM on
Alpha158), ``stacked`` (LightGBM on Alpha158 + Kronos features), ``kronos`` (forecasters,
fine-tunes), ``calibration`` (each window's rolling calibration), ``run`` (windows computed
or read back, the run), ``probabilistic`` and ``report``.

Windows. Qlib's ``RollingGen`` (sliding, ``step`` trading days, ``trunc_days = horizon + 1``)
rolls a task template whose segments are train / valid / test, the test segment being the
whole out-of-sample span (RollingGen cuts it into ``step``-day pieces; it stops when a full
step no longer fits the calendar, so up to ``step - 1`` final bars go untested - the CSI300
example loses 2022-12-29/30, whose 5-bar labels do not exist anyway). The template's model is
the LightGBM baseline. Qlib's ``TaskManager`` is not used: it needs a MongoDB server;
resumability comes from one result folder per finished window (JSON and parquet, no pickle;
see ``run``), plus the Alpha158 frames as parquet, the forecaster's disk cache and the
fine-tuning run's own resumable state. ``handler_mod`` is not used either: the
Alpha158 features are computed once for the whole span (every Alpha158 expression looks
backwards only, and no processor is fitted on data), and each window takes its rows.
Qlib's ``LGBModel.fit`` logs every boosting round to an MLflow recorder, so the baseline calls
lightgbm directly with the same parameters instead of opening an experiment store per window.

Per window (train segment, valid segment, test segment), with h = the label horizon:
- Purge: valid ends >= h + 1 bars before the test starts (RollingGen's trunc_days) and train
  ends h + 1 bars before valid starts, so no training label (t -> t + h) reaches a later
  segment. Checked for every window (``LookAheadError``).
- Decision dates: every ``decision_every``-th trading day from the out-of-sample start (one
  global grid), those inside the test segment.
- Universe at t: CSI300 members at t (point-in-time spans of the instruments file) among the
  sampled instruments, with a traded bar at t (volume > 0), and - when Kronos runs - a Kronos
  forecast (>= ``lookback`` traded bars of history). Every model is scored on these pairs.
- Models (signal = expected h-bar return, higher is better):
  zero_info     seeded random scores (no information; calibrates the t-statistics)
  reversal_5d   -(close_t / close_{t-5} - 1)
  momentum_20d  close_t / close_{t-20} - 1
  lgb_alpha158  LightGBM on Qlib's Alpha158 without VWAP0 (the data has no $vwap:
                ``Alpha158Checked`` leaves the feature out instead of reading an all-NaN
                column), label Ref($close, -h) / $close - 1, CS-z-scored; fitted on the
                train segment, early-stopped on the valid segment (refit every ``every``
                windows; windows between use the latest earlier fit)
  kronos_zero_shot  the base checkpoint through the shared ``Forecaster`` (one per checkpoint,
                built once and kept; every Kronos forecast uses the run's one
                ``ForecastSettings``, built from the kronos block; sampled returns from
                ``Forecaster.sample_returns_``)
  lgb_alpha158_kronos  the same LightGBM on Alpha158 + ``kronos_features`` of the zero-shot
                forecaster (forecast statistics; with ``components`` the embedding's PCs,
                the PCA fitted on the train segment), its train / valid rows on a sparse
                date grid (``lightgbm.kronos_features.every``); see ``stacked``
  kronos_finetuned  the base checkpoint fine-tuned (``kronos_alpha.finetune``) on the train /
                valid segments (every ``every`` windows; windows between use the latest
                earlier fine-tune)
  kronos_calibrated, kronos_finetuned_calibrated  the same forecasters calibrated in each
                window on its past only (``Forecaster.calibrate`` on the grid dates of the
                last ``kronos.calibration.days`` bars whose outcomes are realised before the
                test starts; see ``calibration``): same signal (pred_return), calibrated
                distribution (99 calibrated quantiles for coverage / CRPS, calibrated prob_up)
- No look-ahead: fits get a panel cut at the valid end (fine-tuning) or rows of the train and
  valid segments (LightGBM); forecasts get a panel cut at the window's last decision date and
  the Forecaster uses only bars <= t for decision time t; calibration panels end before the
  test starts and each calibrator reads outcomes up to its last date + h only; the embedding
  PCA sees train rows only. tests/test_walk_forward.py plants a price spike inside a test
  segment and checks that nothing decided before it changes (calibrators included);
  tests/test_walk_forward_calibration.py and tests/test_walk_forward_stacked.py plant
  futures on synthetic data for the calibration and the stacked baseline.
"""

from .baselines import LGB_PARAMS, alpha158_frames, fit_lgb, hist_vol, price_signals
from .config import (
    DEFAULTS,
    FREE_FORM,
    MODELS,
    LookAheadError,
    WalkForwardConfigError,
    enabled_models,
    forecast_settings,
    load_config,
    model_paths,
)
from .data import Data
from .kronos import Forecasters, finetune_window, kronos_forecast
from .run import read_window, run_walk_forward, run_window, save_window, window_folder
from .windows import check_purged, lgb_task_template, rolling_windows


def __getattr__(name):
    if name == "Alpha158Horizon":  # built on first use: importing Qlib's handlers is slow
        from .baselines import alpha158_class

        return alpha158_class()
    raise AttributeError(name)


__all__ = [
    "DEFAULTS",
    "FREE_FORM",
    "LGB_PARAMS",
    "MODELS",
    "Data",
    "Forecasters",
    "LookAheadError",
    "WalkForwardConfigError",
    "alpha158_frames",
    "check_purged",
    "enabled_models",
    "finetune_window",
    "fit_lgb",
    "forecast_settings",
    "hist_vol",
    "kronos_forecast",
    "lgb_task_template",
    "load_config",
    "model_paths",
    "price_signals",
    "read_window",
    "rolling_windows",
    "run_walk_forward",
    "run_window",
    "save_window",
    "window_folder",
]
