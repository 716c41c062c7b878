"""The run report: the Recall@K plot drawn from the numbers, the Markdown tables, and the
evaluate stage writing both into the run directory."""

import itertools
import json
import xml.etree.ElementTree as ET

import pytest
from pyspark.sql import functions as F

from tests.conftest import make_config
from wals_roberta.jobs import evaluate, prepare, recommend, train_wals
from wals_roberta.jobs.data.synthetic import generate, write_csv
from wals_roberta.jobs.runs import tables
from wals_roberta.jobs.runs.report import PLOT, REPORT, recall_svg, report_markdown

SVG = "{http://www.w3.org/2000/svg}"
KS = [5, 10, 20, 50]


def metrics_dict() -> dict:
    """Three segments with distinct, unrounded values (each baseline below its model)."""

    def values(base: float, slope: float) -> dict[str, float]:
        out = {}
        for i, k in enumerate(KS):
            out[f"recall@{k}"] = base + slope * i + 0.000037
            out[f"ndcg@{k}"] = base / 2 + slope * i / 3 + 0.000041
            out[f"coverage@{k}"] = 0.01 * (i + 1) + base / 10
            out[f"cold_share@{k}"] = base / 4 + 0.003 * i + 0.000043
        return out

    return {
        "protocol": {"holdout": "random", "fraction": 0.2, "seed": 7, "ks": KS},
        "segments": {
            "all": {
                "users": 1234,
                "relevant": 5678,
                "items": 900,
                "cold_items": 135,
                "methods": {"wals": values(0.21, 0.061), "popularity": values(0.11, 0.031)},
                "lift_over_popularity": {f"recall@{k}": 1.9 + i / 7 for i, k in enumerate(KS)},
            },
            "cold": {
                "users": 321,
                "relevant": 456,
                "items": 180,
                "methods": {"wals": values(0.33, 0.071), "random": values(0.02, 0.013)},
            },
            "new_users": {
                "users": 99,
                "relevant": 301,
                "items": 720,
                "methods": {
                    "fold_in": values(0.17, 0.052),
                    "popularity": values(0.09, 0.023),
                    "trained": values(0.18, 0.057),
                },
                "trained_in_model": {f"recall@{k}": 0.91 + i / 100 for i, k in enumerate(KS)},
            },
        },
    }


def points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.get("points").split()]


def test_svg_has_one_curve_per_segment_and_method_ordered_by_recall():
    metrics = metrics_dict()
    root = ET.fromstring(recall_svg(metrics))
    assert root.tag == f"{SVG}svg"
    lines = root.findall(f".//{SVG}polyline")
    expected = {(s, m) for s, r in metrics["segments"].items() for m in r["methods"]}
    assert len(lines) == len(expected) == 7
    assert {(p.get("data-segment"), p.get("data-method")) for p in lines} == expected
    # The plot area is the box spanned by the two axes.
    axes = root.find(f"{SVG}g[@class='axes']").findall(f"{SVG}line")
    xs = [float(a.get(c)) for a in axes for c in ("x1", "x2")]
    ys = [float(a.get(c)) for a in axes for c in ("y1", "y2")]
    left, right, top, bottom = min(xs), max(xs), min(ys), max(ys)
    assert right - left > 100 and bottom - top > 100
    pairs = []
    for line in lines:
        pts = points(line)
        assert len(pts) == len(KS)
        assert [x for x, _ in pts] == sorted(x for x, _ in pts) and len({x for x, _ in pts}) == 4
        assert all(left <= x <= right and top <= y <= bottom for x, y in pts)
        seg, method = line.get("data-segment"), line.get("data-method")
        values = [metrics["segments"][seg]["methods"][method][f"recall@{k}"] for k in KS]
        pairs += zip(values, (y for _, y in pts), strict=True)
        is_model = method == next(iter(metrics["segments"][seg]["methods"]))
        assert (line.get("stroke-dasharray") is None) == is_model  # model solid, baselines dashed
    # Higher recall is drawn higher (smaller y), across every curve.
    for (v1, y1), (v2, y2) in itertools.combinations(pairs, 2):
        if abs(v1 - v2) > 1e-3:
            assert (v1 > v2) == (y1 < y2), (v1, y1, v2, y2)
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    for k in KS:
        assert str(k) in texts  # a tick label per K
    for seg, method in expected:
        assert any(seg in t and method in t for t in texts)  # a legend entry per curve
    assert "Recall@K" in texts and "K" in texts


