"""wals-roberta's stages, one module each (prepare, train_wals, embed_items, project_items,
recommend, evaluate, publish, refresh, tune), the pipeline and the CLI; their parts live in
the subpackages: ``config``, ``data``, ``model``, ``cold`` and ``runs``."""

__version__ = "0.1.0"
