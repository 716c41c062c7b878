# Databricks notebook source
# MAGIC %md
# MAGIC # wals-roberta on Databricks
# MAGIC Runs one stage, or the whole pipeline, on the cluster's SparkSession. Install the wheel
# MAGIC on the cluster first (`%pip install /dbfs/.../wals_roberta-*.whl`, or as a cluster
# MAGIC library), then set the widgets: the config file, any `key=value` overrides (one per
# MAGIC line, as `--set` takes them), the stage and the run id.
# MAGIC
# MAGIC Stages: `pipeline` (all of them) · `prepare` · `train` · `embed` · `project` ·
# MAGIC `recommend` · `evaluate` · `publish` · `refresh` (the daily update of the published
# MAGIC run) · `tune`. An empty run id starts a new run for `pipeline`, `prepare` and `refresh`
# MAGIC and uses the latest run for the others. As a Databricks job, schedule `pipeline` weekly
# MAGIC and `refresh` daily, as the Airflow DAG in `dags/` does.
# MAGIC
# MAGIC Any compute: a dedicated cluster's classic session, or serverless and standard access
# MAGIC mode, which are Spark Connect (the run's files then go through this notebook's own
# MAGIC file system: keep `output.root` on a Unity Catalog volume, `/Volumes/...`).

# COMMAND ----------

from wals_roberta.jobs.cli import STAGES

dbutils.widgets.text("config", "/Workspace/Repos/you/wals-roberta/conf/default.yaml", "Config file")
dbutils.widgets.text(
    "overrides",
    "output.root=/Volumes/main/default/wals_roberta",
    "Overrides (key=value per line)",
)
dbutils.widgets.dropdown("stage", "pipeline", list(STAGES), "Stage")
dbutils.widgets.text("run_id", "", "Run id (empty: new for pipeline/prepare/refresh, else latest)")

# COMMAND ----------

import json

from wals_roberta.jobs.cli import stage_function
from wals_roberta.jobs.config import load_config
from wals_roberta.jobs.runs import tables

overrides = [line.strip() for line in dbutils.widgets.get("overrides").splitlines() if line.strip()]
cfg = load_config(dbutils.widgets.get("config"), overrides)
stage = dbutils.widgets.get("stage")
if stage not in STAGES:
    raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
run_id = dbutils.widgets.get("run_id").strip() or None
# Name the run here when the stage starts one, so that the cells below show that run.
if run_id is None and stage in ("pipeline", "prepare", "refresh"):
    run_id = tables.new_run_id()
print(f"{stage}: run {run_id or '(latest)'}")
result = stage_function(stage)(spark, cfg, run_id=run_id)
print(json.dumps(result, indent=2, default=str)[:5000])

# COMMAND ----------

# MAGIC %md ## The run: stages, metrics per segment, the published lists

# COMMAND ----------

from wals_roberta.jobs.runs import storage

run = tables.open_run(spark, cfg, run_id, create=False)
manifest = tables.read_manifest(spark, run)
print(f"run {run.run_id} in {run.dir}")
display(
    spark.createDataFrame(
        [
            {
                "stage": name,
                "status": str(entry.get("status")),
                "seconds": float(entry.get("seconds") or 0.0),
            }
            for name, entry in manifest.get("stages", {}).items()
        ],
        "stage string, status string, seconds double",
    )
)

# COMMAND ----------

metrics_path = run.path(tables.METRICS)
if storage.exists(spark, metrics_path):
    metrics = json.loads(storage.read_text(spark, metrics_path))
    for segment, body in metrics["segments"].items():
        print(
            f"segment {segment}: {body['users']:,} users, {body['relevant']:,} held-out "
            f"interactions, ranked over {body['items']:,} items"
        )
        display(
            spark.createDataFrame(
                [
                    {"segment": segment, "method": method, **{k: float(v) for k, v in m.items()}}
                    for method, m in body["methods"].items()
                ]
            )
        )
else:
    print("no metrics.json in this run (evaluate has not run, or split.holdout is none)")

# COMMAND ----------

published = storage.join(run.root, cfg.output.published_name)
if storage.exists(spark, published):
    display(
        spark.read.format(cfg.output.format).load(published).orderBy("user_id", "rank").limit(50)
    )
else:
    print(f"nothing published yet at {published}")
