"""Run state and I/O: a run's directory and tables (``tables``), the file system
(``storage``), the Spark session (``session``), publishing, the report, MLflow tracking and
the errors shown to the user."""
