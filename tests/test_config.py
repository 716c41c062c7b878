from pathlib import Path

import pytest

from wals_roberta.jobs.config import load_config, replace
from wals_roberta.jobs.runs.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml", "large.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "conf" / name)
    assert cfg.wals.rank > 0 and cfg.recommend.k >= max(cfg.evaluate.ks)


def test_large_preset_is_the_high_capacity_one():
    cfg = load_config(REPO / "conf" / "large.yaml")
    assert 200 <= cfg.wals.rank <= 500 and 0.01 <= cfg.wals.reg <= 0.1
    assert 20 <= cfg.wals.iterations <= 30
    assert cfg.encoder.model == "roberta-base" and cfg.encoder.pooling == "last4_mean"
    assert 128 <= cfg.encoder.max_length <= 256


def test_set_overrides_convert_types(tmp_path):
    cfg = load_config(
        REPO / "conf" / "demo.yaml",
        [
            "wals.rank=128",
            "wals.reg=0.5",
            "recommend.exclude_seen=false",
            "evaluate.ks=[5, 10]",
            "split.time_cutoff=null",
            "spark.conf.spark.executor.memory=8g",
            "data.interactions.user_col=123",
        ],
    )
    assert cfg.wals.rank == 128 and isinstance(cfg.wals.rank, int)
    assert cfg.wals.reg == 0.5
    assert cfg.recommend.exclude_seen is False
    assert cfg.evaluate.ks == (5, 10)
    assert cfg.spark.conf["spark.executor.memory"] == "8g"
    assert cfg.data.interactions.user_col == "123"


def test_config_is_frozen():
    cfg = load_config(REPO / "conf" / "demo.yaml")
    with pytest.raises(AttributeError):
        cfg.wals.rank = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.spark.conf["x"] = "y"  # type: ignore[index]
    assert replace(cfg, **{"wals.rank": 3}).wals.rank == 3 and cfg.wals.rank != 3


