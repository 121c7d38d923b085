"""Several worker processes behind one port: exact ``/metrics`` across workers (``VICTOR_OTEL_MULTIPROC_DIR``).

**Fork safety** (``gunicorn --preload``: ``init()`` in the master, workers forked from it) is each
module's own, registered through :mod:`victor_otel.forking`: in each child the registry and the export
counts start from zero (the parent's calls are the parent's), locks are new, the Resource gets a
``service.instance.id`` of its own, OTLP exporters are rebuilt (an HTTP connection must not be shared
with the parent), the multi-process snapshot writer restarts under a new file, and the process gauges
follow the child's pid (:mod:`victor_otel.bootstrap` for the telemetry). The SDK's batch processors and
periodic reader restart their own threads (their own at-fork hooks).

**Two supported ways to get exact totals from N workers** (see docs/operating.md):

- *OTLP push per worker* (``OTEL_METRICS_EXPORTER=otlp``): each worker pushes its own cumulative
  counters with its own ``service.instance.id``; the collector / Prometheus sums over instances.
- *Multi-process /metrics* (``VICTOR_OTEL_MULTIPROC_DIR``): every worker writes a snapshot of its
  pre-aggregated counters to a shared directory (every :data:`SNAPSHOT_INTERVAL` seconds, at every
  scrape it answers, and at exit); a scrape of any worker sums every snapshot per label set, so the
  numbers are the same whichever worker answers and a dead worker's counts are kept.

Draining behind a server is :mod:`victor_otel.web.lifespan`'s; flushing is :func:`victor_otel.bootstrap.flush`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, HistogramDataPoint, Metric, Sum

from victor_otel import instruments as contract
from victor_otel.errors import VictorOtelConfigError
from victor_otel.instruments import Kind, number_point, sdk_metric
from victor_otel.readers import VictorPrometheusReader
from victor_otel.window import ratio

_logger = logging.getLogger("victor_otel")

#: Seconds between two snapshots of a worker's counters in multi-process mode.
SNAPSHOT_INTERVAL = 1.0
_FORMAT = 1
_PREFIX = "victor-otel-"
_WINDOW_GAUGES = (contract.THROUGHPUT.otel_name, contract.ERROR_RATE.otel_name, contract.CACHE_HIT_RATE.otel_name)


# -- multi-process /metrics -------------------------------------------------------------------------


def check_directory(directory: str) -> Path:
    """The multi-process directory, created if needed; :class:`VictorOtelConfigError` if not writable."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as error:
        raise VictorOtelConfigError(
            f"multiproc_dir: {directory!r} is not a writable directory ({error.strerror}); accepted: a "
            "directory every worker can write to (VICTOR_OTEL_MULTIPROC_DIR)"
        ) from None
    return path


def _key(name: str, attributes: dict[str, Any]) -> tuple[str, str]:
    return name, json.dumps(attributes, sort_keys=True)


