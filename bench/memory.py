"""Peak resident memory of the Spark processes, sampled by a background thread.

In local mode the driver and the executor are one JVM (the child of this Python process),
and the Python workers that run the pandas UDFs are children of that JVM. Three series are
kept: this Python driver, the JVM (driver = executor), and all Python workers summed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

KINDS = ("python_driver", "jvm", "python_workers")


def _rss_by_kind(me: psutil.Process) -> dict[str, int]:
    totals = {kind: 0 for kind in KINDS}
    totals["python_driver"] = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            name = child.name().lower()
            rss = child.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if name.startswith("java"):
            totals["jvm"] += rss
        elif name.startswith("python"):
            totals["python_workers"] += rss
    return totals


class PeakMemory:
    """``with sampler.phase("train"): ...`` records the peak RSS of each kind in the phase."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[str, dict[str, float]] = {}
        self._current: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._me = psutil.Process()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def _sample(self) -> None:
        now = _rss_by_kind(self._me)
        with self._lock:
            for kind, value in now.items():
                self._current[kind] = max(self._current[kind], value)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self._lock:
            self._current = dict.fromkeys(KINDS, 0)
        self._sample()
        try:
            yield
        finally:
            self._sample()
            with self._lock:
                self.peaks[name] = {
                    f"{k}_mb": round(v / 2**20, 1) for k, v in self._current.items()
                }
