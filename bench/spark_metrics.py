"""Spark's own figures for a span of work, from the status REST API of the running session:
jobs, bytes shuffled (written and read) and the largest execution memory one task held.

    metrics = SparkMetrics(spark)
    before = metrics.snapshot()
    ...  # a stage
    figures = metrics.since(before)
"""

from __future__ import annotations

import json
import urllib.request


class SparkMetrics:
    """Counts over the jobs and stages that finished after a snapshot (the UI must be on;
    ``spark.ui.retainedStages``/``retainedJobs`` must exceed what one span runs)."""

    def __init__(self, spark):
        self.base = (
            f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}"
        )

    def _get(self, path: str):
        with urllib.request.urlopen(f"{self.base}/{path}", timeout=60) as response:
            return json.load(response)

    def snapshot(self) -> dict:
        return {
            "jobs": {j["jobId"] for j in self._get("jobs")},
            "stages": {(s["stageId"], s["attemptId"]) for s in self._get("stages")},
        }

    def since(self, before: dict) -> dict:
        jobs = [j for j in self._get("jobs") if j["jobId"] not in before["jobs"]]
        stages = [
            s
            for s in self._get("stages?status=complete")
            if (s["stageId"], s["attemptId"]) not in before["stages"]
        ]
        peak = 0
        for s in stages:
            summary = self._get(f"stages/{s['stageId']}/{s['attemptId']}/taskSummary?quantiles=1.0")
            peak = max(peak, int((summary.get("peakExecutionMemory") or [0])[0]))
        slowest = sorted(jobs, key=_job_seconds, reverse=True)[:5]
        return {
            "spark_jobs": len(jobs),
            "slowest_jobs": [[j["name"][:80], round(_job_seconds(j), 2)] for j in slowest],
            "spark_stages": len(stages),
            "shuffle_write_mb": round(sum(s["shuffleWriteBytes"] for s in stages) / 2**20, 2),
            "shuffle_read_mb": round(sum(s["shuffleReadBytes"] for s in stages) / 2**20, 2),
            "spilled_mb": round(sum(s["diskBytesSpilled"] for s in stages) / 2**20, 2),
            "task_peak_execution_mb": round(peak / 2**20, 2),
        }


def _job_seconds(job: dict) -> float:
    """A job's wall-clock seconds from its submission and completion times."""
    from datetime import datetime

    if "completionTime" not in job or "submissionTime" not in job:
        return 0.0
    parse = lambda t: datetime.strptime(t.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")  # noqa: E731
    return (parse(job["completionTime"]) - parse(job["submissionTime"])).total_seconds()
