"""Airflow DAG ``wals_roberta``: the weekly full retrain and the daily refresh.

One DAG run a day. A branch picks the path for the day:

* on the retrain weekday (param ``retrain_weekday``, default Sunday), the full retrain,
  one task per stage: ``prepare → train → finetune → embed → project → recommend →
  evaluate → publish``. All of them work on one run directory whose id comes from the DAG run's date
  (``<YYYYMMDDTHHMMSSZ>-retrain``), so a retried task finds the tables of the tasks before
  it, and the ids sort with the ones the command line makes. ``embed``/``project`` are
  skipped when the config has no item text and ``evaluate`` when nothing is held out
  (``split.holdout: none``), exactly as ``wals-roberta pipeline`` leaves them out;
* on every other day, ``refresh`` (one task): new interactions and items folded into the
  published run (see ``jobs/refresh.py``).

Param ``mode`` (``auto`` by default) forces ``retrain`` or ``refresh`` for a manual
trigger, e.g. the very first run, which must be a retrain: refresh needs a published run.

Every task runs the repository's ``spark-submit.sh`` (or, with the setting
``spark_remote``, the CLI as a Spark Connect client) with the bash command below, which is
the same constant string for every task: the settings reach it only through the task's
environment (``WR_*`` variables, each referenced quoted), never pasted into the command,
so nothing a user types is run by the shell.

Settings, first found wins: the DAG run's params (trigger with config), then the Airflow
Variable ``wals_roberta_<name>`` (read when the task runs, never when the file is parsed),
then the default below. List settings (``overrides``, ``refresh_overrides``,
``submit_options``) are JSON arrays, one argument per element.

Needs Airflow 3 (``pip install -e '.[airflow]'``): the DAG runs on a date
(``logical_date``, or when it was triggered), not on the start of a data interval.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, Param, chain

DAG_ID = "wals_roberta"
VARIABLE_PREFIX = "wals_roberta_"
FULL_PATH = (
    "prepare",
    "train",
    "finetune",
    "embed",
    "project",
    "recommend",
    "evaluate",
    "publish",
)
REFRESH = "refresh"
BRANCH = "choose_path"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Exit code of the bash command for a stage this config does not have (BashOperator: skip).
SKIP_EXIT_CODE = 99
# Stages wals-roberta pipeline leaves out for some configs (wals_roberta.jobs.pipeline.stages).
OPTIONAL_STAGES = ("finetune", "embed", "project", "evaluate")

# Defaults when neither the DAG run's params nor an Airflow Variable give a value.
DEFAULTS: dict[str, Any] = {
    # The repository holding this file (the dags folder may be a symlink to it).
    "repo": str(Path(__file__).resolve().parent.parent),
    "config": "conf/default.yaml",
    "overrides": [],
    "refresh_overrides": [],
    "submit_options": [],
    # A Spark Connect URL (sc://host:port): the tasks run the CLI as a Connect client
    # instead of spark-submit.sh (which starts a classic driver); empty: spark-submit.sh.
    "spark_remote": "",
    "retrain_weekday": "sunday",
}

# The only command any task runs. Settings come from the environment, always quoted; the
# lists are one argument per line. Stages a config does not have exit 99 (skipped), as
# decided by the project's own wals_roberta.jobs.pipeline.stages.
STAGE_COMMAND = r"""set -euo pipefail
cd -- "$WR_REPO"
py="${PYSPARK_PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
submit=()
while IFS= read -r line; do
  if [[ -n "$line" ]]; then submit+=("$line"); fi
done <<< "$WR_SUBMIT_OPTIONS"
overrides=()
sets=()
while IFS= read -r line; do
  if [[ -n "$line" ]]; then overrides+=("$line"); sets+=(--set "$line"); fi
done <<< "$WR_OVERRIDES"
if [[ " $WR_OPTIONAL_STAGES " == *" $WR_STAGE "* ]]; then
  "$py" - "$WR_STAGE" "$WR_CONFIG" "${overrides[@]}" <<'PY'
import sys

from wals_roberta.jobs.config import load_config
from wals_roberta.jobs.runs.errors import WalsRobertaError
from wals_roberta.jobs.pipeline import stages

stage, config, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    cfg = load_config(config, overrides)
except WalsRobertaError as exc:
    print(f"wals-roberta {stage}: error: {exc}", file=sys.stderr)
    sys.exit(2)
if stage not in [name for name, _ in stages(cfg)]:
    print(f"{stage}: not a stage of this config (no item text, nothing held out, or no "
          "fine-tuning); skipped")
    sys.exit(99)
PY
fi
if [[ -n "$WR_SPARK_REMOTE" ]]; then
  export SPARK_REMOTE="$WR_SPARK_REMOTE"
  exec "$py" -m wals_roberta.jobs.cli "$WR_STAGE" --config "$WR_CONFIG" "${sets[@]}" \
    --run-id "$WR_RUN_ID"
fi
exec ./spark-submit.sh "${submit[@]}" "$WR_STAGE" --config "$WR_CONFIG" "${sets[@]}" \
  --run-id "$WR_RUN_ID"
