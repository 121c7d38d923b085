"""process.py: one sampler for the process gauges and the process health checks."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import victor_otel
from tests.conftest import scrape, value
from victor_otel import process
from victor_otel.health import check_health


def test_the_gauges_and_the_health_checks_read_the_same_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    victor_otel.init(service_name="proc", traces_exporter="none", health_cache_ttl=0)
    reading = process.Sample(3 * 2**30, 90.0)
    monkeypatch.setattr(process.ProcessSampler, "sample", lambda self: reading)
    samples = scrape()
    assert value(samples, "victor_coordinator_memory_bytes") == 3 * 2**30
    assert value(samples, "victor_coordinator_cpu_percent") == 90.0
    reading = process.Sample(5 * 2**30, 10.0)
    report = asyncio.run(check_health())
    assert report.check("process:memory").observed_value == 5 * 2**30
    assert report.check("process:memory").status == "fail" and report.check("process:cpu").status == "pass"


def test_a_cpu_reading_is_reused_within_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    sampler = process.ProcessSampler()
    calls: list[None] = []
    monkeypatch.setattr(sampler._process, "cpu_percent", lambda interval=None: calls.append(None) or 42.0)
    monkeypatch.setattr(process, "CPU_INTERVAL", 3600.0)
    sampler._cpu = (1.0, time.monotonic() - 7200.0)  # measured two intervals ago (not at 0.0: a fresh
    # machine's monotonic clock is its uptime, below one interval: it failed on a machine up for 20 min)
    assert sampler.sample().cpu_percent == 42.0
    assert [sampler.sample().cpu_percent for _ in range(5)] == [42.0] * 5
    assert len(calls) == 1  # probes in a storm share one interval


def test_a_forked_child_samples_itself() -> None:
    parent = process.sampler().pid
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write_end, str(process.sampler().pid).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = int(pipe.read())
    assert parent == os.getpid() and child == pid
