"""The model's mathematics: WALS (MLlib's ALS and the ``wals_cg`` solver), the fold-in,
the ridge projection, text embedding, scoring into top-k lists and the ranking metrics."""
