"""The run report: ``report.md`` in the run directory with the metric tables of every segment
beside their baselines (``cold_share@K`` among them), the stages' seconds and row counts, and
``recall_at_k.svg`` (Recall@K per segment, model solid, baselines dashed, each legend entry
with the method's cold share at the largest K), drawn here from the numbers.

Both files go through the Hadoop file system (:mod:`runs.storage`), so the report lands
wherever the run lives (local, HDFS, S3, DBFS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pyspark.sql import SparkSession

from wals_roberta.jobs.model.metrics import METRICS
from wals_roberta.jobs.runs import storage, tables

REPORT = "report.md"
PLOT = "recall_at_k.svg"

# Canvas and plot area of the SVG, in pixels; the legend sits right of the plot area.
WIDTH, HEIGHT = 860, 420
LEFT, TOP, RIGHT, BOTTOM = 70, 40, 520, 360
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
DASHES = ("6 4", "2 3", "9 3 2 3")  # one per baseline of a segment; the model is solid


def recall_series(metrics: Mapping[str, Any]) -> list[tuple[str, str, bool, list[float]]]:
    """``(segment, method, is_model, [Recall@K for K in protocol.ks])`` for every method of
    every segment; the first method of a segment is its model, the others its baselines."""
    ks = metrics["protocol"]["ks"]
    series = []
    for segment, result in metrics["segments"].items():
        for i, (method, values) in enumerate(result["methods"].items()):
            series.append((segment, method, i == 0, [float(values[f"recall@{k}"]) for k in ks]))
    return series


def cold_summary(metrics: Mapping[str, Any]) -> str | None:
    """One line on the cold items of segment ``all``: their share of the catalog and of the
    model's list slots at the largest K; ``None`` when the metrics do not hold them."""
    result = metrics["segments"].get("all")
    k = max(int(k) for k in metrics["protocol"]["ks"])
    if result is None or "cold_items" not in result or not result.get("items"):
        return None
    model, values = next(iter(result["methods"].items()))
    share = values.get(f"cold_share@{k}")
    if share is None:
        return None
    n_cold, n_items = result["cold_items"], result["items"]
    return (
        f"cold items: {n_cold / n_items:.1%} of the catalog ({n_cold:,} of {n_items:,}), "
        f"{float(share):.1%} of the list slots at K={k} (segment all, {model})"
    )


def legend_label(segment: str, method: str, values: Mapping[str, Any], k: int) -> str:
    """``"all · wals"``, with ``" · cold 6.2% @20"`` when the method's cold share at ``k``
    is known."""
    share = values.get(f"cold_share@{k}")
    suffix = "" if share is None else f" · cold {float(share):.1%} @{k}"
    return f"{segment} · {method}{suffix}"


def nice_ceiling(value: float) -> tuple[float, float]:
    """Top of the y axis and its tick step: 1, 2, 2.5 or 5 times a power of ten, so that
    about five ticks cover ``value``."""
    if value <= 0:
        return 1.0, 0.2
    raw = value / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return math.ceil(value / step - 1e-9) * step, step


