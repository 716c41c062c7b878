"""Compare every Parquet table under two output roots, bit for bit.

For checking that a change leaves the results alone: run the same commands with the same
config and seed into two output roots (say, before and after the change), then

    .venv/bin/python bench/compare_runs.py out/before out/after [--out result.md]

Each table directory (under ``runs/<run_id>/``, the published table, the embedding cache)
is read whole, its rows sorted and hashed: equal hashes mean the same rows, every value
bit for bit, in any file order. The cache's ``encoded_at`` (a wall-clock time) is left
out. Each run's ``metrics.json`` figures are compared too: they are means over users
summed by Spark in whatever order tasks finish, so they may differ in the last bits even
when every list is the same; the largest relative difference is reported (at most 1e-12
passes). Exit status 0 when everything is the same, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

WALL_CLOCK = {"encoded_at"}
METRICS_RTOL = 1e-12


def table_dirs(root: Path) -> dict[str, Path]:
    """Every directory under ``root`` that Spark wrote a Parquet table into (a ``_SUCCESS``
    marker and Parquet files, partition directories included)."""
    found = {}
    for marker in root.rglob("_SUCCESS"):
        if next(marker.parent.rglob("*.parquet"), None) is not None:
            found[marker.parent.relative_to(root).as_posix()] = marker.parent
    return found


def digest(path: Path) -> tuple[int, str]:
    """(rows, sha256 of the sorted rows) of the table at ``path``."""
    table = pq.read_table(path)
    columns = sorted(c for c in table.column_names if c not in WALL_CLOCK)
    table = table.select(columns)
    rows = sorted(repr(row) for row in zip(*(c.to_pylist() for c in table.columns), strict=True))
    return table.num_rows, hashlib.sha256("\n".join(rows).encode()).hexdigest()


def figures(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from figures(tree[key], f"{prefix}.{key}")
    else:
        yield prefix, tree


def compare_metrics(a: Path, b: Path) -> tuple[bool, str]:
    fa = dict(figures(json.loads(a.read_text())["segments"]))
    fb = dict(figures(json.loads(b.read_text())["segments"]))
    if fa.keys() != fb.keys():
        return False, "different figures: " + ", ".join(sorted(fa.keys() ^ fb.keys())[:5])
    exact = sum(fa[k] == fb[k] for k in fa)
    worst = max(
        (
            abs(fa[k] - fb[k]) / max(abs(fa[k]), 1e-300)
            for k in fa
            if isinstance(fa[k], float) and isinstance(fb[k], float)
        ),
        default=0.0,
    )
    same = worst <= METRICS_RTOL and all(fa[k] == fb[k] for k in fa if not isinstance(fa[k], float))
    return same, f"{exact}/{len(fa)} figures equal, largest relative difference {worst:.1e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="first output root")
    parser.add_argument("b", type=Path, help="second output root")
    parser.add_argument("--out", type=Path, help="also write the lines to this file")
    args = parser.parse_args(argv)
    ta, tb = table_dirs(args.a), table_dirs(args.b)
    lines, ok = [], bool(ta) and ta.keys() == tb.keys()
    if ta.keys() != tb.keys():
        lines.append(f"DIFF  tables in one root only: {sorted(ta.keys() ^ tb.keys())}")
    for name in sorted(ta.keys() & tb.keys()):
        (na, ha), (nb, hb) = digest(ta[name]), digest(tb[name])
        same = (na, ha) == (nb, hb)
        ok &= same
        detail = f"rows={na:>8}  sha256={ha[:16]}" + ("" if same else f"  vs rows={nb} {hb[:16]}")
        lines.append(f"{'same' if same else 'DIFF'}  {name:<40} {detail}")
    for metrics in sorted(args.a.glob("runs/*/metrics.json")):
        other = args.b / metrics.relative_to(args.a)
        same, detail = compare_metrics(metrics, other) if other.exists() else (False, "missing")
        ok &= same
        lines.append(f"{'same' if same else 'DIFF'}  {metrics.relative_to(args.a)}: {detail}")
    lines.append("ALL SAME" if ok else "DIFFERENCES")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
