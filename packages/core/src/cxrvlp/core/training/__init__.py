"""Training helpers shared by the method packages: configs, LR schedules, checkpoints, the Accelerate loop."""

from cxrvlp.core.training.checkpoint import (
    LoadReport,
    apply_key_map,
    extract_state_dict,
    load_pretrained_weights,
    load_safetensors,
    load_state_dict_strict,
    read_pretrained_config,
    safe_load,
    save_pretrained,
    save_safetensors,
    sha256_file,
    strip_prefixes,
)
from cxrvlp.core.training.config import (
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from cxrvlp.core.training.loop import TrainingTask, TrainResult, TrainState, run_training
from cxrvlp.core.training.optim import build_optimizer, split_decay_groups
from cxrvlp.core.training.schedules import SchedulePosition, build_schedule
from cxrvlp.core.training.task import TaskModule, exported_model, scalar_logs, sum_losses

__all__ = [
    "LoadReport",
    "OptimizerConfig",
    "ScheduleConfig",
    "SchedulePosition",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TaskModule",
    "TrainingTask",
    "apply_key_map",
    "build_optimizer",
    "build_schedule",
    "config_from_dict",
    "config_to_dict",
    "exported_model",
    "extract_state_dict",
    "load_config",
    "load_pretrained_weights",
    "load_safetensors",
    "load_state_dict_strict",
    "read_pretrained_config",
    "run_training",
    "safe_load",
    "save_config",
    "save_pretrained",
    "save_safetensors",
    "sha256_file",
    "scalar_logs",
    "split_decay_groups",
    "strip_prefixes",
    "sum_losses",
]