def test_svg_y_axis_covers_the_largest_value_and_survives_zeros():
    metrics = metrics_dict()
    biggest = max(
        v[f"recall@{k}"] for r in metrics["segments"].values() for v in r["methods"].values()
        for k in KS
    )  # fmt: skip
    root = ET.fromstring(recall_svg(metrics))
    ticks = [float(t.text) for g in root.iter(f"{SVG}g") if g.get("class") == "ytick"
             for t in g.iter(f"{SVG}text")]  # fmt: skip
    assert min(ticks) == 0 and biggest <= max(ticks) < 2 * biggest
    zeros = {"protocol": {"ks": [10]}, "segments": {"all": {"methods": {"m": {"recall@10": 0}}}}}
    (line,) = ET.fromstring(recall_svg(zeros)).iter(f"{SVG}polyline")
    assert len(points(line)) == 1


def table_rows(markdown: str, segment: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (by first cell) of the first table after a segment's heading."""
    section = markdown.split(f"## Segment `{segment}`", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return cells[0], {row[0]: row[1:] for row in cells[2:]}


def test_markdown_holds_every_value_beside_its_baselines_and_the_stages():
    metrics = metrics_dict()
    manifest = {
        "run_id": "r-42",
        "stages": {
            "prepare": {"status": "complete", "seconds": 12.345, "rows": {"users": 1234}},
            "train": {"status": "complete", "seconds": 98.76, "rows": {"user_factors": 4321}},
        },
    }
    md = report_markdown(metrics, manifest)
    assert "](recall_at_k.svg)" in md and "r-42" in md
    for segment, result in metrics["segments"].items():
        header, rows = table_rows(md, segment)
        assert header[1:] == list(result["methods"])  # model first, then its baselines
        for method, values in result["methods"].items():
            for key, value in values.items():
                assert rows[key][header.index(method) - 1] == f"{value:.4f}", (segment, key)
        assert f"{result['users']:,}" in md and f"{result['relevant']:,}" in md
    for label in ("lift_over_popularity", "trained_in_model"):
        segment = "all" if label.startswith("lift") else "new_users"
        line = next(row for row in md.splitlines() if row.startswith(f"| {label} |"))
        for k in KS:
            assert f"{metrics['segments'][segment][label][f'recall@{k}']:.4f}" in line
    assert "precision@5" not in md  # metrics the dict does not hold are not invented
    for stage, entry in manifest["stages"].items():
        line = next(row for row in md.splitlines() if row.startswith(f"| {stage} |"))
        assert f"{entry['seconds']:.1f}" in line
        assert all(f"{t}={n:,}" in line for t, n in entry["rows"].items())


def test_svg_legend_and_report_show_the_cold_share_with_all_first():
    metrics = metrics_dict()
    root = ET.fromstring(recall_svg(metrics))
    legend = [
        "".join(t.itertext()) for g in root.iter(f"{SVG}g") if g.get("class") == "legend"
        for t in g.iter(f"{SVG}text")
    ]  # fmt: skip
    expected = [
        f"{seg} · {method} · cold {values['cold_share@50']:.1%} @50"
        for seg, r in metrics["segments"].items() for method, values in r["methods"].items()
    ]  # fmt: skip
    assert legend == expected and legend[0] == "all · wals · cold 6.2% @50"
    assert any("share of the list slots at rank ≤ 50" in "".join(t.itertext())
               for t in root.iter(f"{SVG}text"))  # fmt: skip
    md = report_markdown(metrics, {"run_id": "r-1"})
    assert md.index("## Segment `all`") < md.index("## Segment `cold`")
    _, rows = table_rows(md, "all")
    assert rows["cold_share@50"] == ["0.0615", "0.0365"]  # 0.21/4 + 0.009, 0.11/4 + 0.009
    assert "Cold items: 15.0% of the catalog (135 of 900), 6.2% of the list slots at K=50" in md
    assert "900 items (135 of them cold)" in md
    # Metrics from before the cold share: no cold text is invented.
    for result in metrics["segments"].values():
        result.pop("cold_items", None)
        for values in result["methods"].values():
            for k in KS:
                del values[f"cold_share@{k}"]
    root = ET.fromstring(recall_svg(metrics))
    legend = [t.text for t in root.iter(f"{SVG}text") if t.text and "·" in t.text]
    assert legend == [f"{s} · {m}" for s, r in metrics["segments"].items() for m in r["methods"]]
    assert not any("slots" in t for t in root.itertext())
    assert "Cold items:" not in report_markdown(metrics, {"run_id": "r-1"})


def hand_cold_share(spark, run_dir, cold_idx: set[int], k: int) -> float:
    """Cold share of the published lists' top ``k`` slots of the users with held-out pairs,
    counted in pandas."""
    read = lambda name: spark.read.parquet(str(run_dir / name)).toPandas()  # noqa: E731
    events, users, items = read("interactions"), read("users"), read("items")
    recs = read("recommendations").merge(users, on="user_id").merge(items, on="item_id")
    evaluated = set(events[events.split == "test"].user_idx)
    slots = recs[recs.user_idx.isin(evaluated) & (recs["rank"] <= k)]
    return slots.item_idx.isin(cold_idx).mean()


def scored_run(spark, tmp_path, run_id):
    """A small synthetic run prepared, trained and scored (no text), ready to evaluate."""
    interactions, items = generate(n_users=80, n_items=60, n_interactions=1500, seed=11)
    write_csv(tmp_path, interactions, items)
    cfg = make_config(
        tmp_path,
        str(tmp_path / "interactions.csv"),
        **{"split.holdout": "random", "data.interactions.strength_col": "plays"},
    )
    for stage in (prepare, train_wals, recommend):
        stage.run(spark, cfg, run_id)
    return cfg


@pytest.mark.spark
def test_evaluate_counts_cold_items_in_the_list_slots(spark, tmp_path, capsys):
    cfg = scored_run(spark, tmp_path, "cold")
    # Stand in for the projection stage: every third item is marked as projected (cold).
    run = tables.open_run(spark, cfg, "cold", create=False)
    factors = tables.read_table(spark, run, "item_factors")
    is_cold = F.col("item_idx") % 3 == 0
    vectors = factors.select(
        "item_idx",
        "item_id",
        F.col("factors").alias("vector"),
        F.when(is_cold, "projected").otherwise("wals").alias("source"),
    )
    tables.write_table(spark, run, "item_vectors", vectors)
    cold_idx = {r.item_idx for r in factors.filter(is_cold).select("item_idx").collect()}
    capsys.readouterr()
    metrics = evaluate.run(spark, cfg, "cold")
    out = capsys.readouterr().out
    segments = metrics["segments"]
    assert list(segments)[0] == "all" and {"warm", "cold"} <= set(segments)
    run_dir = tmp_path / "out" / "runs" / "cold"
    for k in (5, 10):
        expected = hand_cold_share(spark, run_dir, cold_idx, k)
        assert 0 < expected < 1
        assert segments["all"]["methods"]["wals"][f"cold_share@{k}"] == pytest.approx(expected)
        assert all(m[f"cold_share@{k}"] == 1.0 for m in segments["cold"]["methods"].values())
        assert all(m[f"cold_share@{k}"] == 0.0 for m in segments["warm"]["methods"].values())
    assert segments["all"]["cold_items"] == len(cold_idx)
    share = segments["all"]["methods"]["wals"]["cold_share@10"]
    line = (
        f"cold items: {len(cold_idx) / 60:.1%} of the catalog ({len(cold_idx)} of 60), "
        f"{share:.1%} of the list slots at K=10 (segment all, wals)"
    )
    assert line in out.splitlines()
    assert sum(row.startswith("cold_share") for row in out.splitlines()) == 2 * len(segments)
    md = (run_dir / REPORT).read_text()
    assert line[0].upper() + line[1:] in md
    _, rows = table_rows(md, "all")
    assert rows["cold_share@10"][0] == f"{share:.4f}"
    svg = "".join(ET.parse(run_dir / PLOT).getroot().itertext())
    assert f"all · wals · cold {share:.1%} @10" in svg
    stored = json.loads((run_dir / tables.METRICS).read_text())
    assert stored["segments"]["all"]["methods"]["wals"]["cold_share@10"] == share


@pytest.mark.spark
def test_evaluate_writes_the_report_into_the_run_directory(spark, tmp_path):
    cfg = scored_run(spark, tmp_path, "rep")
    metrics = evaluate.run(spark, cfg, "rep")
    run_dir = tmp_path / "out" / "runs" / "rep"
    md = (run_dir / REPORT).read_text()
    svg = ET.parse(run_dir / PLOT).getroot()
    assert f"]({PLOT})" in md  # embedded by a relative link
    assert len(svg.findall(f".//{SVG}polyline")) == 2  # wals and popularity on `all`
    _, rows = table_rows(md, "all")
    for values in metrics["segments"]["all"]["methods"].values():
        assert f"{values['recall@10']:.4f}" in rows["recall@10"]
        assert values["cold_share@10"] == 0.0  # no item_vectors: no cold items
    assert rows["cold_share@10"] == ["0.0000", "0.0000"]
    manifest = json.loads((run_dir / tables.MANIFEST).read_text())
    entry = manifest["stages"]["evaluate"]
    assert entry["report_path"].endswith(f"/runs/rep/{REPORT}") and entry["status"] == "complete"
    assert next(r for r in md.splitlines() if r.startswith("| train |")).split("|")[2].strip() == (
        "complete"
    )
