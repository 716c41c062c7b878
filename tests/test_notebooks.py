"""The notebooks in ``notebooks/``, executed for real: the quickstart headless in a Jupyter
kernel (``nbclient``) with small sizes injected after its parameters cell, as papermill
does; the checks read what it wrote and showed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

nbformat = pytest.importorskip(
    "nbformat", reason="nbformat not installed: pip install -e '.[test]'"
)
nbclient = pytest.importorskip(
    "nbclient", reason="nbclient not installed: pip install -e '.[test]'"
)
pytest.importorskip("ipykernel", reason="ipykernel not installed: pip install -e '.[test]'")

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"


def with_parameters(nb, **values) -> None:
    """Insert a cell assigning ``values`` right after the cell tagged ``parameters``."""
    index = next(
        i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


def output_text(nb) -> str:
    """Everything the executed notebook printed or displayed, as text and HTML."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)


def test_committed_without_outputs():
    nb = nbformat.read(QUICKSTART, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_quickstart_runs_the_pipeline_and_shows_metrics_and_lists(tmp_path):
    nb = nbformat.read(QUICKSTART, as_version=4)
    data_dir, output_root = tmp_path / "data", tmp_path / "out"
    with_parameters(
        nb,
        n_users=120,
        n_items=150,
        n_interactions=2500,
        data_dir=str(data_dir),
        output_root=str(output_root),
        overrides=["wals.iterations=4"],
        users_to_show=2,
    )
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=600,
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    )
    client.execute()

    demo = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    k, ks = demo["recommend"]["k"], demo["evaluate"]["ks"]
    interactions = pd.read_csv(data_dir / "interactions.csv")
    items = pd.read_csv(data_dir / "items.csv").set_index("item_id")
    assert len(items) == 150 and interactions.user_id.nunique() == 120

    # One run, evaluated, its lists published: k per user, only known items, ranks 1..k.
    (run_dir,) = (output_root / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recall = {
        segment: body["methods"]["wals"][f"recall@{max(ks)}"]
        for segment, body in metrics["segments"].items()
    }
    assert "all" in recall and all(0.0 <= value <= 1.0 for value in recall.values())
    published = pd.read_parquet(output_root / "recommendations")
    assert list(published.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(published) == interactions.user_id.nunique() * k
    assert set(published.item_id) <= set(items.index)
    ranks = published.groupby("user_id")["rank"].apply(sorted)
    assert all(r == list(range(1, k + 1)) for r in ranks)
    # No list holds one of the user's training items (read from the run's own tables).
    users = pd.read_parquet(run_dir / "users")
    run_items = pd.read_parquet(run_dir / "items")
    rows = pd.read_parquet(run_dir / "interactions")
    train = (
        rows[rows["split"] == "train"]
        .merge(users, on="user_idx")
        .merge(run_items[["item_idx", "item_id"]], on="item_idx")
    )
    assert 0 < len(train) < len(interactions)
    listed = published.merge(train, on=["user_id", "item_id"])
    assert listed.empty

    # Shown: the metrics table, and the first users' lists with their items' text.
    shown = output_text(nb)
    assert f"recall@{max(ks)}" in shown and "popularity" in shown
    first_user = published.user_id.min()
    top = published[(published.user_id == first_user) & (published["rank"] == 1)].item_id.iloc[0]
    assert first_user in shown and items.loc[top, "title"] in shown


# --- the Databricks notebook, on the test SparkSession ---------------------------------------

DATABRICKS = REPO / "notebooks" / "databricks_pipeline.py"


class Widgets:
    """Stand-in for ``dbutils.widgets``: declared defaults, values set by the test."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.declared: dict[str, str] = {}
        self.choices: dict[str, list[str]] = {}

    def text(self, name: str, default: str, label: str = "") -> None:
        self.declared[name] = default

    def dropdown(self, name: str, default: str, choices: list[str], label: str = "") -> None:
        assert default in choices
        self.declared[name] = default
        self.choices[name] = list(choices)

    def get(self, name: str) -> str:
        assert name in self.declared, f"widget {name} read before it was declared"
        return self.values.get(name, self.declared[name])


def databricks_cells() -> list[str]:
    """The notebook's Python cells (``# MAGIC`` markdown cells left out)."""
    source = DATABRICKS.read_text()
    assert source.startswith("# Databricks notebook source\n")
    cells = source.split("\n# COMMAND ----------\n")
    return [
        cell
        for cell in cells
        if any(
            line.strip() and not line.startswith(("# MAGIC", "# Databricks notebook source"))
            for line in cell.splitlines()
        )
    ]


def run_databricks(spark, widgets: dict[str, str]) -> tuple[dict, list, Widgets]:
    """Execute every cell in one namespace, as Databricks does; what was displayed."""
    shown: list = []
    stub = Widgets(widgets)
    namespace = {
        "spark": spark,
        "dbutils": type("DBUtils", (), {"widgets": stub})(),
        "display": shown.append,
    }
    for cell in databricks_cells():
        exec(compile(cell, str(DATABRICKS), "exec"), namespace)  # noqa: S102
    return namespace, shown, stub


@pytest.mark.spark
@pytest.mark.slow
def test_databricks_notebook_runs_pipeline_then_refresh(spark, tmp_path):
    from wals_roberta.jobs.data.synthetic import generate, write_csv

    interactions, items = generate(90, 80, 1500, seed=3)
    write_csv(tmp_path / "data", interactions, items)
    # The refresh input: events of 10 brand-new users on known items.
    new = interactions.head(40).assign(user_id=lambda d: "new" + d.user_id.str[-1])
    new.to_csv(tmp_path / "new.csv", index=False)
    base = [
        f"data.interactions.path={tmp_path / 'data' / 'interactions.csv'}",
        f"data.items.path={tmp_path / 'data' / 'items.csv'}",
        "data.items.text_template=null",
        f"output.root={tmp_path / 'out'}",
        "wals.rank=8",
        "wals.iterations=3",
    ]
    config = str(REPO / "conf" / "demo.yaml")
    ns, shown, widgets = run_databricks(
        spark, {"config": config, "overrides": "\n".join(base), "stage": "pipeline"}
    )
    assert {"pipeline", "prepare", "embed", "project", "refresh"} <= set(widgets.choices["stage"])
    first = ns["run"].run_id
    stages_table, *metric_tables, published = [df.toPandas() for df in shown]
    assert set(stages_table.stage) == {"prepare", "train", "recommend", "evaluate", "publish"}
    assert set(stages_table.status) == {"complete"}
    metrics = json.loads((tmp_path / "out" / "runs" / first / "metrics.json").read_text())
    assert [t.segment.iloc[0] for t in metric_tables] == list(metrics["segments"])
    for table in metric_tables:
        segment = metrics["segments"][table.segment.iloc[0]]
        assert set(table.method) == set(segment["methods"])
        for _, row in table.iterrows():
            for key, value in segment["methods"][row.method].items():
                assert row[key] == pytest.approx(value)
    assert list(published.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(published) == 50 and published.user_id.isin(interactions.user_id).all()

    # No item changes today (data.items.path=null: items kept from the base run).
    refresh = [*base, f"data.interactions.path={tmp_path / 'new.csv'}", "data.items.path=null"]
    ns, shown, _ = run_databricks(
        spark, {"config": config, "overrides": "\n".join(refresh), "stage": "refresh"}
    )
    second = ns["run"].run_id
    assert second != first
    stages_table = shown[0].toPandas()
    assert stages_table.to_dict("records")[0]["stage"] == "refresh"
    assert set(stages_table.status) == {"complete"}
    lists = pd.read_parquet(tmp_path / "out" / "recommendations")
    assert set(new.user_id) <= set(lists.user_id)  # the new users now have lists