@pytest.mark.parametrize(
    "override, message",
    [
        ("wals.rnak=3", "unknown config key 'wals.rnak'; allowed here: alpha"),
        ("walz.rank=3", "unknown config key 'walz'"),
        ("wals.rank=0", "wals.rank: must be an integer > 0, got 0"),
        ("wals.rank=-4", "wals.rank: must be an integer > 0, got -4"),
        ("wals.rank=abc", "wals.rank: must be an integer, got 'abc'"),
        ("wals.alpha=-1", "wals.alpha: must be a number >= 0, got -1.0"),
        ("recommend.k=0", "recommend.k: must be an integer > 0, got 0"),
        ("refresh.item_growth=-0.5", "refresh.item_growth: must be a number >= 0 (0: every item)"),
        ("wals.confidence=cubic", "wals.confidence: must be one of binary, linear, log, sqrt"),
        ("split.holdout=sometimes", "split.holdout: must be one of none, random, time"),
        ("split.fraction=1.5", "split.fraction: must be a number in (0, 1), got 1.5"),
        ("recommend.exclude_seen=maybe", "recommend.exclude_seen: must be true or false"),
        ("recommend.k=5", "evaluate.ks: largest cut-off 50 exceeds recommend.k=5"),
        ("recommend.merge=zscore", "recommend.merge: must be one of auto, raw, standardize"),
        ("recommend.cold_slots=51", "recommend.cold_slots: must be unset or an integer from 0 to"),
        ("recommend.cold_slots=-1", "recommend.cold_slots: must be unset or an integer from 0 to"),
        ("projection.map=lasso", "projection.map: must be one of auto, ridge, knn, blend"),
        ("projection.knn_ks=[0]", "projection.knn_ks: must be a list of integers > 0"),
        ("projection.blend_weights=[1.5]", "projection.blend_weights: must be a list of numbers"),
        ("validation.metric=auc", "validation.metric: must be recall@K or ndcg@K"),
        ("validation.pseudo_cold_fraction=0", "validation.pseudo_cold_fraction: must be unset"),
        ("wals", "--set 'wals': expected key=value"),
        ("wals.rank.x=1", "wals.rank: is a value, not a section"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "conf" / "default.yaml", [override])
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_time_decay_needs_half_life_and_timestamps(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "data: {interactions: {path: x.csv}}\noutput: {root: out}\nwals: {confidence: time_decay}\n"
    )
    with pytest.raises(ConfigError, match="wals.half_life_days"):
        load_config(conf)
    with pytest.raises(ConfigError, match="data.interactions.timestamp_col"):
        load_config(conf, ["wals.half_life_days=30"])


def test_missing_config_file_and_required_keys(tmp_path):
    with pytest.raises(ConfigError, match="--config: no such file"):
        load_config(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="data.interactions.path: must be a path"):
        load_config(empty)


def test_cg_solver_settings_are_checked():
    conf = REPO / "conf" / "default.yaml"
    assert load_config(conf, ["wals.solver=cg"]).wals.solver == "cg"
    with pytest.raises(ConfigError, match="wals.solver"):
        load_config(conf, ["wals.solver=lbfgs"])
    with pytest.raises(ConfigError, match="wals.cg_steps"):
        load_config(conf, ["wals.solver=cg", "wals.cg_steps=0"])
    with pytest.raises(ConfigError, match="wals.cg_blocks"):
        load_config(conf, ["wals.solver=cg", "wals.cg_blocks=0"])
    assert load_config(conf, ["wals.cg_blocks=3"]).wals.cg_blocks == 3
    with pytest.raises(ConfigError, match="wals.nonnegative"):
        load_config(conf, ["wals.solver=cg", "wals.nonnegative=true"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("recommend.merge=zscore", "recommend.merge: must be one of auto, raw, standardize"),
        ("recommend.cold_slots=60", "recommend.cold_slots: must be unset or an integer from 0"),
    ],
)
def test_bad_merge_settings_stop_the_cli_with_one_line(override, message, capsys):
    from wals_roberta.jobs import cli

    code = cli.main(
        ["recommend", "--config", str(REPO / "conf" / "default.yaml"), "--set", override]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and "\n" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "override, read, expected",
    [
        # YAML reads these as a mapping or a list; a string key takes the text as typed.
        ("data.items.text_template={title}", lambda c: c.data.items.text_template, "{title}"),
        ("data.items.text_template=[{t}]", lambda c: c.data.items.text_template, "[{t}]"),
        ("data.interactions.options.quote={", lambda c: c.data.interactions.options["quote"], "{"),
        ("spark.conf.spark.app.tag=[x]", lambda c: c.spark.conf["spark.app.tag"], "[x]"),
    ],
)
def test_set_of_a_string_key_takes_mapping_or_list_text_as_typed(override, read, expected):
    assert read(load_config(REPO / "conf" / "demo.yaml", [override])) == expected


def test_set_of_a_list_key_still_parses_the_list():
    assert load_config(REPO / "conf" / "demo.yaml", ["evaluate.ks=[5, 10]"]).evaluate.ks == (5, 10)
    with pytest.raises(ConfigError, match=r"wals.rank: must be an integer"):
        load_config(REPO / "conf" / "demo.yaml", ["wals.rank={8}"])


def test_unquoted_template_in_a_yaml_file_says_to_quote_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  interactions: {path: x.csv}\n  items: {path: i.csv, text_template: {title}}\n"
        "output: {root: out}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith("data.items.text_template: must be a string, got a YAML dict")
    assert "quote it" in message and "\n" not in message


def test_numbers_yaml_reads_as_text_are_numbers_and_bools_read_as_words():
    cfg = load_config(REPO / "conf" / "demo.yaml", ["wals.reg=3e-5", "validation.min_gain=1E-2"])
    assert cfg.wals.reg == 3e-5 and cfg.validation.min_gain == 0.01
    with pytest.raises(ConfigError, match=r"wals.reg: must be a number, got '3e-5x'"):
        load_config(REPO / "conf" / "demo.yaml", ["wals.reg=3e-5x"])
    with pytest.raises(ConfigError, match=r"must be one of false, true, auto, got 'maybe'"):
        load_config(REPO / "conf" / "demo.yaml", ["encoder.finetune.enabled=maybe"])
