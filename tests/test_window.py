from __future__ import annotations

import pytest

from victor_otel.instruments import LATENCY_BUCKETS
from victor_otel.window import Window, quantile


def test_window_forgets_old_slots() -> None:
    window = Window(seconds=10, slots=10, clock=0.0)
    for t in range(10):
        window.add_call(float(t), 0.1, error=t % 2 == 0)
    stats = window.snapshot(9.5)
    assert stats.calls == 10 and stats.errors == 5 and stats.error_rate == 0.5
    assert stats.throughput == pytest.approx(10 / 9.5)  # per second observed since the window began
    later = window.snapshot(14.5)  # slots 0..4 have left the window
    assert later.calls == 5 and later.errors == 2
    assert window.snapshot(100.0).calls == 0


def test_slot_reuse_clears_the_old_counts() -> None:
    window = Window(seconds=10, slots=10, clock=0.0)
    window.add_call(0.0, 0.1, error=True)
    window.add_call(10.0, 0.1, error=False)  # same ring index, next lap
    stats = window.snapshot(10.0)
    assert stats.calls == 1 and stats.errors == 0


def test_rates_never_exceed_one() -> None:
    window = Window(seconds=5, slots=5, clock=0.0)
    for _ in range(100):
        window.add_call(1.0, 0.1, error=True)
        window.add_cache(1.0, hit=True)
    stats = window.snapshot(1.0)
    assert stats.error_rate == 1.0 and stats.cache_hit_rate == 1.0


def test_quantiles_interpolate_like_promql() -> None:
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    counts[LATENCY_BUCKETS.index(1.0)] = 100  # all in (0.5, 1.0]
    assert quantile(0.5, counts) == pytest.approx(0.75)
    assert quantile(0.99, counts) == pytest.approx(0.995)
    counts = [0] * len(counts)
    counts[-1] = 3  # all above the last bound
    assert quantile(0.5, counts) == LATENCY_BUCKETS[-1]
    assert quantile(0.5, [0] * len(counts)) is None


def test_p95_from_calls() -> None:
    window = Window(seconds=60, clock=0.0)
    for _ in range(95):
        window.add_call(1.0, 0.01, error=False)
    for _ in range(5):
        window.add_call(1.0, 20.0, error=False)
    stats = window.snapshot(1.0)
    assert stats.p50 is not None and stats.p50 <= 0.025
    assert stats.p99 is not None and 15.0 < stats.p99 <= 30.0


def test_out_of_order_calls_land_in_their_own_slot() -> None:
    window = Window(seconds=10, slots=10, clock=0.0)
    window.add_call(5.5, 0.1, error=False)
    window.add_call(3.5, 0.1, error=True)  # older than the previous call: its own slot, not the last one
    window.add_call(5.6, 0.1, error=False)
    assert window.snapshot(5.9).calls == 3
    later = window.snapshot(13.9)  # slot 3 has left the window, slot 5 has not
    assert later.calls == 2 and later.errors == 0
    window.add_call(15.5, 0.1, error=False)  # slot 5's next lap: cleared first
    assert window.snapshot(15.9).calls == 1
