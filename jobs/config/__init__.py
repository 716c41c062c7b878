"""Typed, frozen, validated job configuration built from YAML plus ``--set`` overrides.

The dataclasses below are the schema: a key that is not a field is unknown, a value is
converted to the field's type, and every error names the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import types
import typing
from collections import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from wals_roberta.jobs.runs.errors import ConfigError, first_line

FileFormat = Literal["auto", "csv", "parquet", "delta", "table"]
ConfidenceForm = Literal["binary", "linear", "log", "sqrt", "time_decay"]
# One to three dot-separated identifiers: table, database.table, catalog.database.table.
MLFLOW_MISSING = (
    "tracking.mlflow: true needs the mlflow package on the driver; install the extra "
    "with pip install 'wals-roberta[mlflow]' (or set tracking.mlflow=false)"
)
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


@dataclass(frozen=True)
class SparkConfig:
    """Session settings. ``master`` null keeps the launcher's choice (spark-submit's
    ``--master``; plain ``python`` gets Spark's local default)."""

    master: str | None = None
    app_name: str = "wals-roberta"
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InteractionsInput:
    path: str = ""
    format: FileFormat = "auto"
    user_col: str = "user_id"
    item_col: str = "item_id"
    strength_col: str | None = None
    timestamp_col: str | None = None
    csv_delimiter: str = ","
    invalid_rows: Literal["fail", "drop"] = "fail"


@dataclass(frozen=True)
class ItemsInput:
    path: str | None = None
    format: FileFormat = "auto"
    id_col: str = "item_id"
    text_template: str | None = None
    csv_delimiter: str = ","


@dataclass(frozen=True)
class DataConfig:
    interactions: InteractionsInput = field(default_factory=InteractionsInput)
    items: ItemsInput = field(default_factory=ItemsInput)


@dataclass(frozen=True)
class OutputConfig:
    root: str = ""
    format: Literal["parquet", "delta"] = "parquet"
    published_name: str = "recommendations"
    # Run directories kept after a publish (newest first; the published run always stays);
    # unset keeps every run.
    keep_runs: int | None = None
    # Metastore name the published table is registered under after each publish
    # (``[catalog.]database.table``), for consumers that read ``spark.table(name)``.
    table: str | None = None


@dataclass(frozen=True)
class SplitConfig:
    holdout: Literal["none", "random", "time"] = "none"
    fraction: float = 0.2
    seed: int = 42
    time_cutoff: int | None = None
    cold_item_fraction: float = 0.0
    # Users held out of training entirely: the non-test part of their history becomes
    # ``fold_in`` (given at scoring time), their test part is scored (strong generalisation).
    heldout_user_fraction: float = 0.0


@dataclass(frozen=True)
class WalsConfig:
    rank: int = 64
    reg: float = 0.05
    alpha: float = 10.0
    iterations: int = 15
    confidence: ConfidenceForm = "linear"
    log_epsilon: float = 1.0
    half_life_days: float | None = None
    user_blocks: int = 4
    item_blocks: int = 4
    seed: int = 42
    nonnegative: bool = False
    checkpoint_interval: int = 5
    checkpoint_dir: str | None = None
    # mllib: MLlib's ALS (normal equations per user and item, Cholesky). cg: the same
    # objective by conjugate gradient on executors (jobs/wals_cg.py), cg_steps per solve.
    solver: Literal["mllib", "cg"] = "mllib"
    cg_steps: int = 3
    # cg: blocks per side. Each block receives a copy of the other side's vectors, so one
    # block per core (None: Spark's default parallelism) copies least.
    cg_blocks: int | None = None


@dataclass(frozen=True)
class RecommendConfig:
    k: int = 50
    exclude_seen: bool = True
    # Users with interactions but no trained factors: closed-form WALS solve, the
    # confidence-weighted mean of their item vectors, or no list.
    fold_in: Literal["solve", "mean", "none"] = "solve"
    users_per_block: int = 16384
    items_per_block: int = 65536
    # How projected (cold) and WALS scores share one list: auto (chosen on validation, see
    # cold/merge.py), raw (dot products as they are) or standardize (each source on the
    # user's own scale, cold scores shifted by cold_offset warm standard deviations).
    merge: Literal["auto", "raw", "standardize"] = "auto"
    cold_offset: float = 0.0
    # Slots of every list reserved for the best cold items; unset: none, or what auto chose.
    cold_slots: int | None = None


@dataclass(frozen=True)
class EncoderConfig:
    """Text encoder: a hub id (from the local cache), a local directory, or
    ``package:<module>`` for a Python package that ships weights (the demo's MiniLM)."""

    model: str = "roberta-base"
    pooling: Literal["cls", "mean", "last4_mean"] = "mean"
    max_length: int = 128
    batch_size: int = 64
    normalize: bool = True
    device: str = "auto"
    arrow_batch_size: int = 1024
    cache_dir: str | None = None