def recall_svg(metrics: Mapping[str, Any]) -> str:
    """Recall@K curves as a standalone SVG document: one ``polyline`` per (segment, method)
    with one point per K, axes with ticks, and a legend whose entries carry each method's
    share of list slots holding cold items at the largest K (when the metrics have it)."""
    ks = [int(k) for k in metrics["protocol"]["ks"]]
    series = recall_series(metrics)
    top, step = nice_ceiling(max((v for *_, vals in series for v in vals), default=0.0))

    def x(k: int) -> float:
        if len(ks) == 1 or ks[-1] == ks[0]:
            return (LEFT + RIGHT) / 2
        return LEFT + (k - ks[0]) / (ks[-1] - ks[0]) * (RIGHT - LEFT)

    def y(v: float) -> float:
        return BOTTOM - v / top * (BOTTOM - TOP)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{(LEFT + RIGHT) / 2}" y="22" text-anchor="middle" font-size="14">'
        "Recall@K per segment: model (solid) vs baselines (dashed)</text>",
        f'<g class="axes" stroke="black"><line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" '
        f'y2="{BOTTOM}"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}"/></g>',
    ]
    for k in ks:
        out.append(
            f'<g class="xtick"><line x1="{x(k):.1f}" y1="{BOTTOM}" x2="{x(k):.1f}" '
            f'y2="{BOTTOM + 5}" stroke="black"/><text x="{x(k):.1f}" y="{BOTTOM + 18}" '
            f'text-anchor="middle">{k}</text></g>'
        )
    for i in range(round(top / step) + 1):
        value = i * step
        out.append(
            f'<g class="ytick"><line x1="{LEFT - 5}" y1="{y(value):.1f}" x2="{RIGHT}" '
            f'y2="{y(value):.1f}" stroke="#dddddd"/><text x="{LEFT - 8}" y="{y(value) + 4:.1f}" '
            f'text-anchor="end">{value:.3g}</text></g>'
        )
    out += [
        f'<text x="{(LEFT + RIGHT) / 2}" y="{BOTTOM + 36}" text-anchor="middle">K</text>',
        f'<text x="18" y="{(TOP + BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 18 {(TOP + BOTTOM) / 2})">Recall@K</text>',
    ]
    segments = list(dict.fromkeys(s for s, *_ in series))
    legend_y = TOP
    baseline_no: dict[str, int] = {}
    for segment, method, is_model, values in series:
        colour = COLOURS[segments.index(segment) % len(COLOURS)]
        dash = ""
        if not is_model:
            n = baseline_no[segment] = baseline_no.get(segment, -1) + 1
            dash = f' stroke-dasharray="{DASHES[n % len(DASHES)]}"'
        points = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in zip(ks, values, strict=True))
        role = "model" if is_model else "baseline"
        values_at = metrics["segments"][segment]["methods"][method]
        label = escape(legend_label(segment, method, values_at, max(ks)))
        out.append(
            f"<polyline data-segment={quoteattr(segment)} data-method={quoteattr(method)} "
            f'data-role="{role}" points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="2"{dash}><title>{label}</title></polyline>'
        )
        out.append(
            f'<g class="legend"><line x1="{RIGHT + 20}" y1="{legend_y}" x2="{RIGHT + 50}" '
            f'y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{RIGHT + 56}" y="{legend_y + 4}">{label}</text></g>'
        )
        legend_y += 18
    if any(f"cold_share@{max(ks)}" in v for r in metrics["segments"].values()
           for v in r["methods"].values()):  # fmt: skip
        out.append(
            f'<text class="note" x="{LEFT}" y="{HEIGHT - 6}" font-size="11">'
            f"cold x% @{max(ks)}: share of the list slots at rank ≤ {max(ks)} "
            "holding a cold item</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _number(value: Any) -> str:
    return "—" if value is None else f"{float(value):.4f}"


def segment_markdown(name: str, result: Mapping[str, Any], ks: list[int]) -> list[str]:
    """One segment: its size, a table metric@K × method (model first), and the model's
    Recall@K relative to each baseline."""
    methods = list(result["methods"])
    cold = f" ({result['cold_items']:,} of them cold)" if "cold_items" in result else ""
    lines = [
        f"## Segment `{name}`",
        "",
        f"{result['users']:,} users, {result['relevant']:,} held-out interactions, "
        f"ranked over {result['items']:,} items{cold}. Model: `{methods[0]}`; baselines: "
        + ", ".join(f"`{m}`" for m in methods[1:])
        + ".",
        "",
        "| metric | " + " | ".join(methods) + " |",
        "| --- |" + " ---: |" * len(methods),
    ]
    for metric in METRICS:
        for k in ks:
            key = f"{metric}@{k}"
            values = [result["methods"][m].get(key) for m in methods]
            if all(v is None for v in values):
                continue
            lines.append(f"| {key} | " + " | ".join(map(_number, values)) + " |")
    ratios = {label: v for label, v in result.items() if label.startswith(("lift_", "trained_"))}
    if ratios:
        lines += ["", "| model recall ÷ | " + " | ".join(f"@{k}" for k in ks) + " |"]
        lines.append("| --- |" + " ---: |" * len(ks))
        for label, values in ratios.items():
            cells = [_number(values.get(f"recall@{k}")) for k in ks]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def stages_markdown(manifest: Mapping[str, Any]) -> list[str]:
    """The stages in the order they ran: status, seconds, Spark jobs and the row counts
    they wrote."""
    lines = [
        "## Stages",
        "",
        "| stage | status | seconds | Spark jobs | rows |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, entry in manifest.get("stages", {}).items():
        rows = ", ".join(f"{t}={n:,}" for t, n in (entry.get("rows") or {}).items())
        seconds, jobs = entry.get("seconds"), entry.get("spark_jobs")
        shown = "—" if seconds is None else f"{float(seconds):.1f}"
        counted = "—" if jobs is None else f"{jobs:,}"
        lines.append(f"| {name} | {entry.get('status', '?')} | {shown} | {counted} | {rows} |")
    return [*lines, ""]


def report_markdown(
    metrics: Mapping[str, Any], manifest: Mapping[str, Any], plot: str = PLOT
) -> str:
    """The whole report; ``plot`` is the SVG's path relative to the report."""
    protocol = metrics["protocol"]
    ks = [int(k) for k in protocol["ks"]]
    lines = [
        f"# Run `{manifest.get('run_id', '?')}`",
        "",
        f"Held-out split: {protocol.get('holdout')} (fraction {protocol.get('fraction')}, "
        f"seed {protocol.get('seed')}, cold items {protocol.get('cold_item_fraction')}, "
        f"held-out users {protocol.get('heldout_user_fraction')}); cut-offs K = "
        + ", ".join(map(str, ks))
        + ".",
        "",
        f"![Recall@K per segment, model solid, baselines dashed]({plot})",
        "",
    ]
    summary = cold_summary(metrics)
    if summary is not None:
        lines += [summary[0].upper() + summary[1:] + ".", ""]
    for name, result in metrics["segments"].items():
        lines += segment_markdown(name, result, ks)
    lines += stages_markdown(manifest)
    return "\n".join(lines)


def write_report(
    spark: SparkSession, run: tables.Run, metrics: Mapping[str, Any], manifest: Mapping[str, Any]
) -> dict[str, str]:
    """Write ``report.md`` and ``recall_at_k.svg`` into the run directory; returns their paths."""
    paths = {"report": run.path(REPORT), "plot": run.path(PLOT)}
    storage.write_text(spark, paths["plot"], recall_svg(metrics))
    storage.write_text(spark, paths["report"], report_markdown(metrics, manifest, PLOT))
    return paths