class Multiprocess:
    """Snapshots of this worker's counters in a shared directory, and their sum for ``/metrics``.

    A snapshot is a small JSON file per process (``victor-otel-<pid>-<id>.json``), replaced atomically,
    holding the cumulative sums and histograms the registry and the export counts produce, and each
    coordinator's sliding-window counts (the rate gauges are recomputed from the summed counts).
    """

    def __init__(self, directory: str, producers: Iterable[Callable[[], Iterable[Metric]]], registry: Any) -> None:
        self.directory = check_directory(directory)
        self._producers = tuple(producers)
        self._registry = registry
        self._new_identity()

    def _new_identity(self) -> None:
        self.pid = os.getpid()
        self.path = self.directory / f"{_PREFIX}{self.pid}-{uuid.uuid4().hex[:12]}.json"
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- writing ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._run, name="victor-otel-multiprocess", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SNAPSHOT_INTERVAL):
            try:
                self.write()
            except Exception:  # a full disk must not kill the thread: the next tick tries again
                _logger.warning("victor_otel: writing the multi-process snapshot failed", exc_info=True)

    def snapshot(self) -> dict[str, Any]:
        """This process's counters as a JSON-able dict."""
        sums: list[list[Any]] = []
        histograms: list[list[Any]] = []
        gauges: list[list[Any]] = []
        for produce in self._producers:
            for metric in produce():
                data = metric.data
                head = [metric.name, metric.unit, metric.description]
                if isinstance(data, Sum):
                    for p in data.data_points:
                        sums.append([*head, dict(p.attributes or {}), p.start_time_unix_nano, p.value,
                                     data.is_monotonic])
                elif isinstance(data, Histogram):
                    for h in data.data_points:
                        histograms.append([*head, dict(h.attributes or {}), h.start_time_unix_nano, h.count, h.sum,
                                           list(h.explicit_bounds), list(h.bucket_counts)])
                elif isinstance(data, Gauge) and metric.name not in _WINDOW_GAUGES:
                    for p in data.data_points:
                        gauges.append([*head, dict(p.attributes or {}), p.value])
        windows = []
        for state in self._registry.all_coordinators():
            stats = state.stats()
            windows.append([dict(state.attributes), stats.calls, stats.errors, stats.cache_hits,
                            stats.cache_misses, stats.seconds])
        return {"format": _FORMAT, "pid": os.getpid(), "written": time.time(), "sums": sums,
                "histograms": histograms, "gauges": gauges, "windows": windows}

    def write(self) -> dict[str, Any]:
        """Write this process's snapshot (atomically: readers never see half a file); return it."""
        snap = self.snapshot()
        with self._write_lock:
            tmp = self.path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text(json.dumps(snap, separators=(",", ":")))
            os.replace(tmp, self.path)
        return snap

    def close(self) -> None:
        """Stop the writer and write the last snapshot (the worker's counts outlive it)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        try:
            self.write()
        except Exception:
            _logger.warning("victor_otel: writing the last multi-process snapshot failed", exc_info=True)

    def reinit_after_fork(self) -> None:
        """In a forked child: a file of its own and a writer thread of its own."""
        running = self._thread is not None and not self._stop.is_set()
        self._new_identity()
        if running:
            self.start()

    # -- reading ------------------------------------------------------------------------------------

    def _others(self) -> list[dict[str, Any]]:
        found = []
        for path in self.directory.glob(f"{_PREFIX}*.json"):
            if path == self.path:
                continue
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # vanished or foreign: the next scrape reads it again
            if isinstance(snap, dict) and snap.get("format") == _FORMAT:
                found.append(snap)
        return found

    def produce(self) -> list[Metric]:
        """Every worker's counters summed per label set (this worker's read live, the others' from files)."""
        own = self.write()
        return merge_snapshots(own, self._others(), window_seconds=self._registry.window_seconds)


def merge_snapshots(own: dict[str, Any], others: list[dict[str, Any]], window_seconds: float) -> list[Metric]:
    """Sum counters and histograms over snapshots; rebuild the window gauges from summed window counts.

    Gauges other than the window ones describe one process: only ``own``'s are kept. A snapshot older
    than the window (a worker gone) adds nothing to the window gauges but keeps its counters.
    """
    now = time.time()
    now_ns = time.time_ns()
    meta: dict[str, tuple[str, str]] = {}
    sums: dict[tuple[str, str], list[Any]] = {}
    monotonic: dict[str, bool] = {}
    hists: dict[tuple[str, str], list[Any]] = {}
    windows: dict[str, list[Any]] = {}
    for snap in (own, *others):
        try:
            for name, unit, description, attrs, start, value, is_monotonic in snap["sums"]:
                meta[name] = (unit, description)
                monotonic[name] = bool(is_monotonic)
                cell = sums.setdefault(_key(name, attrs), [attrs, start, 0])
                cell[1] = min(cell[1], start)
                cell[2] += value
            for name, unit, description, attrs, start, count, total, bounds, buckets in snap["histograms"]:
                meta[name] = (unit, description)
                key = _key(name, attrs)
                if key not in hists:
                    hists[key] = [attrs, start, 0, 0.0, list(bounds), [0] * len(buckets)]
                cell = hists[key]
                if cell[4] != list(bounds) or len(cell[5]) != len(buckets):
                    continue  # another version's buckets: cannot be added
                cell[1] = min(cell[1], start)
                cell[2] += count
                cell[3] += total
                cell[5] = [a + b for a, b in zip(cell[5], buckets, strict=True)]
            if snap is own or now - float(snap["written"]) <= window_seconds:
                for attrs, calls, errors, hits, misses, seconds in snap["windows"]:
                    cell = windows.setdefault(json.dumps(attrs, sort_keys=True), [attrs, 0, 0, 0, 0, seconds])
                    cell[1] += calls
                    cell[2] += errors
                    cell[3] += hits
                    cell[4] += misses
        except (KeyError, TypeError, ValueError):
            _logger.debug("victor_otel: skipping a malformed multi-process snapshot", exc_info=True)
    families: dict[str, list[Any]] = {}
    for (name, _), (attrs, start, value) in sums.items():
        families.setdefault(name, []).append(number_point(attrs, start, now_ns, value))
    metrics = [
        sdk_metric(Kind.COUNTER, name, *meta[name], points, monotonic[name]) for name, points in families.items()
    ]
    hist_families: dict[str, list[HistogramDataPoint]] = {}
    for (name, _), (attrs, start, count, total, bounds, buckets) in hists.items():
        hist_families.setdefault(name, []).append(
            HistogramDataPoint(attributes=attrs, start_time_unix_nano=start, time_unix_nano=now_ns, count=count,
                               sum=total, bucket_counts=buckets, explicit_bounds=bounds,
                               min=float("nan"), max=float("nan"))
        )
    metrics += [sdk_metric(Kind.HISTOGRAM, name, *meta[name], points) for name, points in hist_families.items()]
    metrics += _window_gauges(windows.values(), sums)
    gauge_families: dict[str, list[Any]] = {}
    gauge_meta: dict[str, tuple[str, str]] = {}
    for name, unit, description, attrs, value in own.get("gauges", []):
        gauge_meta[name] = (unit, description)
        gauge_families.setdefault(name, []).append(number_point(attrs, 0, now_ns, value))
    metrics += [sdk_metric(Kind.GAUGE, name, *gauge_meta[name], points) for name, points in gauge_families.items()]
    return metrics


