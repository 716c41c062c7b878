"""Refresh: new interactions, users and items folded into a published run; the lists it
keeps and the lists it recomputes together equal a full re-score with the new vectors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.encoders import MINILM
from wals_roberta.jobs import cli
from wals_roberta.jobs.data import columns as C
from wals_roberta.jobs.data.synthetic import generate
from wals_roberta.jobs.model.lists import seen_items
from wals_roberta.jobs.runs import storage, tables
from wals_roberta.jobs.runs.errors import RunStateError

pytestmark = pytest.mark.spark


def write_config(path, interactions, items, root, **recommend):
    conf = {
        "data": {
            "interactions": {"path": str(interactions), "strength_col": "plays"},
            "items": {"path": str(items), "text_template": "{title}. {format}. Genres: {genres}"},
        },
        "output": {"root": str(root)},
        "wals": {"rank": 8, "iterations": 6, "reg": 0.3, "alpha": 5.0, "confidence": "log"},
        "encoder": {"model": MINILM, "max_length": 32},
        # One kNN setting (on this data the best of the default grid, so the same blends
        # are tried and ridge still wins): choosing among more is tests/test_cold_choice.py's.
        "projection": {"knn_ks": [10], "knn_temperatures": [0.01]},
        "recommend": {"k": 10, **recommend},
        "evaluate": {"ks": [5, 10]},
    }
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def refresh_case(work, **recommend):
    """A base run and a daily refresh of it (new users, items and events) under ``work``."""
    events, items = generate(n_users=150, n_items=120, n_interactions=4000, seed=9)
    new_items = items.tail(3)  # i117..: two stay cold (text only), one gets interactions
    base_items = items.drop(new_items.index)
    events = events[~events.item_id.isin(new_items.item_id)]
    base = events
    # Small changes on unpopular items, so the re-score rule has users to spare: a new user
    # with two rarely seen items, a known user with a brand-new item and with the most
    # popular item (one pair more: far below refresh.item_growth, its vector is kept).
    popularity = base.item_id.value_counts()
    rare, top = popularity.index[-2:], popularity.index[0]
    delta = pd.DataFrame(
        {
            "user_id": ["u_new", "u_new", base.user_id.iloc[0], base.user_id.iloc[0]],
            "item_id": [rare[0], rare[1], new_items.item_id.iloc[0], top],
            "plays": [3, 1, 5, 2],
            "timestamp": base.timestamp.max() + 1,
        }
    )
    for name, df in [("base", base), ("delta", delta), ("base_items", base_items),
                     ("new_items", new_items)]:  # fmt: skip
        df.to_csv(work / f"{name}.csv", index=False)
    root = work / "out"
    conf = write_config(
        work / "base.yaml", work / "base.csv", work / "base_items.csv", root, **recommend
    )
    assert cli.main(["pipeline", "--config", conf, "--run-id", "base"]) == 0
    conf = write_config(work / "delta.yaml", work / "delta.csv", work / "new_items.csv", root)
    assert cli.main(["refresh", "--config", conf, "--run-id", "daily"]) == 0
    return {"root": root, "delta": delta, "new_items": new_items, "base": base, "conf": conf,
            "rare": list(rare), "top": top}  # fmt: skip


@pytest.fixture(scope="module")
def refreshed(spark, tmp_path_factory):
    # Each user's scale, no reserved slot: the new cold items are checked on the merged
    # scale and enter only the lists they reach.
    return refresh_case(tmp_path_factory.mktemp("refresh"), merge="standardize")


def read(spark, root, table, run="daily"):
    return tables.read_table(spark, tables.Run(str(root), run, "parquet"), table)


def full_rescore(spark, root, merge):
    """Every user's list from the refreshed run's tables, under ``merge``."""
    from wals_roberta.jobs.cold.merge import read_moments
    from wals_roberta.jobs.config import RecommendConfig
    from wals_roberta.jobs.model.lists import scored_lists

    run = tables.Run(str(root), "daily", "parquet")
    has_scale = tables.has_table(spark, run, "score_scale")
    return scored_lists(
        read(spark, root, "user_factors").select(C.USER_IDX, C.FACTORS, C.USER_ID),
        read(spark, root, "item_vectors"),
        C.VECTOR,
        seen_items(read(spark, root, "interactions")),
        RecommendConfig(k=10),
        merge,
        read_moments(read(spark, root, "score_scale")) if has_scale else None,
    ).drop(C.USER_ID)


def assert_published_is_a_full_rescore(spark, root, merge, *, rtol, atol):
    """The published lists equal every user's list scored again under ``merge`` (151 users,
    k 10); returns the published lists."""
    users, items = read(spark, root, "users"), read(spark, root, "items")
    want = (
        full_rescore(spark, root, merge).join(users, C.USER_IDX).join(items, C.ITEM_IDX)
        .select(C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE).toPandas()
        .sort_values([C.USER_ID, C.RANK]).reset_index(drop=True)
    )  # fmt: skip
    got = spark.read.parquet(str(root / "recommendations")).toPandas()
    got = got.sort_values([C.USER_ID, C.RANK]).reset_index(drop=True)
    assert len(got) == len(want) == 151 * 10
    assert (got[[C.USER_ID, C.RANK, C.ITEM_ID]] == want[[C.USER_ID, C.RANK, C.ITEM_ID]]).all().all()
    np.testing.assert_allclose(got[C.SCORE], want[C.SCORE], rtol=rtol, atol=atol)
    return got


def test_kept_and_recomputed_lists_equal_a_full_rescore(spark, refreshed):
    from wals_roberta.jobs.cold.merge import Merge

    root = refreshed["root"]
    stages = json.loads((root / "runs" / "daily" / "manifest.json").read_text())["stages"]
    base = json.loads((root / "runs" / "base" / "manifest.json").read_text())["stages"]
    # The refresh applies the base run's merge.
    assert stages["refresh"]["merge"] == base["recommend"]["merge"]
    assert stages["refresh"]["merge"] == {"method": "standardize", "offset": 0.0, "cold_slots": 0}
    merge = Merge.from_dict(stages["refresh"]["merge"])
    assert_published_is_a_full_rescore(spark, root, merge, rtol=1e-5, atol=1e-6)
    counts = json.loads((root / "runs" / "daily" / "manifest.json").read_text())["stages"][
        "refresh"
    ]["counts"]
    # The rule spared some users: not everyone was recomputed.
    assert 0 < counts["rescored_users"] < 151 and counts["kept_users"] > 0
    assert counts["new_users"] == 1 and counts["new_items"] == 3
    assert counts["solved_items"] == 3  # the two rare items and the new one, not the top one
    assert counts["interactions"]["rows_read"] == len(refreshed["delta"])


def test_new_users_and_items_and_seen_items(spark, refreshed):
    root, delta, new_items = refreshed["root"], refreshed["delta"], refreshed["new_items"]
    vectors = read(spark, root, "item_vectors").toPandas().set_index(C.ITEM_ID)
    cold, warmed = new_items.item_id.iloc[1:], new_items.item_id.iloc[0]
    assert (vectors.loc[cold, C.SOURCE] == "projected").all()
    assert vectors.loc[warmed, C.SOURCE] == "wals"
    recs = spark.read.parquet(str(root / "recommendations")).toPandas()
    assert (recs.user_id == "u_new").sum() == 10
    # Nothing a user interacted with, before or in the delta, is recommended to them.
    everything = pd.concat([refreshed["base"], delta])
    assert recs.merge(everything, on=[C.USER_ID, C.ITEM_ID]).empty
    # Users untouched by the delta keep their factors exactly.
    before = read(spark, root, "user_factors", run="base").toPandas().set_index(C.USER_ID)
    after = read(spark, root, "user_factors").toPandas().set_index(C.USER_ID)
    untouched = sorted(set(before.index) - set(delta.user_id))
    assert untouched
    for u in untouched[:20]:
        np.testing.assert_array_equal(before.loc[u, C.FACTORS], after.loc[u, C.FACTORS])
    # Items that grew by at least refresh.item_growth are solved again, the others are kept.
    old_vectors = read(spark, root, "item_vectors", run="base").toPandas().set_index(C.ITEM_ID)
    np.testing.assert_array_equal(
        vectors.loc[refreshed["top"], C.VECTOR], old_vectors.loc[refreshed["top"], C.VECTOR]
    )
    for item in refreshed["rare"]:
        assert not np.array_equal(vectors.loc[item, C.VECTOR], old_vectors.loc[item, C.VECTOR])


def test_items_to_solve_by_growth(spark):
    from wals_roberta.jobs.incremental.vectors import items_to_solve

    # Item 0 had 20 known pairs (and 5 test pairs, not counted), item 1 had 2, item 2 none.
    base = spark.createDataFrame(
        [(u, 0, "train") for u in range(20)]
        + [(u, 0, "test") for u in range(20, 25)]
        + [(0, 1, "train"), (1, 1, "fold_in")],
        "user_idx int, item_idx int, split string",
    )
    new_rows = spark.createDataFrame(
        [(30, 0), (31, 0), (30, 1), (30, 2)], "user_idx int, item_idx int"
    )

    def solved(growth):
        return sorted(r.item_idx for r in items_to_solve(base, new_rows, growth).collect())

    assert solved(0.1) == [0, 1, 2]  # 2 / 20 reaches 10%
    assert solved(0.11) == [1, 2]  # 2 / 20 does not; 1 / 2 does; no known pairs: always
    assert solved(0.6) == [2]
    assert solved(0.0) == [0, 1, 2]


def test_rescore_users_follows_the_rule(spark, monkeypatch):
    from wals_roberta.jobs.config import config_from_dict
    from wals_roberta.jobs.incremental.rescoring import rescore_users

    cfg = config_from_dict(
        {"data": {"interactions": {"path": "x"}}, "output": {"root": "y"}, "recommend": {"k": 2}}
    )
    users = spark.createDataFrame(
        [(u, [1.0, float(u)], f"u{u}") for u in range(6)],
        "user_idx int, factors array<float>, user_id string",
    )
    items = spark.createDataFrame(
        [(i, [float(i), 1.0], f"i{i}") for i in range(4)],
        "item_idx int, vector array<float>, item_id string",
    )
    lists = "user_id string, rank int, item_id string, score float"
    old = spark.createDataFrame(
        [(f"u{u}", r, f"i{i}", 1.0) for u in range(6) for r, i in enumerate([0, 1], 1)], lists
    )

    def rescored(changed: list[int], lists=old, changed_users=(), seen=None) -> list[int]:
        changed_items = spark.createDataFrame([(i,) for i in changed], "item_idx int")
        moved = spark.createDataFrame([(u,) for u in changed_users], "user_idx int")
        if seen is not None:
            seen = spark.createDataFrame(seen, "user_idx int, item_idx int")
        todo = rescore_users(users, items, changed_items, moved, lists, seen, cfg, n_items=4)
        return sorted(r.user_idx for r in todo.collect())

    assert rescored([2, 3]) == list(range(6))  # half the catalog: no check, everyone
    # Lists of items 0 and 1 with k-th scores (99) above anything item 3 scores (3 + u):
    # a changed item 3 re-scores only user 5, whose list is shorter than k; a changed
    # item 1 re-scores everyone whose list holds it.
    high = spark.createDataFrame(
        [(f"u{u}", r, f"i{i}", 99.0) for u in range(5) for r, i in enumerate([0, 1], 1)]
        + [("u5", 1, "i0", 99.0)],
        lists,
    )
    assert rescored([3], high) == [5]
    assert rescored([3], high, changed_users=[0, 5]) == [0, 5]  # changed users, always
    assert rescored([1], high) == [0, 1, 2, 3, 4, 5]
    # k-th scores of 4.5: item 3 overtakes them for users 2.. (3 + u >= 4.5), not 0 and 1.
    mid = spark.createDataFrame(
        [(f"u{u}", r, f"i{i}", 4.5) for u in range(6) for r, i in enumerate([0, 1], 1)], lists
    )
    assert rescored([3], mid) == [2, 3, 4, 5]
    # A seen item never enters a list: user 4 has seen item 3, so it cannot overtake theirs.
    assert rescored([3], mid, seen=[(4, 3), (2, 0), (0, 3)]) == [2, 3, 5]
    assert rescored([], mid) == []  # nothing changed, no list is short: nobody
    # Changed vectors past what the check broadcasts: everyone, without the check.
    monkeypatch.setattr(
        "wals_roberta.jobs.incremental.rescoring.MAX_CHECK_FLOATS", cfg.wals.rank - 1
    )
    assert rescored([3], high) == list(range(6))


def test_a_retried_refresh_starts_again_from_the_same_base(spark, refreshed):
    # A retry after the publish (e.g. a scheduler task that failed later) must not take its
    # own published run as the base: it recomputes from the base and publishes the same.
    root = refreshed["root"]

    def published():
        df = spark.read.parquet(str(root / "recommendations")).toPandas()
        return df.sort_values([C.USER_ID, C.RANK]).reset_index(drop=True)

    before = published()
    assert cli.main(["refresh", "--config", refreshed["conf"], "--run-id", "daily"]) == 0
    manifest = json.loads((root / "runs" / "daily" / "manifest.json").read_text())
    assert manifest["stages"]["refresh"]["base_run"] == "base"
    after = published()
    assert (
        (after[[C.USER_ID, C.RANK, C.ITEM_ID]] == before[[C.USER_ID, C.RANK, C.ITEM_ID]])
        .all()
        .all()
    )


def test_a_refresh_with_another_encoder_than_its_base_is_refused(refreshed, capsys):
    argv = ["refresh", "--config", refreshed["conf"], "--run-id", "other_encoder"]
    assert cli.main([*argv, "--set", "encoder.max_length=16"]) == 2
    # The base is the newest published run: the refresh "daily", whose embed recorded it.
    assert "encoder.* differs from base run daily's" in capsys.readouterr().err


def test_refreshed_tables_are_layers_over_the_base_read_whole(spark, refreshed):
    root, delta = refreshed["root"], refreshed["delta"]
    layer = spark.read.parquet(str(root / "runs" / "daily" / "interactions")).toPandas()
    assert len(layer) == len(delta)  # the four pairs the delta touched, nothing else
    marker = json.loads((root / "runs" / "daily" / "interactions" / "_layer.json").read_text())
    assert marker["base_run"] == "base" and marker["depth"] == 1
    # The whole table as read: the base run's rows with the delta's plays added per pair.
    users = read(spark, root, "users").toPandas().set_index(C.USER_ID)[C.USER_IDX]
    items = read(spark, root, "items").toPandas().set_index(C.ITEM_ID)[C.ITEM_IDX]
    want = read(spark, root, "interactions", run="base").toPandas()
    want = want.set_index([C.USER_IDX, C.ITEM_IDX])[C.STRENGTH].to_dict()
    for row in delta.itertuples():
        pair = (users[row.user_id], items[row.item_id])
        want[pair] = want.get(pair, 0.0) + row.plays
    got = read(spark, root, "interactions").toPandas()
    assert not got.duplicated([C.USER_IDX, C.ITEM_IDX]).any()
    assert got.set_index([C.USER_IDX, C.ITEM_IDX])[C.STRENGTH].to_dict() == pytest.approx(want)
    # Embeddings too: only the three new texts were embedded; the table reads whole.
    layer = spark.read.parquet(str(root / "runs" / "daily" / "item_embeddings")).toPandas()
    assert sorted(layer[C.ITEM_ID]) == sorted(refreshed["new_items"].item_id)
    before = read(spark, root, "item_embeddings", run="base").toPandas().set_index(C.ITEM_ID)
    after = read(spark, root, "item_embeddings").toPandas().set_index(C.ITEM_ID)
    assert sorted(after.index) == sorted([*before.index, *layer[C.ITEM_ID]])
    for item in before.index[:10]:
        np.testing.assert_array_equal(after.loc[item, "embedding"], before.loc[item, "embedding"])
    # users and items: the layers hold the new user and the three new items.
    base_users = read(spark, root, "users", run="base").toPandas()
    layer = spark.read.parquet(str(root / "runs" / "daily" / "users")).toPandas()
    assert list(layer[C.USER_ID]) == ["u_new"]
    assert layer[C.USER_IDX].tolist() == [base_users[C.USER_IDX].max() + 1]
    assert sorted(users.index) == sorted([*base_users[C.USER_ID], "u_new"])
    layer = spark.read.parquet(str(root / "runs" / "daily" / "items")).toPandas()
    assert sorted(layer[C.ITEM_ID]) == sorted(refreshed["new_items"].item_id)
    assert layer["text"].notna().all()
    assert len(items) == len(read(spark, root, "items", run="base").toPandas()) + 3
    # User factors: the layer holds the delta's users and the users the base run folded in
    # at recommend time; read whole, every user with a vector is there once.
    layer = spark.read.parquet(str(root / "runs" / "daily" / "user_factors")).toPandas()
    folded = set()
    if (root / "runs" / "base" / "fold_in_factors").exists():
        folded = set(read(spark, root, "fold_in_factors", run="base").toPandas()[C.USER_IDX])
    assert set(layer[C.USER_IDX]) == set(users[delta.user_id.unique()]) | folded
    trained = set(read(spark, root, "user_factors", run="base").toPandas()[C.USER_IDX])
    got = read(spark, root, "user_factors").toPandas()
    assert not got[C.USER_IDX].duplicated().any()
    assert set(got[C.USER_IDX]) == trained | set(layer[C.USER_IDX])
    # Item vectors: the layer holds the new items (two projected, one solved) and the two
    # rare items that grew enough to be solved again; read whole, every item once.
    layer = spark.read.parquet(str(root / "runs" / "daily" / "item_vectors")).toPandas()
    assert sorted(layer[C.ITEM_ID]) == sorted([*refreshed["new_items"].item_id, *refreshed["rare"]])
    got = read(spark, root, "item_vectors").toPandas()
    assert not got[C.ITEM_ID].duplicated().any()
    assert sorted(got[C.ITEM_ID]) == sorted(items.index)


def test_changed_item_rows_are_new_items_and_changed_texts(spark):
    from wals_roberta.jobs.incremental.ids import changed_item_rows

    schema = "item_id string, item_idx int, text string, text_hash string"
    old = spark.createDataFrame(
        [("a", 0, "old a", "ha"), ("b", 1, "same b", "hb"), ("c", 2, None, None),
         ("d", 3, "d", "hd")],
        schema,
    )  # fmt: skip
    new_items = spark.createDataFrame([("e", 4), ("f", 5)], "item_id string, item_idx int")
    texts = spark.createDataFrame(
        [("a", "new a", "ha2"), ("b", "same b", "hb"), ("c", "first c", "hc"), ("d", None, None),
         ("e", "text e", "he")],
        "item_id string, text string, text_hash string",
    )  # fmt: skip

    def rows(texts):
        got = changed_item_rows(new_items, texts, old).collect()
        return sorted((r.item_id, r.item_idx, r.text, r.text_hash) for r in got)

    # a's text changed, c gained one, d's empty catalog text keeps its own, b is unchanged;
    # both new items are rows, f without text.
    assert rows(texts) == [
        ("a", 0, "new a", "ha2"), ("c", 2, "first c", "hc"), ("e", 4, "text e", "he"),
        ("f", 5, None, None),
    ]  # fmt: skip
    assert rows(None) == [("e", 4, None, None), ("f", 5, None, None)]


def test_layers_chain_compact_and_keep_their_bases_from_pruning(spark, tmp_path, monkeypatch):
    from tests.conftest import make_config

    cfg = make_config(tmp_path, "unused.csv")
    root = str(tmp_path / "out")
    keys = [C.USER_IDX, C.ITEM_IDX]

    def run(name):
        return tables.open_run(spark, cfg, name, create=True)

    def frame(rows):
        return spark.createDataFrame(rows, "user_idx int, item_idx int, strength double")

    def table(name):
        got = tables.read_table(spark, tables.Run(root, name, "parquet"), "t").collect()
        assert len(got) == len({(r[0], r[1]) for r in got})
        return {(r[0], r[1]): r[2] for r in got}

    want = {(u, i): 1.0 for u in range(4) for i in range(3)}
    tables.write_table(spark, run("a"), "t", frame([(*p, v) for p, v in want.items()]))
    for name, base, rows, depth in [
        ("b", "a", [(0, 0, 5.0), (9, 9, 1.0)], 1),
        ("c", "b", [(0, 0, 7.0), (1, 1, 2.0)], 2),
    ]:
        assert tables.write_layer(spark, run(name), "t", frame(rows), run(base), keys) == (
            len(rows),
            depth,
        )
        want.update({(u, i): v for u, i, v in rows})
        assert table(name) == want
    assert table("b")[(0, 0)] == 5.0 and table("a")[(0, 0)] == 1.0  # bases stay as they were
    # Past MAX_LAYERS the whole table is written again: no marker, same rows.
    monkeypatch.setattr(tables, "MAX_LAYERS", 2)
    rows = [(2, 2, 4.0)]
    assert tables.write_layer(spark, run("d"), "t", frame(rows), run("c"), keys) == (13, 0)
    want.update({(2, 2): 4.0})
    assert table("d") == want and not (tmp_path / "out/runs/d/t/_layer.json").exists()
    # Pruning keeps every run a kept run's layers read, and drops them once nothing does.
    assert tables.prune_runs(spark, root, keep=1, protect="c") == []
    assert tables.prune_runs(spark, root, keep=1, protect="d") == ["a", "b", "c"]
    assert table("d") == want
    tables.write_layer(spark, run("e"), "t", frame(rows), run("d"), keys)
    storage.delete(spark, storage.join(root, "runs", "d"))
    with pytest.raises(RunStateError, match=r"'t' of run e holds only the rows that changed"):
        table("e")


def test_refresh_applies_the_base_runs_merge(spark, refreshed, tmp_path):
    """A base run that merges on each user's scale with 2 reserved cold slots: the refresh
    (whose own config says nothing of the merge) lists under the same merge, and what it
    keeps and recomputes equals a full re-score with that merge; both new cold items are
    in every list of a user who has not seen them.

    The base is the module's base run copied to a root of its own and listed again under
    that merge (its recommend stage), then published: what its project stage chose does
    not depend on the merge, and a merge taken from there instead would be caught."""
    from wals_roberta.jobs.cold.merge import Merge

    merge = Merge("standardize", 0.5, 2)
    work, root = refreshed["root"].parent, tmp_path / "out"
    shutil.copytree(refreshed["root"] / "runs" / "base", root / "runs" / "base")
    conf = write_config(
        tmp_path / "base.yaml", work / "base.csv", work / "base_items.csv", root,
        merge="standardize", cold_offset=0.5, cold_slots=2,
    )  # fmt: skip
    for stage in ("recommend", "publish"):
        assert cli.main([stage, "--config", conf, "--run-id", "base"]) == 0
    base = json.loads((root / "runs" / "base" / "manifest.json").read_text())["stages"]
    assert base["recommend"]["merge"] == merge.to_dict()
    conf = write_config(tmp_path / "delta.yaml", work / "delta.csv", work / "new_items.csv", root)
    assert cli.main(["refresh", "--config", conf, "--run-id", "daily"]) == 0
    stages = json.loads((root / "runs" / "daily" / "manifest.json").read_text())["stages"]
    assert stages["refresh"]["base_run"] == "base"
    assert stages["refresh"]["merge"] == merge.to_dict()
    got = assert_published_is_a_full_rescore(spark, root, merge, rtol=1e-4, atol=1e-5)
    cold = set(refreshed["new_items"].item_id.iloc[1:])
    listed = got.groupby(C.USER_ID)[C.ITEM_ID].apply(lambda ids: len(cold & set(ids)))
    assert (listed == 2).all()
    counts = stages["refresh"]["counts"]
    assert counts["rescored_users"] > 0


def test_knn_projection_over_a_refresh_run_uses_its_solved_vectors(spark, tmp_path):
    """A refresh run writes no item_factors: the next refresh's kNN map takes the warm
    neighbours from its item_vectors (was: 'item_factors' is missing, on the second daily
    refresh of a chain whose map is knn or blend)."""
    from tests.conftest import make_config
    from wals_roberta.jobs.cold.maps import TextMap
    from wals_roberta.jobs.incremental.vectors import project_new_items
    from wals_roberta.jobs.model.projection import weights_frame

    cfg = make_config(tmp_path, "unused.csv", **{"projection.min_interactions": 1})
    base = tables.open_run(spark, cfg, "daily1", create=True)
    # Two warm items with unit embeddings on the axes; item 2 is cold (projected).
    vectors = [(0, [1.0, 0.0], "wals"), (1, [0.0, 1.0], "blended"), (2, [5.0, 5.0], "projected")]
    tables.write_table(spark, base, "item_vectors", spark.createDataFrame(
        [(i, f"i{i}", v, s) for i, v, s in vectors],
        "item_idx int, item_id string, vector array<float>, source string",
    ))  # fmt: skip
    tables.write_table(spark, base, "item_embeddings", spark.createDataFrame(
        [(0, "h0", [1.0, 0.0]), (1, "h1", [0.0, 1.0]), (2, "h2", [0.6, 0.8])],
        "item_idx int, text_hash string, embedding array<float>",
    ))  # fmt: skip
    tables.write_table(spark, base, "interactions", spark.createDataFrame(
        [(0, 0, "train"), (0, 1, "train")], "user_idx int, item_idx int, split string"
    ))  # fmt: skip
    tables.write_table(spark, base, "projection", weights_frame(spark, np.eye(2, dtype="f4")))
    queries = spark.createDataFrame(
        [(7, [1.0, 0.0], "new")], "item_idx int, embedding array<float>, item_id string"
    )
    knn = TextMap(kind="knn", k=1, temperature=0.01)
    got = project_new_items(spark, base, cfg, knn, queries).collect()
    # Its one nearest warm neighbour is item 0, whose solved vector it takes; never the
    # projected item 2.
    assert [(r[C.ITEM_IDX], r[C.ITEM_ID]) for r in got] == [(7, "new")]
    np.testing.assert_allclose(got[0][C.VECTOR], [1.0, 0.0], atol=1e-4)