@dataclass(frozen=True)
class ProjectionConfig:
    """Ridge map from text embeddings to WALS factors, fitted on warm items."""

    min_interactions: int = 2
    lambdas: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
    holdout_fraction: float = 0.1
    blend_shrinkage: float = 0.0
    seed: int = 42
    # The text → factor map: ridge, knn (softmax-weighted nearest warm items in embedding
    # space), blend (their average, weights tried below) or auto (the best of all on
    # pseudo-cold validation); λ, K and the temperature are chosen on validation too.
    map: Literal["auto", "ridge", "knn", "blend"] = "auto"
    knn_ks: tuple[int, ...] = (10, 30, 100)
    knn_temperatures: tuple[float, ...] = (0.01, 0.03, 0.1)
    blend_weights: tuple[float, ...] = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class ValidationConfig:
    """How the text map and the score merge are chosen: a second WALS model is fitted on the
    training rows minus a validation split carved from them (each user's ``split.fraction``,
    and every row of a share of warm items held out as pseudo-cold); the test split is
    never read."""

    # The figure the choices maximise; K is cut to recommend.k when larger.
    metric: str = "recall@20"
    # Share of warm items held out as pseudo-cold; unset: the run's share of cold items,
    # clipped to [0.05, 0.5].
    pseudo_cold_fraction: float | None = None
    # A merge other than raw is kept only when it beats raw by this relative margin.
    min_gain: float = 0.01
    # Validation users scored (a seeded sample when there are more).
    max_users: int = 10000
    seed: int = 7


@dataclass(frozen=True)
class EvaluateConfig:
    ks: tuple[int, ...] = (10, 20, 50)
    # With held-out users: also train a reference model that includes their given history,
    # to report how close fold-in gets to having them in training.
    trained_reference: bool = True


@dataclass(frozen=True)
class RefreshConfig:
    """The daily path: ``data.*`` then name what arrived since ``base_run`` (default: the
    run currently published)."""

    base_run: str | None = None
    # An item that gained interactions is solved again (the ALS item step against the user
    # vectors) when the pairs it gained are at least this share of the pairs it had in the
    # base run; items without any are always solved. 0: every item that gained.
    item_growth: float = 0.1


@dataclass(frozen=True)
class TuneConfig:
    """Budgeted search over the WALS settings, scored on a validation split carved from the
    training rows (never the test split). ``trials`` settings are drawn from the grid (all
    of it when it is smaller), plus the config's own ``wals`` settings as the first trial."""

    ranks: tuple[int, ...] = (32, 64, 128)
    regs: tuple[float, ...] = (0.05, 0.1, 0.5, 1.0)
    alphas: tuple[float, ...] = (1.0, 5.0, 10.0, 40.0)
    confidences: tuple[Literal["binary", "linear", "log", "sqrt"], ...] = (
        "binary",
        "linear",
        "log",
        "sqrt",
    )
    iterations: tuple[int, ...] = (10, 15)
    trials: int = 12
    metric: str = "ndcg@20"
    validation_fraction: float = 0.2
    parallelism: int = 1
    seed: int = 42
    output: str | None = None