def _window_gauges(windows: Iterable[list[Any]], sums: dict[tuple[str, str], list[Any]]) -> list[Metric]:
    now_ns = time.time_ns()
    with_cache = {key for name, key in sums if name == contract.CACHE_HITS.otel_name}
    throughput, error_rate, hit_rate = [], [], []
    for attrs, calls, errors, hits, misses, seconds in windows:
        throughput.append(number_point(attrs, 0, now_ns, calls / seconds if seconds > 0 else 0.0))
        # A ratio over an empty window has no sample (window.ratio), as in the single-process registry.
        if (errors_ratio := ratio(errors, calls)) is not None:
            error_rate.append(number_point(attrs, 0, now_ns, errors_ratio))
        if json.dumps(attrs, sort_keys=True) in with_cache and (hits_ratio := ratio(hits, hits + misses)) is not None:
            hit_rate.append(number_point(attrs, 0, now_ns, hits_ratio))
    return contract.metrics(
        ((contract.CACHE_HIT_RATE, hit_rate), (contract.THROUGHPUT, throughput), (contract.ERROR_RATE, error_rate))
    )


def enable_multiprocess(telemetry: Any) -> None:
    """Multi-process mode for ``telemetry`` (``multiproc_dir`` set): snapshots, and /metrics summing them."""
    registry_produce = telemetry.registry.produce
    exports_produce = telemetry.exports.produce
    multiprocess = Multiprocess(telemetry.settings.multiproc_dir, (registry_produce, exports_produce),
                                telemetry.registry)
    telemetry.multiprocess = multiprocess
    for reader in telemetry.readers:
        if isinstance(reader, VictorPrometheusReader):
            # /metrics only: OTLP pushes stay per process (the collector sums over service.instance.id).
            reader._replacements = {registry_produce: multiprocess.produce, exports_produce: lambda: []}
    multiprocess.start()


def sum_over_workers(telemetry: Any, produce: Callable[[], Sequence[Metric]]) -> None:
    """In multi-process mode, also sum ``produce``'s counters over the workers on /metrics (a feature's
    own pre-aggregated families, added after ``init()`` built the providers: the LLM calls'). Nothing
    otherwise."""
    multiprocess = telemetry.multiprocess
    if multiprocess is None or produce in multiprocess._producers:
        return
    multiprocess._producers += (produce,)
    for reader in telemetry.readers:
        if isinstance(reader, VictorPrometheusReader):  # its rows now come from the summed snapshots
            reader._replacements = {**reader._replacements, produce: _nothing}


def _nothing() -> list[Metric]:
    return []
