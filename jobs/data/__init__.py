"""Input data: the tables' column names (``columns``), readers and row checks (``inputs``),
interactions and catalog text as the stages use them, dense ids (``indexing``), the test
split (``splitting``) and the synthetic data set (``synthetic``)."""
