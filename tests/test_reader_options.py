"""Reader options (data.<source>.options, csv_delimiter as their alias) and the hint for a
CSV read with the wrong delimiter."""

import pandas as pd
import pytest

from tests.conftest import make_config
from tests.test_prepare import prepare_csv, write_csv
from wals_roberta.jobs import prepare
from wals_roberta.jobs.config import InteractionsInput, replace
from wals_roberta.jobs.config.sources import reader_options
from wals_roberta.jobs.data.inputs import read_source
from wals_roberta.jobs.data.item_text import read_catalog
from wals_roberta.jobs.runs.errors import ConfigError, InputDataError

pytestmark = pytest.mark.spark

ROWS = [("alice", "007", 2, 100), ("alice", "x9", 1, 200), ("bob", "007", 4, 50)]


def semicolon_csv(tmp_path, rows=ROWS, name="events_semi.csv"):
    path = tmp_path / name
    pd.DataFrame(rows, columns=["user", "item", "plays", "ts"]).to_csv(path, index=False, sep=";")
    return str(path)


def test_a_semicolon_csv_through_options_prepares_the_same_tables(spark, tmp_path):
    for sub in ("comma", "semi_delimiter", "semi_SEP"):
        (tmp_path / sub).mkdir()
    report, comma = prepare_csv(spark, tmp_path / "comma", ROWS)
    semi = semicolon_csv(tmp_path)
    for opts in ({"delimiter": ";"}, {"SEP": ";"}):
        got_report, got = prepare_csv(
            spark,
            tmp_path / f"semi_{next(iter(opts))}",
            ROWS,
            **{"data.interactions.path": semi, "data.interactions.options": opts},
        )
        assert got_report["counts"]["interactions"] == report["counts"]["interactions"]
        for table in ("users", "items", "interactions"):
            key = list(comma[table].columns)
            a = comma[table].sort_values(key).reset_index(drop=True)
            b = got[table].sort_values(key).reset_index(drop=True)
            pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=table)


def test_a_csv_read_with_the_wrong_delimiter_names_the_option_to_set(spark, tmp_path):
    cfg = make_config(tmp_path, semicolon_csv(tmp_path), **{"data.interactions.user_col": "user"})
    with pytest.raises(InputDataError) as err:
        prepare.run(spark, cfg, run_id="r")
    assert str(err.value) == (
        "data.interactions: column 'user' (from data.interactions.user_col) not found; the input "
        "has one column 'user;item;plays;ts', which looks ';'-delimited: "
        'set data.interactions.options.delimiter=";"'
    )
    tab = tmp_path / "events.tsv"
    tab.write_text("user\titem\nalice\t007\n")
    with pytest.raises(InputDataError, match=r"looks '\\t'-delimited: .*delimiter=\"\\t\"$") as err:
        prepare.run(spark, replace(cfg, **{"data.interactions.path": str(tab)}), run_id="r")
    assert "\n" not in str(err.value) and "\t" not in str(err.value)


def test_quote_escape_and_multiline_reach_the_items_reader(spark, tmp_path):
    items = tmp_path / "items.csv"
    items.write_text('item_id,title,genres\n1,"Toy ""Story""\npart two",Animation\n2,Plain,Drama\n')
    events = write_csv(tmp_path, [("a", "1", 1, 1), ("a", "2", 1, 2)])
    dotted = {
        "data.items.path": str(items),
        "data.items.text_template": "{title}. {genres}",
    }
    cfg = make_config(tmp_path, events, **dotted)
    _, _, report = read_catalog(spark, cfg)
    assert report["rows_read"] == 3  # the newline splits the quoted title without multiLine
    # lower-case names work too: Spark's option names are case-insensitive
    cfg = replace(cfg, **{"data.items.options": {"multiline": True, "escape": '"'}})
    _, texts, report = read_catalog(spark, cfg)
    assert report["rows_read"] == 2 and report["used"] == 2
    got = dict(texts.select("item_id", "text").collect())
    assert got == {1: 'Toy "Story" part two. Animation', 2: "Plain. Drama"}


def test_options_reach_a_parquet_reader(spark, tmp_path):
    folder = tmp_path / "events.parquet"
    spark.createDataFrame([("a", "i1")], "user_id string, item_id string").write.parquet(
        str(folder / "part=1")
    )
    spark.createDataFrame(
        [("b", "i2", 3.0)], "user_id string, item_id string, w double"
    ).write.parquet(str(folder / "part=2"))
    src = InteractionsInput(path=str(folder), format="parquet")
    assert "w" not in read_source(spark, src, "data.interactions").columns
    merged = InteractionsInput(path=str(folder), format="parquet", options={"mergeSchema": "true"})
    assert "w" in read_source(spark, merged, "data.interactions").columns


def test_csv_delimiter_is_an_alias_and_conflicts_are_config_errors(tmp_path):
    cfg = make_config(tmp_path, "x.csv", **{"data.interactions.csv_delimiter": ";"})
    assert reader_options(cfg.data.interactions, "data.interactions") == {"sep": ";"}
    same = {"data.interactions.csv_delimiter": ";", "data.interactions.options": {"sep": ";"}}
    assert reader_options(make_config(tmp_path, "x.csv", **same).data.interactions, "k") == {
        "sep": ";"
    }
    with pytest.raises(
        ConfigError,
        match=r"^data.interactions.csv_delimiter=';' and data.interactions.options.delimiter='\|' "
        "disagree; csv_delimiter is an alias of options.delimiter",
    ):
        make_config(
            tmp_path,
            "x.csv",
            **{
                "data.interactions.csv_delimiter": ";",
                "data.interactions.options": {"delimiter": "|"},
            },
        )
    with pytest.raises(
        ConfigError, match=r"^data.items.options: 'sep' and 'delimiter' are the same"
    ):
        make_config(tmp_path, "x.csv", **{"data.items.options": {"sep": ";", "delimiter": ","}})
    with pytest.raises(ConfigError, match=r"'multiLine' and 'multiline' are the same Spark option"):
        make_config(
            tmp_path, "x.csv", **{"data.items.options": {"multiLine": "true", "multiline": "false"}}
        )


def test_options_on_a_table_source_are_refused(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^data.interactions.options.delimiter: reader options do not apply to "
        r"data.interactions.format=table",
    ):
        make_config(
            tmp_path,
            "db.events",
            **{
                "data.interactions.format": "table",
                "data.interactions.options": {"delimiter": ";"},
            },
        )
    with pytest.raises(ConfigError, match=r"^data.items.csv_delimiter: reader options do not"):
        make_config(
            tmp_path,
            "x.csv",
            **{"data.items.format": "table", "data.items.csv_delimiter": ";"},
        )
    cfg = make_config(tmp_path, "db.events", **{"data.interactions.format": "table"})
    assert reader_options(cfg.data.interactions, "data.interactions") == {}
