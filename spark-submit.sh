#!/usr/bin/env bash
# Submit a wals-roberta stage (or the whole pipeline) with spark-submit.
#
#   ./spark-submit.sh [spark-submit options] <stage> --config FILE [--set key=value ...] [--run-id ID]
#
# Everything before the stage name goes to spark-submit unchanged (--master, --deploy-mode,
# --conf, --executor-memory, GPU settings such as
# --conf spark.executor.resource.gpu.amount=1 ...); everything after it goes to the job.
# The jobs and udfs packages are zipped and shipped with --py-files. Executors run
# $PYSPARK_PYTHON (default: the python that runs this script's checks), which must have the
# project's dependencies installed on every node.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stages=" prepare train embed project recommend evaluate publish pipeline "

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "stages:${stages}"
}

submit_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
  esac
  if [[ "$stages" == *" $1 "* ]]; then
    break
  fi
  submit_args+=("$1")
  # An option's value is never taken for the stage name (e.g. --name train).
  if [[ "$1" == -* && "$1" != *=* && $# -gt 1 ]]; then
    case "$1" in
      --verbose|-v|--supervise) ;;
      *) submit_args+=("$2"); shift ;;
    esac
  fi
  shift
done
if [[ $# -eq 0 ]]; then
  echo "spark-submit.sh: no stage given; one of:${stages}" >&2
  usage >&2
  exit 2
fi

python_bin="${PYSPARK_PYTHON:-}"
if [[ -z "$python_bin" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then
    python_bin="$here/.venv/bin/python"
  else
    python_bin="$(command -v python3)"
  fi
fi

submit_bin="${SPARK_HOME:+$SPARK_HOME/bin/}spark-submit"
if ! command -v "$submit_bin" >/dev/null 2>&1; then
  spark_home="$("$python_bin" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  submit_bin="$spark_home/bin/spark-submit"
fi

build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT
"$python_bin" - "$here" "$build_dir/wals_roberta.zip" <<'PY'
import pathlib, sys, zipfile
root, target = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
    for package in ("jobs", "udfs"):
        for path in sorted((root / package).rglob("*.py")):
            zf.write(path, path.relative_to(root).as_posix())
PY

export PYSPARK_PYTHON="$python_bin"
"$submit_bin" \
  --conf "spark.pyspark.python=$python_bin" \
  --py-files "$build_dir/wals_roberta.zip" \
  "${submit_args[@]+"${submit_args[@]}"}" \
  "$here/jobs/cli.py" "$@"
