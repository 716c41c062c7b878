"""Config keys for the metastore table name and MLflow tracking: defaults and bad values."""

import importlib.util
from pathlib import Path

import pytest

from wals_roberta.jobs.config import load_config
from wals_roberta.jobs.runs.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "conf" / "demo.yaml"


def test_defaults_leave_tracking_and_the_table_off():
    cfg = load_config(DEMO)
    assert cfg.output.table is None and cfg.tracking.mlflow is False and cfg.tracking.uri is None
    assert load_config(None, ["data.interactions.path=x", "output.root=o"]).tracking.experiment == (
        "wals-roberta"
    )


@pytest.mark.parametrize("name", ["recs", "recs.wals_roberta", "main.recs.wals_roberta_2"])
def test_table_names_accepted(name):
    assert load_config(DEMO, [f"output.table={name}"]).output.table == name


@pytest.mark.parametrize(
    "name",
    ["recs.", "recs wals", "recs.wals-roberta", "a.b.c.d", "1recs.x", "recs;drop", "`recs`.x", ""],
)
def test_bad_table_names_name_the_key(name):
    with pytest.raises(ConfigError, match=r"^output\.table: must be unset or a table name"):
        load_config(DEMO, [f"output.table='{name}'"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("tracking.mlflow=yes please", "tracking.mlflow: must be true or false"),
        ("tracking.mlflow=1", "tracking.mlflow: must be true or false"),
        ("tracking.experiment=' '", "tracking.experiment: must be a non-empty experiment name"),
        ("tracking.uri=''", "tracking.uri: must be unset or a URI"),
        ("tracking.url=file:/x", "unknown config key 'tracking.url'; allowed here: experiment"),
    ],
)
def test_bad_tracking_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, [override])
    assert str(err.value).startswith(message)


def test_mlflow_missing_is_a_config_error_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError) as err:
        load_config(DEMO, ["tracking.mlflow=true"])
    assert str(err.value).startswith("tracking.mlflow:")
    assert "pip install 'wals-roberta[mlflow]'" in str(err.value)
    # Off, the same environment is fine.
    assert load_config(DEMO, ["tracking.mlflow=false"]).tracking.mlflow is False


def test_mlflow_on_when_installed():
    pytest.importorskip("mlflow")
    cfg = load_config(DEMO, ["tracking.mlflow=true", "tracking.uri=file:/tmp/mlruns"])
    assert cfg.tracking.mlflow is True and cfg.tracking.uri == "file:/tmp/mlruns"
