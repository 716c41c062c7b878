"""The configuration schema: one frozen dataclass per YAML section, with its defaults.

A key that is not a field here is unknown, and a value is converted to the field's type
(``loading`` walks these classes to build and check a config).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FileFormat = Literal["auto", "csv", "parquet", "delta", "table"]
ConfidenceForm = Literal["binary", "linear", "log", "sqrt", "time_decay"]
# One to three dot-separated identifiers: table, database.table, catalog.database.table.
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


@dataclass(frozen=True)
class SparkConfig:
    """Session settings. ``master`` null keeps the launcher's choice (spark-submit's
    ``--master``; plain ``python`` gets Spark's local default); ``remote`` makes the session
    a Spark Connect client."""

    master: str | None = None
    # A Spark Connect server (sc://host:port, or local[N] for one started here); null:
    # SPARK_REMOTE when set, else a classic session.
    remote: str | None = None
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
    # Spark reader options under Spark's own names (delimiter, quote, escape, encoding,
    # header, multiLine, ...); csv_delimiter is an alias of options.delimiter.
    options: Mapping[str, str] = field(default_factory=dict)
    csv_delimiter: str = ","
    invalid_rows: Literal["fail", "drop"] = "fail"


@dataclass(frozen=True)
class ItemsInput:
    path: str | None = None
    format: FileFormat = "auto"
    id_col: str = "item_id"
    text_template: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    csv_delimiter: str = ","
    # Rows with a null id, and ids repeated with different texts: fail, or drop the null
    # ids and keep one row per id by the documented rule (counted either way).
    invalid_rows: Literal["fail", "drop"] = "fail"


@dataclass(frozen=True)
class DataConfig:
    interactions: InteractionsInput = field(default_factory=InteractionsInput)
    items: ItemsInput = field(default_factory=ItemsInput)


@dataclass(frozen=True)
class LeaseConfig:
    """The lease publish and retention take on the output root, so two runs on one root
    (a manual rerun beside the scheduled one, two DAG runs) never interleave."""

    # A lease its holder has not renewed for this long is stale and is broken by the next run.
    expiry_seconds: float = 600.0
    # A run that finds the lease held: wait up to wait_seconds for it, or fail at once.
    on_held: Literal["wait", "fail"] = "wait"
    wait_seconds: float = 1800.0


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
    lease: LeaseConfig = field(default_factory=LeaseConfig)


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
    # objective by conjugate gradient on executors (jobs/model/wals_cg.py), cg_steps per solve.
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
    # Item vectors (MB, items × rank × 4 bytes) up to which the top-k broadcasts the item
    # blocks; past it they meet the user blocks by a shuffle join (udfs/topk.py).
    broadcast_max_mb: float = 64.0
    # How projected (cold) and WALS scores share one list: auto (chosen on validation, see
    # cold/merge.py), raw (dot products as they are) or standardize (each source on the
    # user's own scale, cold scores shifted by cold_offset warm standard deviations).
    merge: Literal["auto", "raw", "standardize"] = "auto"
    cold_offset: float = 0.0
    # Slots of every list reserved for the best cold items; unset: none, or what auto chose.
    cold_slots: int | None = None


@dataclass(frozen=True)
class FinetuneConfig:
    """Optional stage ``finetune`` (between ``train`` and ``embed``): the encoder trained toward
    the WALS space with TorchDistributor, kept per ``enabled`` (see jobs/finetune.py)."""

    # false: the stage is skipped; true: its encoder is used; auto: used only when it beats
    # the frozen encoder on the stage's pseudo-cold validation by min_gain (relative).
    enabled: Literal[False, True, "auto"] = False
    # ranking: WALS user vectors fixed, each user's warm items against in-batch negatives
    # through a projection head; regression: the head regresses the item factors (MSE).
    objective: Literal["ranking", "regression"] = "ranking"
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    batch_size: int = 32
    epochs: int = 3
    # Epochs without a better validation figure before stopping (the best epoch is kept).
    patience: int = 1
    # LoRA adapters of this rank on the attention projections (peft); 0: no adapters, the
    # unfrozen layers train in full (the default: the one variant that won on MovieLens 100K).
    lora_rank: int = 0
    # Lower transformer layers (and the embeddings) kept frozen; unset: the lower half.
    freeze_layers: int | None = None
    # L2-SP: penalty weight on the distance of trained weights from the starting ones.
    l2sp: float = 0.01
    # Softmax temperature of the ranking objective (scores are cosine similarities).
    temperature: float = 0.05
    # Training pairs per epoch across all processes (a seeded sample when there are more).
    max_pairs_per_epoch: int = 100_000
    min_gain: float = 0.01
    # TorchDistributor processes: one per GPU on a GPU cluster, else CPU workers.
    num_processes: int = 2
    seed: int = 42


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
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


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


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_to_plain(v) for v in obj]
    return obj
