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
_CALLS, _ERRORS, _HITS, _MISSES, _LATENCY = 0, 1, 2, 3, 4  # offsets in a slot
_SLOT_LEN = _LATENCY + _N_BUCKETS


def ratio(part: int, whole: int) -> float | None:
    """``part / whole``, or ``None`` when ``whole`` is 0: a ratio over nothing is unknown, not 0.

    The rate gauges export no sample then (an idle cache does not read as "0 % hits").

    >>> ratio(1, 4), ratio(0, 0)
    (0.25, None)
    """
    return part / whole if whole else None


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
    def error_rate(self) -> float | None:
        """Errors / calls; ``None`` when the window holds no call."""
        return ratio(self.errors, self.calls)

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def cache_hit_rate(self) -> float | None:
        """Hits / lookups; ``None`` when the window holds no lookup."""
        return ratio(self.cache_hits, self.cache_hits + self.cache_misses)


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

    __slots__ = ("_empty", "_ids", "_last", "_last_end", "_last_start", "_n", "_slots", "_started", "_width", "seconds")

    def __init__(self, seconds: float = 60.0, slots: int = 30, clock: float | None = None) -> None:
        self.seconds = seconds
        self._n = slots
        self._width = seconds / slots
        self._ids = [-1] * slots
        # One flat list per slot: calls, errors, cache hits, cache misses, then the latency histogram.
        self._empty = [0] * _SLOT_LEN
        self._slots = [[0] * _SLOT_LEN for _ in range(slots)]
        self._started = time.monotonic() if clock is None else clock
        # The slot resolved last and the time range it covers: nearly every call lands in it.
        self._last = self._slots[0]
        self._last_start = self._last_end = 0.0

    def _slot(self, now: float) -> list[int]:
        if self._last_start <= now < self._last_end:
            return self._last
        slot_id = int(now / self._width)
        index = slot_id % self._n
        slot = self._slots[index]
        if self._ids[index] != slot_id:  # the clock came back to this slot: forget its last lap
            self._ids[index] = slot_id
            slot[:] = self._empty
        self._last, self._last_start, self._last_end = slot, slot_id * self._width, (slot_id + 1) * self._width
        return slot

    def add_call(self, now: float, duration: float, error: bool) -> None:
        self.add_bucket(now, bisect.bisect_left(LATENCY_BUCKETS, duration), error)

    def add_bucket(self, now: float, bucket: int, error: bool) -> None:
        """:meth:`add_call` with the latency bucket index already known (the registry computed it)."""
        slot = self._last if self._last_start <= now < self._last_end else self._slot(now)
        slot[_CALLS] += 1
        if error:
            slot[_ERRORS] += 1
        slot[_LATENCY + bucket] += 1

    def add_cache(self, now: float, hit: bool) -> None:
        self._slot(now)[_HITS if hit else _MISSES] += 1

    def snapshot(self, now: float) -> WindowStats:
        current = int(now / self._width)
        oldest = current - self._n + 1
        totals = [0] * _SLOT_LEN
        for index, slot_id in enumerate(self._ids):
            if oldest <= slot_id <= current:
                for i, count in enumerate(self._slots[index]):
                    totals[i] += count
        latency = totals[_LATENCY:]
        # Until a whole window has passed, rates are per second actually observed (at least one second,
        # so that a burst in the first milliseconds does not read as thousands of calls a second).
        span = min(self.seconds, max(now - self._started, 1.0))
        return WindowStats(
            seconds=span,
            calls=totals[_CALLS],
            errors=totals[_ERRORS],
            cache_hits=totals[_HITS],
            cache_misses=totals[_MISSES],
            p50=quantile(0.50, latency),
            p95=quantile(0.95, latency),
            p99=quantile(0.99, latency),
        )
