"""The synthetic generator: reproducible, text tied to topic by ``text_signal``."""

import pandas as pd
import pytest

from wals_roberta.jobs.data.synthetic import TOPICS, generate, item_topics, main

SHAPE = {"n_users": 60, "n_items": 400, "n_interactions": 1200, "seed": 5}


def title_words(title: str) -> list[str]:
    """``"Galaxy Comet of the lunar"`` -> ``["galaxy", "comet", "lunar"]``."""
    first, second, _, _, third = title.split()
    return [first.lower(), second.lower(), third]


def own_topic_share(items: pd.DataFrame, seed: int) -> float:
    """The share of title words that belong to the vocabulary of the item's own topic."""
    names = list(TOPICS)
    topics = [names[t] for t in item_topics(len(items), seed)]
    hits = [w in TOPICS[t] for title, t in zip(items.title, topics, strict=True) for w in
            title_words(title)]  # fmt: skip
    return sum(hits) / len(hits)


@pytest.mark.parametrize("signal", [1.0, 0.3])
def test_same_seed_and_arguments_give_the_same_frames(signal):
    a = generate(**SHAPE, text_signal=signal)
    b = generate(**SHAPE, text_signal=signal)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)
    other = generate(**{**SHAPE, "seed": 6}, text_signal=signal)
    assert not a[1].title.equals(other[1].title)


def test_full_signal_is_the_generator_as_it_always_was():
    interactions, items = generate(**SHAPE)
    # Pinned from the generator before text_signal existed (seed 5, 20 users, 12 items).
    _, small = generate(20, 12, 200, seed=5)
    assert small.head(3).to_dict("records") == [
        {"item_id": "i00000", "title": "Chorus Stage of the jazz", "format": "Film",
         "genres": "music romance"},
        {"item_id": "i00001", "title": "Goal Rival of the championship", "format": "Film",
         "genres": "sports horror"},
        {"item_id": "i00002", "title": "Galaxy Comet of the lunar", "format": "Series",
         "genres": "space cooking"},
    ]  # fmt: skip
    # Every title word and the first genre come from the item's topic.
    assert own_topic_share(items, SHAPE["seed"]) == 1.0
    names = list(TOPICS)
    first_genres = items.genres.str.split().str[0]
    assert first_genres.tolist() == [names[t] for t in item_topics(len(items), SHAPE["seed"])]
    pd.testing.assert_frame_equal(interactions, generate(**SHAPE, text_signal=1.0)[0])


def test_no_signal_gives_titles_mostly_outside_the_topic_and_the_same_interactions():
    interactions, items = generate(**SHAPE, text_signal=0.0)
    # A word from a uniformly drawn topic is in the item's own topic 1 time in 8.
    assert own_topic_share(items, SHAPE["seed"]) < 0.25
    names = list(TOPICS)
    first_genres = items.genres.str.split().str[0]
    own = [names[t] for t in item_topics(len(items), SHAPE["seed"])]
    assert (first_genres == pd.Series(own)).mean() < 0.3
    assert all(len(set(title_words(t))) == 3 for t in items.title)  # no word twice in a title
    # Only the text changes: the interactions (taste) are those of the full signal.
    pd.testing.assert_frame_equal(interactions, generate(**SHAPE)[0])
    middle = own_topic_share(generate(**SHAPE, text_signal=0.5)[1], SHAPE["seed"])
    assert 0.5 < middle < 0.65  # 0.5 + 0.5 / 8 expected


@pytest.mark.parametrize("signal", [-0.1, 1.5])
def test_text_signal_outside_the_unit_interval_is_refused(signal, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"text_signal must be in \[0, 1\]"):
        generate(**SHAPE, text_signal=signal)
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--text-signal", str(signal)])
    assert "--text-signal: must be in [0, 1]" in capsys.readouterr().err


def test_cli_writes_the_frames_of_generate(tmp_path):
    args = ["--users", "30", "--items", "50", "--interactions", "300", "--seed", "2"]
    assert main(["--out", str(tmp_path), *args, "--text-signal", "0.2"]) == 0
    _, items = generate(30, 50, 300, seed=2, text_signal=0.2)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "items.csv"), items)
