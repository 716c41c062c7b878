"""``encoder.finetune``: defaults, conversion and one-line errors."""

from pathlib import Path

import pytest

from wals_roberta.jobs.config import load_config
from wals_roberta.jobs.runs.errors import ConfigError

DEMO = Path(__file__).resolve().parent.parent / "conf" / "demo.yaml"


def test_finetune_is_off_by_default():
    f = load_config(DEMO).encoder.finetune
    assert f.enabled is False and f.objective == "ranking"
    assert 2e-5 <= f.learning_rate <= 5e-5 and 16 <= f.batch_size <= 32


@pytest.mark.parametrize(("text", "expected"), [("auto", "auto"), ("true", True), ("false", False)])
def test_enabled_takes_true_false_and_auto(text, expected):
    cfg = load_config(DEMO, [f"encoder.finetune.enabled={text}"])
    assert cfg.encoder.finetune.enabled == expected
    assert type(cfg.encoder.finetune.enabled) is type(expected)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("encoder.finetune.enabled=sometimes", "encoder.finetune.enabled"),
        ("encoder.finetune.enabled=1", "encoder.finetune.enabled"),
        ("encoder.finetune.objective=mse", "encoder.finetune.objective"),
        ("encoder.finetune.learning_rate=0", "encoder.finetune.learning_rate"),
        ("encoder.finetune.batch_size=1", "encoder.finetune.batch_size"),
        ("encoder.finetune.lora_rank=-1", "encoder.finetune.lora_rank"),
        ("encoder.finetune.num_processes=0", "encoder.finetune.num_processes"),
        ("encoder.finetune.temperature=0", "encoder.finetune.temperature"),
        ("encoder.finetune.epochs=two", "encoder.finetune.epochs"),
        ("encoder.finetune.lora=8", "encoder.finetune"),
    ],
)
def test_bad_finetune_values_fail_in_one_line(override, named):
    with pytest.raises(ConfigError) as info:
        load_config(DEMO, [override])
    message = str(info.value)
    assert named in message and "\n" not in message
