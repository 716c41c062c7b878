"""Loading and validation: YAML plus ``--set`` overrides into a frozen, checked ``Config``.

The schema (``schema``) says which keys exist and their types; this module walks it to
build the config, converts each value to its field's type, then checks ranges and
cross-key rules. Every error names the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import types
import typing
from collections import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from wals_roberta.jobs.config.overrides import apply_override, set_path, unknown_key_message
from wals_roberta.jobs.config.schema import (
    TABLE_NAME,
    Config,
    DataConfig,
    EncoderConfig,
    EvaluateConfig,
    FinetuneConfig,
    InteractionsInput,
    LeaseConfig,
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
from wals_roberta.jobs.config.sources import validate_reader_options
from wals_roberta.jobs.runs.errors import ConfigError, first_line

# spark.remote: what SparkSession.builder.remote() takes.
REMOTE = re.compile(r"sc://[^\s/]+(/.*)?|local(\[(\d+|\*)\])?")
# A number as text: what YAML 1.1 leaves a string, such as 3e-5 or 1E6.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
MLFLOW_MISSING = (
    "tracking.mlflow: true needs the mlflow package on the driver; install the extra "
    "with pip install 'wals-roberta[mlflow]' (or set tracking.mlflow=false)"
)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML file, apply ``key=value`` overrides, build and validate the config."""
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"--config: no such file: {file}")
        try:
            raw = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {file}: not valid YAML ({first_line(exc)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"--config {file}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(raw, item)
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a config from a nested mapping (tests, notebooks)."""
    cfg = _build(Config, dict(raw), "")
    validate(cfg)
    return cfg


def replace(cfg: Config, **dotted: Any) -> Config:
    """A copy of ``cfg`` with dotted keys changed, e.g. ``replace(cfg, **{"wals.rank": 8})``."""
    raw = cfg.to_dict()
    for key, value in dotted.items():
        set_path(raw, key, value)
    return config_from_dict(raw)


def validate(cfg: Config) -> None:
    """Range and cross-key checks, section by section; raises ConfigError naming the key."""
    _validate_spark(cfg.spark)
    _validate_data_and_output(cfg.data, cfg.output)
    validate_reader_options(cfg.data)
    _validate_lease(cfg.output.lease)
    _validate_tracking(cfg.tracking)
    _validate_wals(cfg.wals, cfg.data.interactions)
    _validate_split(cfg.split, cfg.data.interactions)
    _validate_recommend(cfg.recommend)
    _validate_encoder(cfg.encoder)
    _validate_finetune(cfg.encoder.finetune)
    _validate_projection(cfg.projection)
    _validate_validation(cfg.validation)
    _validate_refresh(cfg.refresh)
    _validate_tune(cfg.tune)
    _validate_evaluate(cfg.evaluate, cfg.split, cfg.recommend)


def metric_cut(metric: str) -> tuple[str, int] | None:
    """``("recall", 20)`` for ``recall@20``; None when it is not a metric@K."""
    name, _, cut = metric.partition("@")
    return (name, int(cut)) if cut.isdigit() and int(cut) > 0 else None


# --- one check per section, in the order validate runs them ----------------------------


def _validate_spark(spark: SparkConfig) -> None:
    remote = spark.remote
    _require(
        remote is None or REMOTE.fullmatch(remote) is not None,
        "spark.remote",
        "a Spark Connect URL (sc://host[:port][/;param=value...]) or local[N], or unset",
        remote,
    )


def _validate_data_and_output(data: DataConfig, output: OutputConfig) -> None:
    _require(bool(data.interactions.path), "data.interactions.path", "a path or table name")
    _require(bool(output.root), "output.root", "a directory (local, hdfs://, s3a://, dbfs:/)")
    keep = output.keep_runs
    _require(keep is None or keep > 0, "output.keep_runs", "an integer > 0 or unset", keep)
    table = output.table
    _require(
        table is None or TABLE_NAME.fullmatch(table) is not None,
        "output.table",
        "unset or a table name [catalog.]database.table of letters, digits and _",
        table,
    )


def _validate_lease(lease: LeaseConfig) -> None:
    for name in ("expiry_seconds", "wait_seconds"):
        value = getattr(lease, name)
        ok = 0 < value < float("inf")
        _require(ok, f"output.lease.{name}", "a finite number of seconds > 0", value)


def _validate_tracking(tr: TrackingConfig) -> None:
    _require(bool(tr.experiment.strip()), "tracking.experiment", "a non-empty experiment name")
    _require(tr.uri is None or bool(tr.uri.strip()), "tracking.uri", "unset or a URI", tr.uri)
    if tr.mlflow and importlib.util.find_spec("mlflow") is None:
        # Checked here so that the first stage fails, not the publish at the end of a long run.
        raise ConfigError(MLFLOW_MISSING)


def _validate_wals(w: WalsConfig, interactions: InteractionsInput) -> None:
    _require(w.rank > 0, "wals.rank", "an integer > 0", w.rank)
    _require(w.reg >= 0, "wals.reg", "a number >= 0", w.reg)
    _require(w.alpha >= 0, "wals.alpha", "a number >= 0", w.alpha)
    _require(w.iterations > 0, "wals.iterations", "an integer > 0", w.iterations)
    _require(w.log_epsilon > 0, "wals.log_epsilon", "a number > 0", w.log_epsilon)
    _require(w.user_blocks > 0, "wals.user_blocks", "an integer > 0", w.user_blocks)
    _require(w.item_blocks > 0, "wals.item_blocks", "an integer > 0", w.item_blocks)
    _require(w.checkpoint_interval > 0, "wals.checkpoint_interval", "an integer > 0")
    _require(w.cg_steps > 0, "wals.cg_steps", "an integer > 0", w.cg_steps)
    _require(
        w.cg_blocks is None or w.cg_blocks > 0,
        "wals.cg_blocks",
        "null or an integer > 0",
        w.cg_blocks,
    )
    _require(
        not (w.solver == "cg" and w.nonnegative),
        "wals.nonnegative",
        "false with wals.solver cg (non-negative factors need MLlib's NNLS solver)",
        w.nonnegative,
    )
    if w.confidence == "time_decay":
        _require(
            w.half_life_days is not None and w.half_life_days > 0,
            "wals.half_life_days",
            "a number > 0 when wals.confidence is time_decay",
            w.half_life_days,
        )
        _require(
            interactions.timestamp_col is not None,
            "data.interactions.timestamp_col",
            "a column name when wals.confidence is time_decay",
            None,
        )


def _validate_split(s: SplitConfig, interactions: InteractionsInput) -> None:
    _require(0 < s.fraction < 1, "split.fraction", "a number in (0, 1)", s.fraction)
    _require(0 <= s.cold_item_fraction < 1, "split.cold_item_fraction", "in [0, 1)")
    _require(0 <= s.heldout_user_fraction < 1, "split.heldout_user_fraction", "in [0, 1)")
    if s.holdout == "none" and (s.cold_item_fraction > 0 or s.heldout_user_fraction > 0):
        raise ConfigError(
            "split.cold_item_fraction and split.heldout_user_fraction need a holdout: "
            "set split.holdout=random or time"
        )
    if s.holdout == "time" and interactions.timestamp_col is None:
        raise ConfigError(
            "split.holdout=time needs data.interactions.timestamp_col (the column of event times)"
        )


def _validate_recommend(r: RecommendConfig) -> None:
    _require(r.k > 0, "recommend.k", "an integer > 0", r.k)
    _require(r.users_per_block > 0, "recommend.users_per_block", "an integer > 0")
    _require(r.items_per_block > 0, "recommend.items_per_block", "an integer > 0")
    _require(
        r.broadcast_max_mb >= 0, "recommend.broadcast_max_mb", "a number >= 0", r.broadcast_max_mb
    )
    _require(
        r.cold_slots is None or 0 <= r.cold_slots <= r.k,
        "recommend.cold_slots",
        f"unset or an integer from 0 to recommend.k={r.k}",
        r.cold_slots,
    )


def _validate_encoder(e: EncoderConfig) -> None:
    _require(e.max_length > 0, "encoder.max_length", "an integer > 0", e.max_length)
    _require(e.batch_size > 0, "encoder.batch_size", "an integer > 0", e.batch_size)
    _require(e.arrow_batch_size > 0, "encoder.arrow_batch_size", "an integer > 0")
    _require(
        e.device in ("auto", "cpu") or e.device.startswith("cuda"),
        "encoder.device",
        "auto (the task's GPU when Spark schedules GPUs, else CPU), cpu or cuda[:N]",
        e.device,
    )


def _validate_finetune(f: FinetuneConfig) -> None:
    key = "encoder.finetune"
    on = f.enabled
    _require(isinstance(on, bool) or on == "auto", f"{key}.enabled", "true, false or auto", on)
    _require(0 < f.learning_rate < 1, f"{key}.learning_rate", "a number in (0, 1)", f.learning_rate)
    _require(0 < f.head_learning_rate < 1, f"{key}.head_learning_rate", "in (0, 1)")
    for name in ("batch_size", "epochs", "num_processes", "max_pairs_per_epoch"):
        _require(getattr(f, name) > 0, f"{key}.{name}", "an integer > 0", getattr(f, name))
    _require(f.batch_size > 1, f"{key}.batch_size", "an integer > 1 (in-batch negatives)")
    _require(f.patience >= 0, f"{key}.patience", "an integer >= 0", f.patience)
    _require(f.lora_rank >= 0, f"{key}.lora_rank", "an integer >= 0 (0: no adapters)")
    freeze = f.freeze_layers
    _require(freeze is None or freeze >= 0, f"{key}.freeze_layers", "unset or >= 0", freeze)
    _require(f.l2sp >= 0, f"{key}.l2sp", "a number >= 0 (0: off)", f.l2sp)
    _require(f.temperature > 0, f"{key}.temperature", "a number > 0", f.temperature)
    _require(f.min_gain >= 0, f"{key}.min_gain", "a number >= 0", f.min_gain)


def _validate_projection(pr: ProjectionConfig) -> None:
    _require(pr.min_interactions > 0, "projection.min_interactions", "an integer > 0")
    _require(
        len(pr.lambdas) > 0 and all(lam > 0 for lam in pr.lambdas),
        "projection.lambdas",
        "a list of numbers > 0",
        pr.lambdas,
    )
    _require(0 < pr.holdout_fraction < 1, "projection.holdout_fraction", "in (0, 1)")
    _require(pr.blend_shrinkage >= 0, "projection.blend_shrinkage", "a number >= 0 (0: off)")
    _require(
        len(pr.knn_ks) > 0 and all(k > 0 for k in pr.knn_ks),
        "projection.knn_ks",
        "a list of integers > 0",
        pr.knn_ks,
    )
    _require(
        len(pr.knn_temperatures) > 0 and all(t > 0 for t in pr.knn_temperatures),
        "projection.knn_temperatures",
        "a list of numbers > 0",
        pr.knn_temperatures,
    )
    _require(
        len(pr.blend_weights) > 0 and all(0 < w < 1 for w in pr.blend_weights),
        "projection.blend_weights",
        "a list of numbers in (0, 1) (the ridge share)",
        pr.blend_weights,
    )


def _validate_validation(v: ValidationConfig) -> None:
    parsed = metric_cut(v.metric)
    _require(
        parsed is not None and parsed[0] in ("recall", "ndcg"),
        "validation.metric",
        "recall@K or ndcg@K (K is cut to recommend.k when larger)",
        v.metric,
    )
    f = v.pseudo_cold_fraction
    _require(f is None or 0 < f < 1, "validation.pseudo_cold_fraction", "unset or in (0, 1)", f)
    _require(v.min_gain >= 0, "validation.min_gain", "a number >= 0", v.min_gain)
    _require(v.max_users > 0, "validation.max_users", "an integer > 0", v.max_users)


def _validate_refresh(rf: RefreshConfig) -> None:
    _require(rf.item_growth >= 0, "refresh.item_growth", "a number >= 0 (0: every item)")


def _validate_tune(t: TuneConfig) -> None:
    _require(t.trials > 0, "tune.trials", "an integer > 0", t.trials)
    _require(t.parallelism > 0, "tune.parallelism", "an integer > 0", t.parallelism)
    _require(0 < t.validation_fraction < 1, "tune.validation_fraction", "in (0, 1)")
    metric, _, cut = t.metric.partition("@")
    _require(
        metric in ("recall", "precision", "ndcg", "map", "hit_rate")
        and cut.isdigit()
        and int(cut) > 0,
        "tune.metric",
        "recall@K, precision@K, ndcg@K, map@K or hit_rate@K",
        t.metric,
    )
    for name, values in [("ranks", t.ranks), ("regs", t.regs), ("alphas", t.alphas),
                         ("confidences", t.confidences), ("iterations", t.iterations)]:  # fmt: skip
        _require(len(values) > 0, f"tune.{name}", "a non-empty list", values)


def _validate_evaluate(ev: EvaluateConfig, s: SplitConfig, r: RecommendConfig) -> None:
    ks = ev.ks
    _require(len(ks) > 0 and all(k > 0 for k in ks), "evaluate.ks", "a list of integers > 0", ks)
    if s.holdout != "none" and max(ks) > r.k:
        raise ConfigError(
            f"evaluate.ks: largest cut-off {max(ks)} exceeds recommend.k={r.k}; "
            "raise recommend.k or lower evaluate.ks"
        )


# --- schema walking -------------------------------------------------------------------


def _require(ok: bool, key: str, allowed: str, value: Any = dataclasses.MISSING) -> None:
    if not ok:
        got = "" if value is dataclasses.MISSING else f", got {value!r}"
        raise ConfigError(f"{key}: must be {allowed}{got}")


def _build(cls: Any, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(unknown_key_message(prefix, str(key), fields))
    kwargs = {}
    for name in fields:
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        ftype = hints[name]
        if dataclasses.is_dataclass(ftype):
            kwargs[name] = _build(ftype, raw[name], key)
        else:
            kwargs[name] = _convert(raw[name], ftype, key)
    return cls(**kwargs)


def _convert(value: Any, ftype: Any, key: str) -> Any:
    origin = typing.get_origin(ftype)
    args = typing.get_args(ftype)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(_scalar_text(a) for a in args)
            raise ConfigError(f"{key}: must be one of {allowed}, got {value!r}")
        return value
    if origin is abc.Mapping:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of names to values, got {value!r}")
        return types.MappingProxyType({str(k): _scalar_text(v) for k, v in value.items()})
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(items))
    if ftype is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    if ftype is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: must be an integer, got {value!r}")
    if ftype is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 3e-5 (no dot) as text
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if ftype is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, (dict, list)):
            # YAML reads an unquoted {title} or [x] as a mapping or a list.
            raise ConfigError(
                f"{key}: must be a string, got a YAML {type(value).__name__} {value!r}; "
                f'quote it in the YAML file, e.g. {key.rsplit(".", 1)[-1]}: "{{title}}"'
            )
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {ftype!r}")  # a schema bug, not a user error


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
