"""prepare: validation, dedupe, ids, confidence forms, splits, row accounting."""

import math

import pandas as pd
import pytest
from pyspark.sql import functions as F

from tests.conftest import make_config
from wals_roberta.jobs import prepare
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.indexing import assign_dense_index
from wals_roberta.jobs.data.splitting import split_interactions
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.errors import InputDataError

pytestmark = pytest.mark.spark


def write_csv(tmp_path, rows, columns=("user", "item", "plays", "ts"), name="events.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


def prepare_csv(spark, tmp_path, rows, **dotted):
    path = write_csv(tmp_path, rows)
    cfg = make_config(
        tmp_path,
        path,
        **{
            "data.interactions.user_col": "user",
            "data.interactions.item_col": "item",
            "data.interactions.strength_col": "plays",
            "data.interactions.timestamp_col": "ts",
            **dotted,
        },
    )
    report = prepare.run(spark, cfg, run_id="r1")
    run = tables.open_run(spark, cfg, "r1", create=False)
    read = {
        n: tables.read_table(spark, run, n).toPandas() for n in ("users", "items", "interactions")
    }
    return report, read


def test_duplicates_merge_and_string_ids_survive(spark, tmp_path):
    rows = [
        ("alice", "007", 2, 100),
        ("alice", "007", 3, 300),  # duplicate pair: strengths sum, latest timestamp
        ("alice", "x9", 1, 200),
        ("bob", "007", 4, 50),
    ]
    report, t = prepare_csv(spark, tmp_path, rows)
    counts = report["counts"]["interactions"]
    assert counts == {"rows_read": 4, "used": 3, "merged": 1, "dropped": {}}
    users = dict(zip(t["users"].user_id, t["users"].user_idx, strict=True))
    items = dict(zip(t["items"].item_id, t["items"].item_idx, strict=True))
    assert set(users) == {"alice", "bob"} and set(items) == {"007", "x9"}  # "007" not 7
    assert sorted(users.values()) == [0, 1] and sorted(items.values()) == [0, 1]
    pair = t["interactions"].query(f"user_idx == {users['alice']} and item_idx == {items['007']}")
    assert pair.strength.item() == 5 and pair.timestamp.item() == 300 and pair.n_events.item() == 2


def test_integer_ids_stay_integers_and_index_in_id_order(spark, tmp_path):
    rows = [(10, 3_000_000_000_000, 1, 1), (2, 5, 1, 2), (30, 5, 1, 3)]
    _, t = prepare_csv(spark, tmp_path, rows)
    users = t["users"].sort_values("user_idx")
    assert users.user_id.tolist() == [2, 10, 30]  # numeric order, not "10" < "2"
    assert t["items"].sort_values("item_idx").item_id.tolist() == [5, 3_000_000_000_000]
    assert str(t["users"].user_idx.dtype) == "int32"


@pytest.mark.parametrize(
    "form, expected",
    [
        ("binary", [1.0, 1.0, 0.0]),
        ("linear", [4.0, 9.0, 0.0]),
        ("log", [math.log(1 + 4 / 2), math.log(1 + 9 / 2), 0.0]),
        ("sqrt", [2.0, 3.0, 0.0]),
    ],
)
def test_confidence_forms(spark, tmp_path, form, expected):
    rows = [("a", "i1", 4, 1), ("a", "i2", 9, 1), ("a", "i3", 0, 1)]
    _, t = prepare_csv(spark, tmp_path, rows, **{"wals.confidence": form, "wals.log_epsilon": 2.0})
    got = t["interactions"].sort_values("item_idx").rating.tolist()
    assert got == pytest.approx(expected, rel=1e-6)


def test_time_decay_weights_each_event_before_merging(spark, tmp_path):
    day = 86_400
    rows = [("a", "i1", 8, 10 * day), ("a", "i1", 8, 0), ("a", "i2", 4, 10 * day)]
    _, t = prepare_csv(
        spark, tmp_path, rows, **{"wals.confidence": "time_decay", "wals.half_life_days": 10.0}
    )
    got = t["interactions"].sort_values("item_idx").rating.tolist()
    assert got == pytest.approx([8 + 8 * 0.5, 4.0], rel=1e-6)


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [("a", "i1", -1, 1), ("a", "i2", 1, 1)],
            "1 of 2 rows have a negative strength in column 'plays'",
        ),
        ([("a", "i1", "nan", 1), ("a", "i2", 1, 1)], "a NaN strength in column 'plays'"),
        ([("a", "i1", "inf", 1), ("a", "i2", 1, 1)], "an infinite strength in column 'plays'"),
        ([("a", "i1", "lots", 1), ("a", "i2", 1, 1)], "a non-numeric strength in column 'plays'"),
        ([(None, "i1", 1, 1), ("a", "i2", 1, 1)], "a null or empty user id"),
        ([("a", None, 1, 1), ("a", "i2", 1, 1)], "a null or empty item id"),
        ([("a", "i1", 1, "yesterday-ish"), ("a", "i2", 1, 1)], "unparseable timestamp in 'ts'"),
    ],
)
def test_invalid_rows_fail_with_the_reason(spark, tmp_path, rows, message):
    with pytest.raises(InputDataError) as err:
        prepare_csv(spark, tmp_path, rows)
    assert message in str(err.value)
    assert "invalid_rows=drop" in str(err.value) and "\n" not in str(err.value)


