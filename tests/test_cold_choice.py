"""The text map and the merge are chosen on validation carved from the training rows: the
test split is never read, and what was chosen is recorded and applied. The second run
(same input, config and seed) also shows that a run is reproduced bit for bit."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.encoders import MINILM
from wals_roberta.jobs import cli
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.synthetic import generate
from wals_roberta.jobs.runs import tables

pytestmark = pytest.mark.spark


def write_case(work):
    events, items = generate(n_users=200, n_items=150, n_interactions=5000, seed=3)
    events.to_csv(work / "events.csv", index=False)
    items.to_csv(work / "items.csv", index=False)
    conf = {
        "data": {
            "interactions": {"path": str(work / "events.csv"), "strength_col": "plays"},
            "items": {
                "path": str(work / "items.csv"),
                "text_template": "{title}. {format}. Genres: {genres}",
            },
        },
        "output": {"root": str(work / "out")},
        "split": {"holdout": "random", "cold_item_fraction": 0.2},
        "wals": {"rank": 8, "iterations": 5, "reg": 0.3, "alpha": 5.0, "confidence": "log"},
        "encoder": {"model": MINILM, "max_length": 32},
        "projection": {"knn_ks": [5, 20], "knn_temperatures": [0.05]},
        "recommend": {"k": 10},
        "validation": {"metric": "recall@10"},
        "evaluate": {"ks": [5, 10]},
    }
    (work / "conf.yaml").write_text(yaml.safe_dump(conf))
    return str(work / "conf.yaml")


def run_stages(conf, run_id, stages):
    for stage in stages:
        assert cli.main([stage, "--config", conf, "--run-id", run_id]) == 0


def sabotage_test_rows(spark, run):
    """Every test row moved to another item (and its strength changed): a choice that read
    the test split would change."""
    rows = tables.read_table(spark, run, "interactions").toPandas()
    test = rows[C.SPLIT] == C.TEST
    n_items = int(rows[C.ITEM_IDX].max()) + 1
    rows.loc[test, C.ITEM_IDX] = (rows.loc[test, C.ITEM_IDX] * 7 + 3) % n_items
    rows.loc[test, C.STRENGTH] = rows.loc[test, C.STRENGTH] * 10
    # A moved row that lands on a pair the user has is dropped (never a training row).
    rows = rows.assign(_test=test).sort_values("_test", kind="stable")
    rows = rows.drop_duplicates([C.USER_IDX, C.ITEM_IDX]).drop(columns="_test")
    schema = tables.read_table(spark, run, "interactions").schema
    tables.write_table(spark, run, "interactions", spark.createDataFrame(rows, schema))
    return int(test.sum())


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    work = tmp_path_factory.mktemp("choice")
    conf = write_case(work)
    run_stages(conf, "clean", ["prepare", "train", "embed", "project", "recommend", "evaluate"])
    run_stages(conf, "sabotaged", ["prepare"])
    root = str(work / "out")
    moved = sabotage_test_rows(spark, tables.Run(root, "sabotaged", "parquet"))
    run_stages(conf, "sabotaged", ["train", "embed", "project", "recommend"])

    def manifest(run_id):
        return json.loads((work / "out" / "runs" / run_id / "manifest.json").read_text())

    return {"clean": manifest("clean"), "sabotaged": manifest("sabotaged"), "moved": moved,
            "root": root, "conf": conf}  # fmt: skip


def test_the_choice_never_reads_test_rows(runs):
    assert runs["moved"] > 100
    clean = runs["clean"]["stages"]["project"]
    sabotaged = runs["sabotaged"]["stages"]["project"]
    for key in ("map", "merge"):
        assert clean[key] == sabotaged[key]
    for key in ("counts", "maps_tried", "merges_tried", "map_chosen", "merge_chosen"):
        assert clean["validation"][key] == sabotaged["validation"][key]


def test_what_was_tried_and_chosen_is_recorded_and_applied(runs, spark):
    project = runs["clean"]["stages"]["project"]
    validation = project["validation"]
    labels = [t["label"] for t in validation["maps_tried"]]
    assert labels[:6] == [f"ridge(lambda={lam:g})" for lam in (1, 3, 10, 30, 100, 300)]
    assert {"knn(K=5, T=0.05)", "knn(K=20, T=0.05)"} <= set(labels)
    assert any(label.startswith("blend(") for label in labels)
    # The best on validation, the ridge of least held-out error winning ties.
    tried = validation["maps_tried"]
    base = {"kind": "ridge", "lam": project["fit"]["lambda_by_r2"]}
    best = max(tried, key=lambda t: (t["value"], t["map"] == base))
    assert validation["map_chosen"] == best["label"] and project["map"] == best["map"]
    assert next(t for t in tried if t["map"] == base)["standard_error_vs_base"] == 0.0
    merges = validation["merges_tried"]
    assert merges[0]["label"] == "raw"
    assert all(0.0 <= m["value"] <= 1.0 and m["cold_share"] <= 1.0 for m in merges)
    # Reserved slots hold cold items in every validation list (k = 10 = the metric's cut).
    assert all(m["cold_share"] >= m["merge"]["cold_slots"] / 10 - 1e-9 for m in merges)
    # Raw is kept unless a setting beats it by validation.min_gain (1%) and by two standard
    # errors of the paired per-user difference; then the best such setting.
    raw = merges[0]["value"]
    clear = [merges[0]] + [
        m
        for m in merges[1:]
        if m["value"] >= raw * 1.01 and m["value"] - raw >= 2 * m["standard_error_vs_raw"]
    ]
    assert validation["merge_chosen"] == max(clear, key=lambda m: m["value"])["label"]
    recommend = runs["clean"]["stages"]["recommend"]
    assert recommend["merge"] == project["merge"]
    # The published share of cold list slots is what the lists hold.
    run = tables.Run(runs["root"], "clean", "parquet")
    recs = tables.read_table(spark, run, "recommendations").toPandas()
    vectors = tables.read_table(spark, run, "item_vectors").toPandas()
    cold = set(vectors[vectors[C.SOURCE] == "projected"][C.ITEM_ID])
    assert recommend["cold_share"] == pytest.approx(recs[C.ITEM_ID].isin(cold).mean(), abs=1e-6)
    metrics = runs["clean"]["metrics"]["segments"]["all"]["methods"]
    assert metrics["wals"]["cold_share@10"] == pytest.approx(
        recs[recs[C.RANK] <= 10][C.ITEM_ID].isin(cold).mean(), abs=1e-6
    )


def test_the_same_training_rows_give_the_same_tables_bit_for_bit(spark, runs):
    """The sabotaged run prepares the same input again and trains on the same training rows,
    read from a table written anew (other files, other row order): every table is the clean
    run's but for the test rows, floats bit for bit. Float sums follow the order rows are
    read in; the vectors must not."""

    def read(run_id, table, key):
        run = tables.Run(runs["root"], run_id, "parquet")
        df = tables.read_table(spark, run, table).toPandas()
        return df.sort_values(key).reset_index(drop=True)

    for table, key in [
        ("users", [C.USER_IDX]),
        ("items", [C.ITEM_IDX]),
        ("interactions", [C.USER_IDX, C.ITEM_IDX]),
        ("recommendations", [C.USER_ID, C.RANK]),
    ]:
        clean, sabotaged = read("clean", table, key), read("sabotaged", table, key)
        if table == "interactions":
            clean, sabotaged = (
                df[df[C.SPLIT] != C.TEST].reset_index(drop=True) for df in (clean, sabotaged)
            )
        assert len(clean) > 0, table
        pd.testing.assert_frame_equal(clean, sabotaged, check_exact=True, obj=table)
    for table, key, col in [
        ("user_factors", C.USER_IDX, C.FACTORS),
        ("item_factors", C.ITEM_IDX, C.FACTORS),
        ("item_vectors", C.ITEM_IDX, C.VECTOR),
        ("projection", "row", "weights"),
    ]:
        clean, sabotaged = read("clean", table, [key]), read("sabotaged", table, [key])
        assert clean[key].tolist() == sabotaged[key].tolist(), table
        a, b = np.stack(clean[col].to_numpy()), np.stack(sabotaged[col].to_numpy())
        assert a.dtype == np.float32 and a.shape == b.shape, table
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), table
