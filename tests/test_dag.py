"""The Airflow DAG in ``dags/``: its graph, schedule and branch, and real DAG runs
(``dag.test()``) against a stand-in ``spark-submit.sh`` that records its arguments, to check
what every task submits and that nothing a user passes is run by the shell."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest

# Importing Airflow reads and writes its home: a scratch one, never the user's.
os.environ["AIRFLOW_HOME"] = str(Path(tempfile.gettempdir()) / "wals-roberta-test-airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
pytest.importorskip("airflow", reason="Airflow not installed: pip install -e '.[airflow]'")

REPO = Path(__file__).resolve().parent.parent
DAG_FOLDER = REPO / "dags"
FULL = ["prepare", "train", "finetune", "embed", "project", "recommend", "evaluate", "publish"]
HOSTILE = "$(touch pwned) `touch pwned2`; touch pwned3"


def airflow_env(home: Path) -> dict[str, str]:
    """An environment for an isolated Airflow: its own home and database, no examples."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAG_FOLDER),
        PYSPARK_PYTHON=sys.executable,
    )
    return env


@pytest.fixture(scope="module")
def dag():
    """The parsed DAG, loaded by DagBag as the scheduler would load the folder."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FOLDER))
    assert bag.import_errors == {}
    assert list(bag.dags) == ["wals_roberta"]
    return bag.dags["wals_roberta"]


def test_graph_is_the_stage_order(dag):
    ids = {t.task_id for t in dag.tasks}
    assert ids == {"choose_path", "refresh", *FULL}
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {
        "choose_path": set(),
        "prepare": {"choose_path"},
        "train": {"prepare"},
        "finetune": {"train"},
        "embed": {"finetune", "train"},  # finetune is skipped unless enabled
        "project": {"embed"},
        # past skipped optional stages (no text, nothing held out)
        "recommend": {"project", "train"},
        "evaluate": {"recommend"},
        "publish": {"evaluate", "recommend"},
        "refresh": {"choose_path"},
    }
    assert dag.get_task("choose_path").downstream_task_ids == {"prepare", "refresh"}
    assert dag.get_task("publish").downstream_task_ids == set()
    assert dag.get_task("refresh").downstream_task_ids == set()


def test_schedule_retries_and_one_run_at_a_time(dag):
    assert dag.schedule == "@daily"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    for stage in [*FULL, "refresh"]:
        task = dag.get_task(stage)
        assert task.retries >= 1, stage
        assert task.retry_delay >= timedelta(minutes=1), stage


def test_branch_retrains_on_the_weekday_and_refreshes_otherwise():
    sys.path.insert(0, str(DAG_FOLDER))
    try:
        from wals_roberta_dag import choose_path
    finally:
        sys.path.remove(str(DAG_FOLDER))
    week = [date(2024, 3, 4) + timedelta(days=i) for i in range(7)]
    for weekday in ["sunday", "Wednesday"]:
        chosen = {day: choose_path(day.isoformat(), weekday) for day in week}
        for day, task in chosen.items():
            is_that_day = calendar.day_name[day.weekday()].lower() == weekday.lower()
            assert task == ("prepare" if is_that_day else "refresh"), (day, weekday)
    sunday = next(d for d in week if d.weekday() == calendar.SUNDAY).isoformat()
    monday = next(d for d in week if d.weekday() == calendar.MONDAY).isoformat()
    assert choose_path(monday, "sunday", mode="retrain") == "prepare"
    assert choose_path(sunday, "sunday", mode="refresh") == "refresh"
    with pytest.raises(ValueError, match="retrain_weekday"):
        choose_path(sunday, "sundae")
    with pytest.raises(ValueError, match="mode"):
        choose_path(sunday, "sunday", mode="weekly")


def test_commands_hold_no_templates_so_params_reach_only_env(dag):
    commands = {dag.get_task(t).bash_command for t in [*FULL, "refresh"]}
    assert len(commands) == 1
    (command,) = commands
    # Templates are the only way a param could enter the command string.
    assert "{{" not in command and "{%" not in command
    for stage in [*FULL, "refresh"]:
        env = dag.get_task(stage).env
        assert "params.config" in env["WR_CONFIG"]
        assert "params.overrides" in env["WR_OVERRIDES"]


# --- real DAG runs ------------------------------------------------------------------------

RUNNER = textwrap.dedent(
    """
    import json, os, sys
    from datetime import datetime, UTC
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.session import create_session
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered
    from airflow.models.taskinstance import TaskInstance

    spec = json.loads(sys.argv[1])
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["wals_roberta"]
    for task in dag.tasks:
        task.retries = 0  # a failure ends the run now, not after the retry delay
    results = []
    for run in spec:
        os.environ.update(run.get("variables", {}))
        day = datetime.fromisoformat(run["day"]).replace(tzinfo=UTC)
        dr = dag.test(logical_date=day, run_conf=run["conf"])
        with create_session() as session:
            tis = session.query(TaskInstance).filter(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id
            )
            states = {ti.task_id: str(ti.state) for ti in tis}
            rendered = session.query(Rendered).filter(
                Rendered.dag_id == dag.dag_id, Rendered.run_id == dr.run_id
            )
            fields = {r.task_id: r.rendered_fields for r in rendered}
        results.append({"states": states, "rendered": fields})
        for key in run.get("variables", {}):
            del os.environ[key]
    print("RESULT " + json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def fake_repo(tmp_path_factory) -> Path:
    """A checkout whose ``spark-submit.sh`` only records its arguments; ``jobs`` and a copy
    of the demo config (under a hostile file name) are the real ones."""
    repo = tmp_path_factory.mktemp("fake-repo")
    (repo / "jobs").symlink_to(REPO / "jobs")
    (repo / "conf").mkdir()
    (repo / "conf" / f"{HOSTILE}.yaml").write_text((REPO / "conf" / "demo.yaml").read_text())
    (repo / "calls").mkdir()
    stub = repo / "spark-submit.sh"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$(mktemp -p "$PWD/calls")"\n')
    stub.chmod(0o755)
    return repo


def run_dag(tmp_path: Path, runs: list[dict], timeout: float = 300) -> list[dict]:
    """Run the DAG once per entry of ``runs`` (``day``, ``conf``, ``variables``: Airflow
    Variables as environment) in a fresh Airflow; for each run, the task states
    (``states``) and the template fields as rendered by Airflow (``rendered``)."""
    env = airflow_env(tmp_path / "airflow-home")
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(runs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def submitted(repo: Path) -> list[list[str]]:
    """The argument lists the stand-in ``spark-submit.sh`` received, then forgets them."""
    calls = []
    for path in sorted((repo / "calls").iterdir()):
        calls.append(path.read_bytes().decode().split("\0")[:-1])
        path.unlink()
    return calls


def by_stage(calls: list[list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for argv in calls:
        stage = argv[argv.index("--config") - 1]
        assert stage not in out, f"{stage} submitted twice"
        out[stage] = argv
    return out


def test_dag_runs_submit_each_stage_once_with_literal_arguments(fake_repo, tmp_path):
    sunday, monday, tuesday, next_sunday = "2024-01-07", "2024-01-08", "2024-01-09", "2024-01-14"
    days = [sunday, monday, tuesday, next_sunday]
    assert [calendar.day_name[date.fromisoformat(d).weekday()] for d in days] == [
        "Sunday",
        "Monday",
        "Tuesday",
        "Sunday",
    ]
    config = f"conf/{HOSTILE}.yaml"
    conf = {
        "repo": str(fake_repo),
        "config": config,
        "overrides": [f"output.root=out/{HOSTILE}", "wals.rank=4"],
        "submit_options": ["--master", "local[1]", "--conf", f"spark.app.name={HOSTILE}"],
    }
    # Nothing held out: the demo config's cold items go too (they need a holdout).
    lean = ["data.items.text_template=null", "split.holdout=none", "split.cold_item_fraction=0"]
    full, variable, refresh, lean = run_dag(
        tmp_path,
        [
            {"day": sunday, "conf": conf, "variables": {}},
            # Variables are read when the task runs: retrain moved to Monday, config from one.
            {
                "day": monday,
                "conf": {**conf, "config": None},
                "variables": {
                    "AIRFLOW_VAR_WALS_ROBERTA_RETRAIN_WEEKDAY": "monday",
                    "AIRFLOW_VAR_WALS_ROBERTA_CONFIG": config,
                },
            },
            {
                "day": tuesday,
                "conf": conf,
                "variables": {
                    # the run's param wins over the Variable
                    "AIRFLOW_VAR_WALS_ROBERTA_CONFIG": "conf/not-this-one.yaml",
                    "AIRFLOW_VAR_WALS_ROBERTA_REFRESH_OVERRIDES": json.dumps(
                        [f"data.interactions.path=new/{HOSTILE}.csv"]
                    ),
                },
            },
            {"day": next_sunday, "conf": {**conf, "overrides": conf["overrides"] + lean}},
        ],
    )
    full_run, variable_run, refresh_run, lean_run = (
        r["states"] for r in (full, variable, refresh, lean)
    )
    calls = submitted(fake_repo)

    # Nothing the user passed was executed by a shell.
    assert not list(fake_repo.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))

    # As Airflow rendered them: the hostile values are in the environment, never the command.
    for task, fields in [*full["rendered"].items(), *refresh["rendered"].items()]:
        if task == "choose_path":
            continue
        assert HOSTILE not in fields["bash_command"], task
        assert fields["env"]["WR_CONFIG"] == config, task
        assert HOSTILE in fields["env"]["WR_OVERRIDES"], task
    assert set(full["rendered"]) >= set(FULL) and "refresh" in refresh["rendered"]

    # Sunday, demo config: every stage once; refresh skipped.
    # finetune is off in these configs: skipped, and the stages after it still run.
    assert {t: full_run[t] for t in FULL} == {
        **dict.fromkeys(FULL, "success"),
        "finetune": "skipped",
    }
    assert full_run["refresh"] == "skipped"
    # Monday with the Variables: a retrain, on the config the Variable names.
    assert {variable_run[t] for t in FULL if t != "finetune"} == {"success"}
    assert variable_run["refresh"] == "skipped"
    # Tuesday: refresh only.
    assert refresh_run["refresh"] == "success"
    assert {refresh_run[t] for t in FULL} == {"skipped"}
    # Without text or holdout, the stages the pipeline leaves out are skipped, the rest run.
    assert {t: lean_run[t] for t in FULL} == {
        **dict.fromkeys(FULL, "success"),
        **dict.fromkeys(["finetune", "embed", "project", "evaluate"], "skipped"),
    }

    # One run id per DAG run, shared by all its stages and starting with the run's date.
    runs: dict[str, dict[str, list[str]]] = {}
    for argv in calls:
        runs.setdefault(argv[argv.index("--run-id") + 1], {}).update(by_stage([argv]))
    ids = sorted(runs)
    assert [run_id[:8] for run_id in ids] == [d.replace("-", "") for d in days]
    ran = sorted(set(FULL) - {"finetune"})  # skipped before any spark-submit
    assert [sorted(runs[i]) for i in ids] == [
        ran,
        ran,
        ["refresh"],
        ["prepare", "publish", "recommend", "train"],
    ]
    assert len(calls) == len(ran) * 2 + 1 + 4  # no stage submitted twice

    sets = ["--set", f"output.root=out/{HOSTILE}", "--set", "wals.rank=4"]
    submit = conf["submit_options"]
    for stage, argv in runs[ids[0]].items():
        assert argv == [*submit, stage, "--config", config, *sets, "--run-id", ids[0]]
    for stage, argv in runs[ids[1]].items():
        assert argv == [*submit, stage, "--config", config, *sets, "--run-id", ids[1]]
    refresh_set = ["--set", f"data.interactions.path=new/{HOSTILE}.csv"]
    assert runs[ids[2]]["refresh"] == [
        *submit,
        "refresh",
        "--config",
        config,
        *sets,
        *refresh_set,
        "--run-id",
        ids[2],
    ]


@pytest.mark.slow
def test_dag_runs_the_real_job_retrain_then_refresh(tmp_path):
    """The weekly path then a daily refresh through the real ``spark-submit.sh`` (Spark
    local mode): one run directory per DAG run, every stage complete, lists published."""
    from wals_roberta.jobs.data.synthetic import generate, write_csv

    interactions, items = generate(60, 70, 900, seed=5)
    write_csv(tmp_path / "data", interactions, items)
    new = interactions.head(20).assign(user_id=lambda d: "late" + d.user_id.str[-1])
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "out"
    conf = {
        "repo": str(REPO),
        "config": "conf/demo.yaml",
        "overrides": [
            f"data.interactions.path={tmp_path / 'data' / 'interactions.csv'}",
            f"data.items.path={tmp_path / 'data' / 'items.csv'}",
            "data.items.text_template=null",
            f"output.root={out}",
            "wals.rank=4",
            "wals.iterations=2",
        ],
        "refresh_overrides": [
            f"data.interactions.path={tmp_path / 'new.csv'}",
            "data.items.path=null",
        ],
        "submit_options": ["--master", "local[2]", "--driver-memory", "1g"],
    }
    retrain, refresh = run_dag(
        tmp_path,
        [
            {"day": "2024-01-07", "conf": {**conf, "mode": "retrain"}},
            {"day": "2024-01-08", "conf": {**conf, "mode": "refresh"}},
        ],
        timeout=1200,  # six spark-submit JVMs, one after the other
    )
    ran = ["prepare", "train", "recommend", "evaluate", "publish"]
    assert {t: retrain["states"][t] for t in ran} == dict.fromkeys(ran, "success")
    assert refresh["states"]["refresh"] == "success"

    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 2 and [r[:8] for r in runs] == ["20240107", "20240108"]
    first = json.loads((out / "runs" / runs[0] / "manifest.json").read_text())
    assert {s for s, e in first["stages"].items() if e["status"] == "complete"} == set(ran)
    second = json.loads((out / "runs" / runs[1] / "manifest.json").read_text())
    assert second["stages"]["refresh"]["status"] == "complete"
    import pandas as pd

    lists = pd.read_parquet(out / "recommendations")
    assert set(new.user_id) <= set(lists.user_id)
    assert set(interactions.user_id) <= set(lists.user_id)
