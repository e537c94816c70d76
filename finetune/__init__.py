"""kronos_alpha.finetune: train the Kronos tokenizer and predictor on your own bars.

    from kronos_alpha.finetune import FinetuneConfig, run_finetune
    result = run_finetune(FinetuneConfig.from_yaml("examples/finetune_csi300.yaml"))

or ``kronos-alpha finetune --config FILE``; under ``torchrun`` the same call trains with
DDP. See finetune/README.md for the data policy and the output folder.
"""

from .checkpoint import CheckpointWriteError, save_pretrained_atomic
from .config import ConfigError, DataConfig, FinetuneConfig, StageConfig
from .objectives import PredictorObjective, TokenizerObjective
from .run import build_datasets, run_finetune
from .runtime import Runtime
from .state import load_state
from .trainer import StopTraining, Trainer
from .windows import Series, WindowDataset, epoch_order, normalize_window, split_windows

__all__ = [
    "CheckpointWriteError",
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "PredictorObjective",
    "Runtime",
    "Series",
    "StageConfig",
    "StopTraining",
    "TokenizerObjective",
    "Trainer",
    "WindowDataset",
    "build_datasets",
    "epoch_order",
    "load_state",
    "normalize_window",
    "run_finetune",
    "save_pretrained_atomic",
    "split_windows",
]
