"""Evaluation splits: per-user random, per-user latest, global time cutoff, cold items."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from wals_roberta.jobs.data import columns as C

_HASH_BUCKETS = 1_000_000


def _seeded_hash(seed: int, *cols: str) -> Column:
    """A per-row pseudo-random key that depends only on the seed and the row's ids, so the
    split is the same whatever the partitioning or the order of rows."""
    return F.xxhash64(F.lit(seed), *[F.col(c) for c in cols])


def _hashed_share(seed: int, salt: str, col: str, fraction: float) -> Column:
    """True for about ``fraction`` of the values of ``col``, chosen by a seeded hash."""
    bucket = F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), F.col(col)), F.lit(_HASH_BUCKETS))
    return bucket < F.lit(int(round(fraction * _HASH_BUCKETS)))


def cold_item_flag(df: DataFrame, *, fraction: float, seed: int) -> Column:
    """True for the items held out entirely (about ``fraction`` of them, chosen by hash)."""
    return _hashed_share(seed, "cold", C.ITEM_IDX, fraction)


def heldout_user_flag(*, fraction: float, seed: int) -> Column:
    """True for the users kept out of training (about ``fraction`` of them)."""
    return _hashed_share(seed, "user", C.USER_IDX, fraction)


def split_interactions(
    df: DataFrame,
    *,
    holdout: str,
    fraction: float,
    seed: int,
    time_cutoff: int | None = None,
    cold_item_fraction: float = 0.0,
    heldout_user_fraction: float = 0.0,
) -> DataFrame:
    """Add ``split`` ∈ {train, test, fold_in}.

    - ``none``: everything is train (production runs).
    - ``random``: per user, round(fraction × n) interactions chosen by a seeded hash go to
      test, always leaving the user at least one training interaction.
    - ``time``: with ``time_cutoff``, events at or after it are test; without, each user's
      latest round(fraction × n) interactions (ties broken by item index) are test.
    - ``cold_item_fraction`` > 0 (with a holdout): all interactions of that share of items
      go to test, so those items are never seen in training.
    - ``heldout_user_fraction`` > 0 (with a holdout): that share of users is kept out of
      training; their test rows are chosen as for everyone, the rest of their history is
      ``fold_in``: given at scoring time, never trained on. The test rows do not depend on
      this setting, so runs with and without held-out users score the same pairs.
    """
    if holdout == "none":
        return df.withColumn(C.SPLIT, F.lit(C.TRAIN))
    if holdout == "time" and time_cutoff is not None:
        is_test = F.col(C.TIMESTAMP) >= F.lit(time_cutoff)
    else:
        if holdout == "random":
            order = [_seeded_hash(seed, C.USER_IDX, C.ITEM_IDX), F.col(C.ITEM_IDX)]
        elif holdout == "time":
            order = [F.col(C.TIMESTAMP).desc(), F.col(C.ITEM_IDX)]
        else:
            raise ValueError(f"unknown holdout {holdout!r}")
        by_user = Window.partitionBy(C.USER_IDX)
        position = F.row_number().over(by_user.orderBy(*order))
        n = F.count(F.lit(1)).over(by_user)
        n_test = F.least(F.round(n * F.lit(fraction)), n - 1)
        is_test = position <= n_test
    split = F.when(is_test, C.TEST).otherwise(C.TRAIN)
    if cold_item_fraction > 0:
        split = F.when(
            cold_item_flag(df, fraction=cold_item_fraction, seed=seed), C.TEST
        ).otherwise(split)
    if heldout_user_fraction > 0:
        split = F.when(
            heldout_user_flag(fraction=heldout_user_fraction, seed=seed) & (split == C.TRAIN),
            C.FOLD_IN,
        ).otherwise(split)
    return df.withColumn(C.SPLIT, split)