def test_invalid_rows_dropped_are_counted_and_add_up(spark, tmp_path):
    rows = [
        ("a", "i1", 1, 1),
        ("a", "i1", 2, 2),
        ("a", "i2", -3, 1),
        ("b", "i2", "NaN", 1),
        (None, "i3", 1, 1),
        ("b", "i3", "x", 1),
        ("b", "i4", 2, 5),
    ]
    report, t = prepare_csv(spark, tmp_path, rows, **{"data.interactions.invalid_rows": "drop"})
    counts = report["counts"]["interactions"]
    assert counts["dropped"] == {
        "null_user_id": 1,
        "non_numeric_strength": 1,
        "nan_strength": 1,
        "negative_strength": 1,
    }
    assert counts["used"] == 2 and counts["merged"] == 1
    assert counts["used"] + counts["merged"] + sum(counts["dropped"].values()) == len(rows)
    assert len(t["interactions"]) == 2


def test_missing_column_empty_input_and_missing_path(spark, tmp_path):
    path = write_csv(tmp_path, [("a", "i1", 1, 1)])
    cfg = make_config(tmp_path, path, **{"data.interactions.user_col": "customer"})
    with pytest.raises(
        InputDataError, match="column 'customer' .from data.interactions.user_col. not found"
    ):
        prepare.run(spark, cfg, run_id="r")
    empty = write_csv(tmp_path, [], name="empty.csv")
    cfg = make_config(
        tmp_path,
        empty,
        **{"data.interactions.user_col": "user", "data.interactions.item_col": "item"},
    )
    with pytest.raises(InputDataError, match="data.interactions: the input has no rows"):
        prepare.run(spark, cfg, run_id="r")
    cfg = make_config(tmp_path, str(tmp_path / "nowhere.parquet"))
    with pytest.raises(InputDataError, match="data.interactions.path: no such file or directory"):
        prepare.run(spark, cfg, run_id="r")


def test_index_is_dense_deterministic_and_refuses_too_many_ids(spark):
    ids = spark.createDataFrame([(f"id{n % 37:03d}",) for n in range(500)], "user_id string")
    first = assign_dense_index(
        ids.repartition(7), id_col="user_id", idx_col="user_idx", what="users"
    )
    second = assign_dense_index(
        ids.repartition(3), id_col="user_id", idx_col="user_idx", what="users"
    )
    a = first.toPandas().sort_values("user_id")
    b = second.toPandas().sort_values("user_id")
    assert a.user_idx.tolist() == list(range(37)) == b.user_idx.tolist()
    with pytest.raises(InputDataError, match="users: 37 distinct ids exceed the 36"):
        assign_dense_index(ids, id_col="user_id", idx_col="user_idx", what="users", max_ids=36)


def _user_events(spark, n_users=30, per_user=20):
    rows = [
        (u, i, float(i), 1000 + i * 10 + u)
        for u in range(n_users)
        for i in range(u % 7, u % 7 + per_user)
    ]
    rows.append((n_users, 0, 1.0, 5))  # a user with a single interaction stays in train
    return spark.createDataFrame(
        rows, "user_idx int, item_idx int, strength double, timestamp long"
    )


def test_random_split_per_user_fraction_seeded(spark):
    events = _user_events(spark)
    split = split_interactions(events, holdout="random", fraction=0.25, seed=3).toPandas()
    per_user = split.groupby("user_idx").split.apply(lambda s: (s == C.TEST).sum())
    assert (per_user.drop(30) == 5).all() and per_user[30] == 0
    again = split_interactions(events.repartition(5), holdout="random", fraction=0.25, seed=3)
    key = ["user_idx", "item_idx"]
    assert split.sort_values(key).split.tolist() == again.toPandas().sort_values(key).split.tolist()
    other = split_interactions(events, holdout="random", fraction=0.25, seed=4).toPandas()
    assert split.sort_values(key).split.tolist() != other.sort_values(key).split.tolist()


def test_time_split_holds_out_each_users_latest(spark):
    events = _user_events(spark)
    split = split_interactions(events, holdout="time", fraction=0.2, seed=0).toPandas()
    for _, rows in split[split.user_idx < 30].groupby("user_idx"):
        test, train = rows[rows.split == C.TEST], rows[rows.split == C.TRAIN]
        assert len(test) == 4 and test.timestamp.min() > train.timestamp.max()
    cut = split_interactions(events, holdout="time", fraction=0.2, seed=0, time_cutoff=1100)
    assert cut.filter((F.col("timestamp") >= 1100) != (F.col("split") == C.TEST)).count() == 0


def test_cold_items_have_no_training_rows(spark):
    events = _user_events(spark)
    split = split_interactions(
        events, holdout="random", fraction=0.2, seed=1, cold_item_fraction=0.3
    ).toPandas()
    trained = set(split[split.split == C.TRAIN].item_idx)
    cold = set(split.item_idx) - trained
    assert 0 < len(cold) < split.item_idx.nunique()
    assert (split[split.item_idx.isin(cold)].split == C.TEST).all()


def test_heldout_users_keep_their_test_rows_and_give_the_rest_as_fold_in(spark):
    events = _user_events(spark)
    plain = split_interactions(events, holdout="random", fraction=0.2, seed=1).toPandas()
    held = split_interactions(
        events, holdout="random", fraction=0.2, seed=1, heldout_user_fraction=0.3
    ).toPandas()
    merged = plain.merge(held, on=["user_idx", "item_idx"], suffixes=("_plain", "_held"))
    assert len(merged) == len(plain) == len(held)
    # The scored pairs are the same with and without held-out users.
    assert ((merged.split_plain == C.TEST) == (merged.split_held == C.TEST)).all()
    by_user = held.groupby("user_idx").split.agg(set)
    heldout = by_user[by_user.apply(lambda s: C.FOLD_IN in s)]
    assert 0 < len(heldout) < len(by_user)
    # A held-out user has no training row at all.
    assert all(C.TRAIN not in s for s in heldout)
