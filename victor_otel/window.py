"""Per-coordinator sliding-window statistics, shared by the gauges and the health checks.

The window is a ring of time slots (``slots`` of ``seconds / slots`` each); a slot is cleared when the
clock comes back to it, so nothing is ever summed over a lifetime and every rate stays within 0..1.
Callers hold the coordinator's lock around :meth:`Window.add_call` and :meth:`Window.snapshot`.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

from victor_otel.instruments import LATENCY_BUCKETS

_N_BUCKETS = len(LATENCY_BUCKETS) + 1


@dataclass(frozen=True)
class WindowStats:
    """What one coordinator did during the last ``seconds``."""

    seconds: float
    calls: int
    errors: int
    cache_hits: int
    cache_misses: int
    p50: float | None
    p95: float | None
    p99: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def cache_hit_rate(self) -> float:
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else 0.0


def quantile(q: float, bucket_counts: list[int], bounds: tuple[float, ...] = LATENCY_BUCKETS) -> float | None:
    """Estimate a quantile from bucket counts the way PromQL's ``histogram_quantile`` does.

    >>> quantile(0.5, [0, 10, 0] + [0] * 13)
    0.0075
    """
    total = sum(bucket_counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(bucket_counts):
        if seen + count >= rank and count:
            if index >= len(bounds):  # +Inf bucket: the highest finite bound, as PromQL does
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            upper = bounds[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


class Window:
    """A ring of time slots; each slot counts calls, errors, cache lookups and a latency histogram."""

    __slots__ = ("_ids", "_lat", "_n", "_slots", "_started", "_width", "seconds")

    def __init__(self, seconds: float = 60.0, slots: int = 30, clock: float | None = None) -> None:
        self.seconds = seconds
        self._n = slots
        self._width = seconds / slots
        self._ids = [-1] * slots
        # [calls, errors, cache_hits, cache_misses] per slot, and a latency histogram per slot
        self._slots = [[0, 0, 0, 0] for _ in range(slots)]
        self._lat = [[0] * _N_BUCKETS for _ in range(slots)]
        self._started = time.monotonic() if clock is None else clock

    def _slot(self, now: float) -> int:
        slot_id = int(now / self._width)
        index = slot_id % self._n
        if self._ids[index] != slot_id:
            self._ids[index] = slot_id
            counts = self._slots[index]
            counts[0] = counts[1] = counts[2] = counts[3] = 0
            lat = self._lat[index]
            for i in range(_N_BUCKETS):
                lat[i] = 0
        return index

    def add_call(self, now: float, duration: float, error: bool) -> None:
        index = self._slot(now)
        counts = self._slots[index]
        counts[0] += 1
        if error:
            counts[1] += 1
        self._lat[index][bisect.bisect_left(LATENCY_BUCKETS, duration)] += 1

    def add_cache(self, now: float, hit: bool) -> None:
        self._slots[self._slot(now)][2 if hit else 3] += 1

    def snapshot(self, now: float) -> WindowStats:
        current = int(now / self._width)
        oldest = current - self._n + 1
        totals = [0, 0, 0, 0]
        latency = [0] * _N_BUCKETS
        for index, slot_id in enumerate(self._ids):
            if oldest <= slot_id <= current:
                counts = self._slots[index]
                for i in range(4):
                    totals[i] += counts[i]
                for i, count in enumerate(self._lat[index]):
                    latency[i] += count
        # Until a whole window has passed, rates are per second actually observed (at least one second,
        # so that a burst in the first milliseconds does not read as thousands of calls a second).
        span = min(self.seconds, max(now - self._started, 1.0))
        return WindowStats(
            seconds=span,
            calls=totals[0],
            errors=totals[1],
            cache_hits=totals[2],
            cache_misses=totals[3],
            p50=quantile(0.50, latency),
            p95=quantile(0.95, latency),
            p99=quantile(0.99, latency),
        )