"""


def run_date(dag_run: Any) -> datetime:
    """The date a DAG run stands for, in UTC: its logical date, or when it was triggered
    (Airflow 3 lets a manual run have no logical date)."""
    when = getattr(dag_run, "logical_date", None) or dag_run.run_after
    return when.astimezone(UTC)


def run_stamp(dag_run: Any) -> str:
    """``YYYYMMDDTHHMMSSZ`` of :func:`run_date`, the form run ids of the command line
    start with, so DAG runs and hand-made runs sort together by time."""
    return run_date(dag_run).strftime("%Y%m%dT%H%M%SZ")


def choose_path(run_day: str, retrain_weekday: str, mode: str = "auto") -> str:
    """The task to follow for a run on ``run_day`` (``YYYY-MM-DD``): the first stage of
    the full retrain on ``retrain_weekday`` (a day name, any case) or when ``mode`` is
    ``retrain``; ``refresh`` on other days or when ``mode`` is ``refresh``."""
    if mode not in ("auto", "retrain", "refresh"):
        raise ValueError(f"mode must be auto, retrain or refresh, got {mode!r}")
    weekday = retrain_weekday.strip().lower()
    if weekday not in WEEKDAYS:
        raise ValueError(f"retrain_weekday must be one of {', '.join(WEEKDAYS)}, got {weekday!r}")
    if mode == "auto":
        is_retrain_day = datetime.strptime(run_day, "%Y-%m-%d").weekday() == WEEKDAYS.index(weekday)
        mode = "retrain" if is_retrain_day else "refresh"
    return FULL_PATH[0] if mode == "retrain" else REFRESH


def setting(name: str) -> str:
    """Template for one setting: the run's param, else the Airflow Variable
    ``wals_roberta_<name>``, else :data:`DEFAULTS`; lists joined one element per line."""
    if isinstance(DEFAULTS[name], list):
        value = f"var.json.get('{VARIABLE_PREFIX}{name}', wr_defaults.{name})"
        return f"{{{{ (params.{name} if params.{name} is not none else {value}) | join('\\n') }}}}"
    value = f"var.value.get('{VARIABLE_PREFIX}{name}', wr_defaults.{name})"
    return f"{{{{ params.{name} if params.{name} is not none else {value} }}}}"


def stage_env(stage: str, run_suffix: str, extra_overrides: str | None = None) -> dict[str, str]:
    """The environment of a stage task (templates, rendered when the task runs)."""
    overrides = setting("overrides")
    if extra_overrides is not None:
        overrides = f"{overrides}\n{setting(extra_overrides)}"
    return {
        "WR_STAGE": stage,
        "WR_OPTIONAL_STAGES": " ".join(OPTIONAL_STAGES),
        "WR_REPO": setting("repo"),
        "WR_CONFIG": setting("config"),
        "WR_OVERRIDES": overrides,
        "WR_SUBMIT_OPTIONS": setting("submit_options"),
        "WR_SPARK_REMOTE": setting("spark_remote"),
        "WR_RUN_ID": f"{{{{ wr_run_stamp(dag_run) }}}}-{run_suffix}",
    }


def _nullable(kind: str, description: str, **schema: Any) -> Param:
    return Param(None, type=["null", kind], description=description, **schema)


with DAG(
    dag_id=DAG_ID,
    description="wals-roberta: weekly full retrain, daily refresh",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    # Runs share the output root; a refresh must see the publish of the run before it.
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": True,
    },
    user_defined_macros={
        "wr_run_stamp": run_stamp,
        "wr_run_date": run_date,
        "wr_defaults": DEFAULTS,
    },
    params={
        "mode": Param(
            "auto",
            enum=["auto", "retrain", "refresh"],
            description="auto: retrain on retrain_weekday, refresh on other days",
        ),
        "repo": _nullable("string", "repository checkout holding spark-submit.sh"),
        "config": _nullable("string", "YAML config, relative to the repository or absolute"),
        "overrides": _nullable("array", "key=value overrides (--set), every task"),
        "refresh_overrides": _nullable(
            "array", "key=value overrides for refresh only, e.g. the day's new interactions"
        ),
        "submit_options": _nullable(
            "array", "spark-submit.sh options, one argument per element: --master, yarn, ..."
        ),
        "retrain_weekday": _nullable(
            "string", "weekday of the full retrain (UTC)", enum=[None, *WEEKDAYS]
        ),
        "spark_remote": _nullable(
            "string", "Spark Connect URL (sc://host:port); the tasks then run as its clients"
        ),
    },
    tags=["wals-roberta"],
    doc_md=__doc__,
) as dag:
    branch = BranchPythonOperator(
        task_id=BRANCH,
        python_callable=choose_path,
        op_kwargs={
            "run_day": "{{ wr_run_date(dag_run).strftime('%Y-%m-%d') }}",
            "retrain_weekday": setting("retrain_weekday"),
            "mode": "{{ params.mode }}",
        },
        retries=0,
    )
    full = {
        stage: BashOperator(
            task_id=stage,
            bash_command=STAGE_COMMAND,
            env=stage_env(stage, "retrain"),
            append_env=True,
            skip_on_exit_code=SKIP_EXIT_CODE if stage in OPTIONAL_STAGES else None,
            # A stage after a skipped optional one still runs; none runs after a failure.
            trigger_rule="none_failed_min_one_success",
        )
        for stage in FULL_PATH
    }
    refresh = BashOperator(
        task_id=REFRESH,
        bash_command=STAGE_COMMAND,
        env=stage_env(REFRESH, "refresh", extra_overrides="refresh_overrides"),
        append_env=True,
        skip_on_exit_code=None,
    )
    branch >> [full[FULL_PATH[0]], refresh]
    chain(*(full[stage] for stage in FULL_PATH))
    # Past skipped optional stages: train feeds embed (finetune is off by default) and
    # recommend, recommend feeds publish.
    full["train"] >> full["embed"]
    full["train"] >> full["recommend"]
    full["recommend"] >> full["publish"]