@dataclass(frozen=True)
class TrackingConfig:
    """Optional MLflow logging of each published run: the config as params, every metric and
    stage timing, the report, metrics and manifest as artifacts (extra ``mlflow``)."""

    mlflow: bool = False
    experiment: str = "wals-roberta"
    uri: str | None = None  # unset: MLflow's own default (MLFLOW_TRACKING_URI, ...)


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    wals: WalsConfig = field(default_factory=WalsConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for the manifest and for YAML)."""
        return _to_plain(self)


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
        _apply_override(raw, item)
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
        _set_path(raw, key, value)
    return config_from_dict(raw)


def validate(cfg: Config) -> None:
    """Range and cross-key checks; raises ConfigError naming the key."""
    _require(bool(cfg.data.interactions.path), "data.interactions.path", "a path or table name")
    _require(bool(cfg.output.root), "output.root", "a directory (local, hdfs://, s3a://, dbfs:/)")
    keep = cfg.output.keep_runs
    _require(keep is None or keep > 0, "output.keep_runs", "an integer > 0 or unset", keep)
    table = cfg.output.table
    _require(
        table is None or TABLE_NAME.fullmatch(table) is not None,
        "output.table",
        "unset or a table name [catalog.]database.table of letters, digits and _",
        table,
    )
    _validate_tracking(cfg.tracking)
    w = cfg.wals
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
            cfg.data.interactions.timestamp_col is not None,
            "data.interactions.timestamp_col",
            "a column name when wals.confidence is time_decay",
            None,
        )
    s = cfg.split
    _require(0 < s.fraction < 1, "split.fraction", "a number in (0, 1)", s.fraction)
    _require(0 <= s.cold_item_fraction < 1, "split.cold_item_fraction", "in [0, 1)")
    _require(0 <= s.heldout_user_fraction < 1, "split.heldout_user_fraction", "in [0, 1)")
    if s.holdout == "none" and (s.cold_item_fraction > 0 or s.heldout_user_fraction > 0):
        raise ConfigError(
            "split.cold_item_fraction and split.heldout_user_fraction need a holdout: "
            "set split.holdout=random or time"
        )
    if s.holdout == "time" and cfg.data.interactions.timestamp_col is None:
        raise ConfigError(
            "split.holdout=time needs data.interactions.timestamp_col (the column of event times)"
        )
    r = cfg.recommend
    _require(r.k > 0, "recommend.k", "an integer > 0", r.k)
    _require(r.users_per_block > 0, "recommend.users_per_block", "an integer > 0")
    _require(r.items_per_block > 0, "recommend.items_per_block", "an integer > 0")
    _require(
        r.cold_slots is None or 0 <= r.cold_slots <= r.k,
        "recommend.cold_slots",
        f"unset or an integer from 0 to recommend.k={r.k}",
        r.cold_slots,
    )
    e = cfg.encoder
    _require(e.max_length > 0, "encoder.max_length", "an integer > 0", e.max_length)
    _require(e.batch_size > 0, "encoder.batch_size", "an integer > 0", e.batch_size)
    _require(e.arrow_batch_size > 0, "encoder.arrow_batch_size", "an integer > 0")
    _require(
        e.device in ("auto", "cpu") or e.device.startswith("cuda"),
        "encoder.device",
        "auto (the task's GPU when Spark schedules GPUs, else CPU), cpu or cuda[:N]",
        e.device,
    )
    pr = cfg.projection
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
    _validate_validation(cfg.validation)
    _require(cfg.refresh.item_growth >= 0, "refresh.item_growth", "a number >= 0 (0: every item)")
    t = cfg.tune
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
    ks = cfg.evaluate.ks
    _require(len(ks) > 0 and all(k > 0 for k in ks), "evaluate.ks", "a list of integers > 0", ks)
    if s.holdout != "none" and max(ks) > r.k:
        raise ConfigError(
            f"evaluate.ks: largest cut-off {max(ks)} exceeds recommend.k={r.k}; "
            "raise recommend.k or lower evaluate.ks"
        )


def metric_cut(metric: str) -> tuple[str, int] | None:
    """``("recall", 20)`` for ``recall@20``; None when it is not a metric@K."""
    name, _, cut = metric.partition("@")
    return (name, int(cut)) if cut.isdigit() and int(cut) > 0 else None


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


def _validate_tracking(tr: TrackingConfig) -> None:
    _require(bool(tr.experiment.strip()), "tracking.experiment", "a non-empty experiment name")
    _require(tr.uri is None or bool(tr.uri.strip()), "tracking.uri", "unset or a URI", tr.uri)
    if tr.mlflow and importlib.util.find_spec("mlflow") is None:
        # Checked here so that the first stage fails, not the publish at the end of a long run.
        raise ConfigError(MLFLOW_MISSING)


# --- schema walking -------------------------------------------------------------------


def _require(ok: bool, key: str, allowed: str, value: Any = dataclasses.MISSING) -> None:
    if not ok:
        got = "" if value is dataclasses.MISSING else f", got {value!r}"
        raise ConfigError(f"{key}: must be {allowed}{got}")


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set wals.rank=128")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    _set_path(raw, key.strip(), value)


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key; a mapping-typed field (spark.conf) takes the rest as one key."""
    parts = dotted.split(".")
    cls: Any = Config
    node = raw
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            prefix = ".".join(parts[:i])
            raise ConfigError(_unknown_key_message(prefix, part, fields))
        ftype = typing.get_type_hints(cls)[part]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(ftype) and not last:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: must be a mapping")
            cls = ftype
            continue
        if typing.get_origin(ftype) is abc.Mapping and not last:
            node.setdefault(part, {})[".".join(parts[i + 1 :])] = value
            return
        if not last:
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        node[part] = value
        return


def _unknown_key_message(prefix: str, key: str, fields: Mapping[str, Any]) -> str:
    full = f"{prefix}.{key}" if prefix else key
    return f"unknown config key {full!r}; allowed here: {', '.join(sorted(fields))}"


def _build(cls: Any, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(_unknown_key_message(prefix, str(key), fields))
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
            allowed = ", ".join(str(a) for a in args)
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
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if ftype is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {ftype!r}")  # a schema bug, not a user error


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj
