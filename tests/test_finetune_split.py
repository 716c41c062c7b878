"""What the finetune stage trains and validates on: the cold-start validation model's pairs
and user vectors, with the pseudo-cold items and the validation pairs kept out of training."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_config
from wals_roberta.jobs import finetune, prepare, train_wals
from wals_roberta.jobs.runs import tables

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def split(spark, tmp_path_factory):
    """A prepared and trained run of 60 users and 90 items in three tastes, and the
    finetune stage's training data written from it."""
    tmp = tmp_path_factory.mktemp("finetune-split")
    events = [(u, i) for u in range(60) for i in range(90) if i % 3 == u % 3 and (i + u) % 4]
    pd.DataFrame(events, columns=["user", "item"]).to_csv(tmp / "events.csv", index=False)
    titles = pd.DataFrame({"item": range(90), "title": [f"title {i}" for i in range(90)]})
    titles.to_csv(tmp / "items.csv", index=False)
    cfg = make_config(
        tmp,
        str(tmp / "events.csv"),
        **{
            "data.interactions.user_col": "user",
            "data.interactions.item_col": "item",
            "data.items.path": str(tmp / "items.csv"),
            "data.items.id_col": "item",
            "data.items.text_template": "{title}",
            "validation.pseudo_cold_fraction": 0.2,
            "encoder.finetune.enabled": "auto",
        },
    )
    prepare.run(spark, cfg, run_id="s")
    train_wals.run(spark, cfg, run_id="s")
    run = tables.open_run(spark, cfg, "s", create=False)
    items = tables.read_table(spark, run, "items")
    val = finetune.finetune_validation(spark, cfg, run, items)
    folder = str(tmp / "data")
    counts = finetune.write_training_data(spark, cfg, run, val, folder)
    read = {name: pd.read_parquet(f"{folder}/{name}") for name in ("items", "pairs", "validation")}
    frames = {
        "pseudo_cold": val.pseudo_cold.toPandas(),
        "fit": val.fit.toPandas(),
        "held": val.held.toPandas(),
        "val_users": val.user_factors.toPandas(),
        "run_users": tables.read_table(spark, run, "user_factors").toPandas(),
        "interactions": tables.read_table(spark, run, "interactions").toPandas(),
    }
    val.release()
    return counts, read, frames


def pairs_of(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_idx"].astype(int), frame["item_idx"].astype(int), strict=True))


def test_pseudo_cold_items_are_flagged_and_have_no_factors(split):
    counts, read, frames = split
    items = read["items"]
    pseudo = set(frames["pseudo_cold"]["item_idx"].astype(int))
    assert len(pseudo) > 0
    assert set(items.loc[items["held"], "item_idx"].astype(int)) == pseudo
    assert items.loc[items["held"], "factors"].isna().all()
    assert items.loc[~items["held"], "factors"].notna().all()
    assert counts["items"] == len(items) and counts["held_out_items"] == len(pseudo)


def test_training_pairs_are_the_validation_models_own(split):
    counts, read, frames = split
    train = pairs_of(read["pairs"])
    assert train and train <= pairs_of(frames["fit"])
    assert not train & pairs_of(frames["held"])
    assert not {i for _, i in train} & set(frames["pseudo_cold"]["item_idx"].astype(int))
    assert counts["train_pairs"] == len(read["pairs"]) == len(train)
    # Every held-out pair was a training row of the run, so the split carved those rows.
    run_train = frames["interactions"]
    assert pairs_of(frames["held"]) <= pairs_of(run_train[run_train["split"] == "train"])


def test_user_vectors_are_the_validation_models_not_the_runs(split):
    _, read, frames = split

    def vectors(frame):
        return {
            int(u): np.asarray(f) for u, f in zip(frame["user_idx"], frame["factors"], strict=True)
        }

    val_users, run_users = vectors(frames["val_users"]), vectors(frames["run_users"])
    for frame in (read["pairs"], read["validation"]):
        first = frame.drop_duplicates("user_idx")
        for user, vector in zip(first["user_idx"], first["user_factors"], strict=True):
            np.testing.assert_allclose(np.asarray(vector), val_users[int(user)], rtol=1e-6)
    user = int(read["pairs"]["user_idx"].iloc[0])
    assert not np.allclose(val_users[user], run_users[user], atol=1e-3)


def test_validation_pairs_are_held_pairs_on_pseudo_cold_items(split):
    counts, read, frames = split
    validation = pairs_of(read["validation"])
    pseudo = set(frames["pseudo_cold"]["item_idx"].astype(int))
    assert validation and validation <= pairs_of(frames["held"])
    assert {i for _, i in validation} <= pseudo
    assert counts["validation_pairs"] == len(validation)
