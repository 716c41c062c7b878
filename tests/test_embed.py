"""The embed stage on Spark: item text, the pandas UDF, the cache, ML-100k coverage."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_config
from tests.encoders import MINILM, build_tiny_roberta
from wals_roberta.jobs import embed_items, prepare
from wals_roberta.jobs.config import replace
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.errors import ConfigError, InputDataError
from wals_roberta.udfs.text_encoder import EncoderSpec, embedding_udf, encode_texts, load_encoder

pytestmark = pytest.mark.spark

CATALOG = pd.DataFrame(
    {
        "movie": [1, 2, 3, 4, 5],
        "title": ["Toy Story", "GoldenEye", "Four\x07 Rooms", None, "Copycat\u200b"],
        "year": ["1995", "1995", None, None, "1995"],
        "genres": ["Animation Comedy", "Action   Thriller", "Thriller", None, "Crime " * 3000],
    }
)


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    texts = [
        f"{t} ({y}). Genres: {g}"
        for t, y, g in zip(CATALOG.title, CATALOG.year, CATALOG.genres, strict=True)
    ]
    return build_tiny_roberta(tmp_path_factory.mktemp("roberta"), [str(t) for t in texts] * 10)


def setup_run(spark, tmp_path, encoder, catalog=CATALOG, **dotted):
    events = pd.DataFrame({"user": ["a", "a", "b", "b"], "item": [1, 2, 2, 3]})
    events.to_csv(tmp_path / "events.csv", index=False)
    catalog.to_csv(tmp_path / "items.csv", index=False)
    return make_config(
        tmp_path,
        str(tmp_path / "events.csv"),
        **{
            "data.interactions.user_col": "user",
            "data.interactions.item_col": "item",
            "data.items.path": str(tmp_path / "items.csv"),
            "data.items.id_col": "movie",
            "data.items.text_template": "{title} ({year}). Genres: {genres}",
            "encoder.model": encoder,
            "encoder.max_length": 32,
            **dotted,
        },
    )


def items_table(spark, cfg, run_id):
    run = tables.open_run(spark, cfg, run_id, create=False)
    return tables.read_table(spark, run, "items").toPandas().set_index("item_id")


def test_item_text_is_built_cleaned_and_counted(spark, tmp_path, tiny_roberta):
    cfg = setup_run(spark, tmp_path, tiny_roberta)
    report = prepare.run(spark, cfg, run_id="t")
    items = items_table(spark, cfg, "t")
    assert items.loc[1, "text"] == "Toy Story (1995). Genres: Animation Comedy"
    assert items.loc[2, "text"] == "GoldenEye (1995). Genres: Action Thriller"  # whitespace
    assert items.loc[3, "text"] == "Four Rooms (). Genres: Thriller"  # control char, null year
    assert items.loc[4, "text"] == "(). Genres:"  # nothing but the template
    assert len(items.loc[5, "text"]) == 10_000  # cut, counted
    assert items.text_hash.nunique() == 5
    text_counts = report["counts"]["items_catalog"]["text"]
    assert text_counts == {
        "texts_with_invalid_utf8": 0,
        "texts_with_control_chars": 2,
        "texts_truncated": 1,
    }


def test_template_naming_a_missing_column_is_a_config_error(spark, tmp_path, tiny_roberta):
    cfg = setup_run(
        spark, tmp_path, tiny_roberta, **{"data.items.text_template": "{title} by {director}"}
    )
    with pytest.raises(ConfigError, match="column 'director' is not in data.items"):
        prepare.run(spark, cfg, run_id="t")


def test_empty_catalog_is_an_error(spark, tmp_path, tiny_roberta):
    cfg = setup_run(spark, tmp_path, tiny_roberta, catalog=CATALOG.iloc[:0])
    with pytest.raises(InputDataError, match="empty catalog"):
        prepare.run(spark, cfg, run_id="t")


def test_udf_equals_the_plain_function(spark, tiny_roberta):
    spec = EncoderSpec(model=tiny_roberta, max_length=32, batch_size=3)
    texts = [f"text number {i} " * (i % 5 + 1) for i in range(23)]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id int, text string")
    got = df.repartition(3).select("id", embedding_udf(spec)("text").alias("v")).toPandas()
    got = np.stack(got.sort_values("id").v.to_numpy())
    tokenizer, model = load_encoder(tiny_roberta)
    np.testing.assert_allclose(got, encode_texts(texts, spec, tokenizer, model), atol=1e-5)


def test_cache_encodes_only_new_or_changed_texts(spark, tmp_path, tiny_roberta):
    cfg = setup_run(spark, tmp_path, tiny_roberta)
    prepare.run(spark, cfg, run_id="r1")
    first = embed_items.run(spark, cfg, run_id="r1")["counts"]
    assert first == {"items": 5, "empty_text": 0, "encoded_texts": 5, "reused_texts": 0}
    prepare.run(spark, cfg, run_id="r2")
    assert embed_items.run(spark, cfg, run_id="r2")["counts"]["encoded_texts"] == 0
    edited = CATALOG.copy()
    edited.loc[0, "title"] = "Toy Story 2"
    cfg = setup_run(spark, tmp_path, tiny_roberta, catalog=edited)
    prepare.run(spark, cfg, run_id="r3")
    counts = embed_items.run(spark, cfg, run_id="r3")["counts"]
    assert counts["encoded_texts"] == 1 and counts["reused_texts"] == 4
    run = tables.open_run(spark, cfg, "r3", create=False)
    emb = tables.read_table(spark, run, "item_embeddings").toPandas()
    assert sorted(emb.item_id) == [1, 2, 3, 4, 5] and len(emb.embedding[0]) == 32
    # a different pooling is a different fingerprint: everything is encoded again
    pooled = replace(cfg, **{"encoder.pooling": "cls"})
    assert embed_items.run(spark, pooled, run_id="r3")["counts"]["encoded_texts"] == 5


# MiniLM on every ML-100k item is also what tests/test_ml100k.py runs by default; the cache
# is the same code under either encoder.
@pytest.mark.parametrize(
    "encoder", ["tiny_roberta", pytest.param("minilm", marks=pytest.mark.slow)]
)
def test_all_ml100k_items_get_embeddings(spark, tmp_path, ml100k, tiny_roberta, encoder):
    model = tiny_roberta if encoder == "tiny_roberta" else MINILM
    cfg = make_config(
        tmp_path,
        str(ml100k / "interactions.csv"),
        **{
            "data.interactions.strength_col": "rating",
            "data.items.path": str(ml100k / "items.csv"),
            "data.items.text_template": "{title} ({year}). Genres: {genres}",
            "encoder.model": model,
        },
    )
    prepare.run(spark, cfg, run_id="m")
    counts = embed_items.run(spark, cfg, run_id="m")["counts"]
    assert counts["items"] == 1682 and counts["empty_text"] == 0
    run = tables.open_run(spark, cfg, "m", create=False)
    emb = tables.read_table(spark, run, "item_embeddings")
    assert emb.count() == 1682 and emb.select("item_id").distinct().count() == 1682
    again = embed_items.run(spark, cfg, run_id="m")["counts"]
    assert again["encoded_texts"] == 0 and again["reused_texts"] == counts["encoded_texts"]
