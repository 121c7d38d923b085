"""The process's own resources, sampled in one place for the gauges and the health checks.

``victor_coordinator_memory_bytes`` / ``_cpu_percent`` and the ``process:memory`` / ``process:cpu`` checks
read the same :class:`ProcessSampler`, so that a scrape and a probe agree and a CPU interval is never
split between two readers (``psutil``'s ``cpu_percent(None)`` measures since its own previous call).

>>> sample = sampler().sample()
>>> sample.rss_bytes > 0 and sample.cpu_percent >= 0
True
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

from victor_otel import forking

#: A CPU reading is reused for this many seconds: shorter intervals are noise, and probes come in storms.
CPU_INTERVAL = 1.0


@dataclass(frozen=True)
class Sample:
    """One reading: resident memory in bytes, CPU in percent of one core since the previous reading."""

    rss_bytes: int
    cpu_percent: float


class ProcessSampler:
    """Memory and CPU of this process (of the child after a fork), thread-safe."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading only starts the interval
        self._cpu = (0.0, time.monotonic())

    @property
    def pid(self) -> int:
        return self._process.pid

    def sample(self) -> Sample:
        """Memory now; CPU over the last :data:`CPU_INTERVAL` seconds or more."""
        with self._lock:
            rss = self._process.memory_info().rss
            percent, measured_at = self._cpu
            now = time.monotonic()
            if now - measured_at >= CPU_INTERVAL:
                percent = self._process.cpu_percent(None)
                self._cpu = (percent, now)
        return Sample(rss, percent)

    def after_fork_in_child(self) -> None:
        """The child's own process and a new lock (another thread may have held it at the fork)."""
        self._reset()


_sampler: ProcessSampler | None = None
_creating = threading.Lock()


def sampler() -> ProcessSampler:
    """The process-wide sampler, created on first use (importing victor_otel opens nothing)."""
    global _sampler
    if _sampler is None:
        with _creating:
            if _sampler is None:
                _sampler = ProcessSampler()
    return _sampler


def _after_fork_in_child() -> None:
    global _creating
    _creating = threading.Lock()
    if _sampler is not None:
        _sampler.after_fork_in_child()


forking.on_fork(after_in_child=_after_fork_in_child)

__all__ = ["CPU_INTERVAL", "ProcessSampler", "Sample", "sampler"]
