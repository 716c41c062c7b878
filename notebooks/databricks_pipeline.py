# Databricks notebook source
# MAGIC %md
# MAGIC # wals-roberta on Databricks
# MAGIC Runs the stages on the cluster's SparkSession. Install the wheel on the cluster first
# MAGIC (`%pip install /dbfs/.../wals_roberta-*.whl`, or as a cluster library), then set the
# MAGIC widgets: the config file and any `key=value` overrides, one per line.

# COMMAND ----------

dbutils.widgets.text("config", "/Workspace/Repos/you/wals-roberta/conf/default.yaml", "Config file")
dbutils.widgets.text(
    "overrides", "output.root=dbfs:/wals-roberta", "Overrides (key=value per line)"
)
dbutils.widgets.dropdown(
    "stage",
    "pipeline",
    ["pipeline", "prepare", "train", "recommend", "evaluate", "publish"],
    "Stage",
)
dbutils.widgets.text("run_id", "", "Run id (empty: new for prepare/pipeline, else latest)")

# COMMAND ----------

from jobs.cli import STAGES, stage_function
from jobs.config import load_config

overrides = [line.strip() for line in dbutils.widgets.get("overrides").splitlines() if line.strip()]
cfg = load_config(dbutils.widgets.get("config"), overrides)
stage = dbutils.widgets.get("stage")
run_id = dbutils.widgets.get("run_id") or None
assert stage in STAGES, stage
result = stage_function(stage)(spark, cfg, run_id=run_id)

# COMMAND ----------

# MAGIC %md ## Metrics and a sample of the published lists

# COMMAND ----------

import json

from jobs import storage, tables

run = tables.open_run(
    spark, cfg, result.get("run_id") if isinstance(result, dict) else run_id, create=False
)
metrics_path = run.path(tables.METRICS)
if storage.exists(spark, metrics_path):
    metrics = json.loads(storage.read_text(spark, metrics_path))
    rows = [
        {"segment": seg, "method": method, **values}
        for seg, body in metrics["segments"].items()
        for method, values in body["methods"].items()
    ]
    display(spark.createDataFrame(rows))
published = storage.join(run.root, cfg.output.published_name)
display(spark.read.format(cfg.output.format).load(published).limit(50))
