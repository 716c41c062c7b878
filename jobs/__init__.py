"""wals-roberta batch stages: prepare, train, recommend, evaluate and the pipeline."""

__version__ = "0.1.0"
