"""The layout's rules, checked on the source: one import name, stages apart from their
parts, and the size limits on modules and functions in jobs/ and udfs/."""

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(REPO / "jobs").rglob("*.py"), *(REPO / "udfs").rglob("*.py")])
# Stage modules: each writes its tables and imports no other stage.
STAGES = {
    "prepare",
    "train_wals",
    "finetune",
    "embed_items",
    "project_items",
    "recommend",
    "evaluate",
    "publish",
    "refresh",
    "tune",
}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 120
# A function or module may be longer when a comment on its first line says why.
LONG_MARK = "# long:"


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included), with
    ``from pkg import name`` counted as ``pkg.name`` too (``name`` may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_project_import_uses_the_one_name():
    for path in [*SOURCES, *(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py")]:
        bare = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("jobs", "udfs"))
        assert not bare, f"{path.relative_to(REPO)} imports {bare}: use wals_roberta.{bare[0]}"


def test_stages_import_no_other_stage_and_not_the_cli():
    for name in STAGES:
        path = REPO / "jobs" / f"{name}.py"
        assert path.is_file(), f"stage module {path} is missing"
        others = {f"wals_roberta.jobs.{s}" for s in STAGES - {name}} | {"wals_roberta.jobs.cli"}
        wrong = sorted(imported_modules(path) & others)
        assert not wrong, f"stage {name} imports {wrong}"


def test_parts_import_no_stage():
    """Modules in the subpackages and udfs/ are parts: they never reach back into a stage,
    the pipeline or the CLI."""
    top = {f"wals_roberta.jobs.{s}" for s in [*STAGES, "pipeline", "cli"]}
    for path in SOURCES:
        if path.parent == REPO / "jobs":
            continue
        wrong = sorted(imported_modules(path) & top)
        assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"


def test_jobs_holds_only_stages_cli_and_pipeline():
    modules = {p.stem for p in (REPO / "jobs").glob("*.py")} - {"__init__"}
    assert modules == STAGES | {"cli", "pipeline"}


def test_modules_and_functions_within_the_limits():
    too_long = []
    for path in SOURCES:
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MAX_MODULE_LINES and LONG_MARK not in lines[0]:
            too_long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and LONG_MARK not in lines[node.lineno - 1]:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}()")
    assert not too_long, "over the limits: " + "; ".join(too_long)


def test_every_module_imports():
    import wals_roberta.jobs
    import wals_roberta.udfs

    for package in (wals_roberta.jobs, wals_roberta.udfs):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(info.name)


def installed_modules() -> set[str]:
    """Module names under wals_roberta as this environment imports them (the editable
    install in development)."""
    import wals_roberta.jobs
    import wals_roberta.udfs

    names = {"wals_roberta.jobs", "wals_roberta.udfs"}
    for package in (wals_roberta.jobs, wals_roberta.udfs):
        names.update(
            info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        )
    return names


def test_the_wheel_has_one_import_name_and_the_same_modules(tmp_path):
    """``pip install .`` ships exactly the modules the editable install imports, all under
    ``wals_roberta``, and nothing else at the top of site-packages."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("jobs", "udfs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0 and "Could not find a version" in built.stderr:
        pytest.skip("no package index to fetch the build backend from")
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("wals_roberta-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = [n for n in zf.namelist() if ".dist-info/" not in n]
        top_level = next(n for n in zf.namelist() if n.endswith(".dist-info/top_level.txt"))
        assert zf.read(top_level).decode().split() == ["wals_roberta"]
        entry = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "wals-roberta = wals_roberta.jobs.cli:main" in zf.read(entry).decode()
    assert {f.split("/")[0] for f in files} == {"wals_roberta"}
    shipped = {
        f[: -len(".py")].removesuffix("/__init__").replace("/", ".")
        for f in files
        if f.endswith(".py")
    }
    assert shipped == installed_modules()


@pytest.mark.parametrize("module", ["prepare", "refresh"])
def test_a_stage_module_runs_alone_with_the_clis_arguments(module, tmp_path):
    """``python -m wals_roberta.jobs.<stage>`` parses the CLI's arguments and reports a bad
    config in one line, exit status 2, before any session starts."""
    missing = tmp_path / "nope.yaml"
    done = subprocess.run(
        [sys.executable, "-m", f"wals_roberta.jobs.{module}", "--config", str(missing)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"wals-roberta {module}: error: ") and str(missing) in line


def test_only_the_session_and_storage_modules_touch_the_jvm():
    """Spark Connect has no ``sparkContext``, ``_jvm`` or ``_jsc``: what needs them is
    answered in runs/session.py (the session's kind, parallelism, checkpoints) and
    runs/storage.py (the JVM file-system backend)."""
    allowed = {REPO / "jobs" / "runs" / "session.py", REPO / "jobs" / "runs" / "storage.py"}
    for path in SOURCES:
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("sparkContext", "_jvm", "_jsc"):
                raise AssertionError(f"{path.relative_to(REPO)}:{node.lineno} uses .{node.attr}")
