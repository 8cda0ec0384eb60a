"""Typed config for every stage: pydantic models, YAML recipes, `key.sub=value` overrides.

Precedence: command-line override > recipe file > default. Validation reports every problem at once. The models
live by stage (data.py, run.py, plan.py); this package exports them all, so `from megalang.config import X` works.
"""

from __future__ import annotations

from megalang.config.base import Section, T
from megalang.config.data import (
    CODE_SCRUB,
    DEFAULT_STEPS,
    SECURITY_SCRUB,
    ClassifierTrainConfig,
    CurriculumConfig,
    NearDedupConfig,
    PrepareConfig,
    SftFromConfig,
    SftTokenizeConfig,
    TokenizeConfig,
    TokenizerTrainConfig,
)
from megalang.config.federated import FederatedConfig
from megalang.config.load import (
    build_config,
    config_help,
    deep_merge,
    format_validation_error,
    load_config,
    load_yaml,
    parse_overrides,
    parse_scalar,
)
from megalang.config.plan import DataPlanConfig, PlanConfig, ShapeConfig
from megalang.config.run import (
    MOVED_KEYS,
    CanaryConfig,
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    EvalSetConfig,
    HealthConfig,
    LoraConfig,
    LossConfig,
    MetricsConfig,
    ModelConfig,
    OptimizerConfig,
    ParallelConfig,
    PrivacyConfig,
    RayConfig,
    RunConfig,
    RunSection,
    ScheduleConfig,
    TrainSection,
    move_old_keys,
)

__all__ = [
    "CheckpointConfig",
    "ClassifierTrainConfig",
    "CurriculumConfig",
    "CanaryConfig",
    "DataConfig",
    "FederatedConfig",
    "DistillConfig",
    "EvalSetConfig",
    "HealthConfig",
    "LoraConfig",
    "LossConfig",
    "MOVED_KEYS",
    "MetricsConfig",
    "ModelConfig",
    "NearDedupConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "DataPlanConfig",
    "PlanConfig",
    "PrepareConfig",
    "CODE_SCRUB",
    "DEFAULT_STEPS",
    "SECURITY_SCRUB",
    "PrivacyConfig",
    "RayConfig",
    "RunConfig",
    "RunSection",
    "ScheduleConfig",
    "Section",
    "SftFromConfig",
    "SftTokenizeConfig",
    "ShapeConfig",
    "T",
    "TokenizeConfig",
    "TokenizerTrainConfig",
    "TrainSection",
    "build_config",
    "config_help",
    "deep_merge",
    "format_validation_error",
    "load_config",
    "load_yaml",
    "move_old_keys",
    "parse_overrides",
    "parse_scalar",
]
