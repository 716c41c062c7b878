"""Typed, frozen, validated job configuration built from YAML plus ``--set`` overrides.

- ``schema``: the dataclasses, one per YAML section, with their defaults (a key that is
  not a field is unknown; a value is converted to the field's type).
- ``loading``: ``load_config`` / ``config_from_dict`` / ``replace`` build a ``Config``
  from YAML, a mapping or dotted overrides, and ``validate`` checks ranges and cross-key
  rules; every error names the dotted key and what is allowed.
- ``sources``: the Spark reader options a data source asks for (``reader_options``).

Import from here; the names below are the package's interface.
"""

from wals_roberta.jobs.config.loading import (
    MLFLOW_MISSING,
    config_from_dict,
    load_config,
    metric_cut,
    replace,
    validate,
)
from wals_roberta.jobs.config.schema import (
    TABLE_NAME,
    ConfidenceForm,
    Config,
    DataConfig,
    EncoderConfig,
    EvaluateConfig,
    FileFormat,
    FinetuneConfig,
    InteractionsInput,
    ItemsInput,
    OutputConfig,
    ProjectionConfig,
    RecommendConfig,
    RefreshConfig,
    SparkConfig,
    SplitConfig,
    TrackingConfig,
    TuneConfig,
    ValidationConfig,
    WalsConfig,
)

__all__ = [
    "MLFLOW_MISSING",
    "TABLE_NAME",
    "ConfidenceForm",
    "Config",
    "DataConfig",
    "EncoderConfig",
    "EvaluateConfig",
    "FileFormat",
    "FinetuneConfig",
    "InteractionsInput",
    "ItemsInput",
    "OutputConfig",
    "ProjectionConfig",
    "RecommendConfig",
    "RefreshConfig",
    "SparkConfig",
    "SplitConfig",
    "TrackingConfig",
    "TuneConfig",
    "ValidationConfig",
    "WalsConfig",
    "config_from_dict",
    "load_config",
    "metric_cut",
    "replace",
    "validate",
]
