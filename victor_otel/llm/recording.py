"""Pre-aggregated LLM metrics: one :class:`LLMSeries` per (coordinator, provider, model, operation).

A model call updates its series under one lock with a few additions, like a coordinator call
(:mod:`victor_otel.registry`); no OpenTelemetry synchronous instrument is touched. At collection time
:meth:`LLMRecorder.produce` turns the state into SDK ``Metric`` objects: the ``victor_llm_*`` families for
every reader, and :meth:`LLMRecorder.produce_genai` the GenAI conventions' client instruments
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``, ``...time_to_first_chunk``) for the
pushing readers (OTLP). Label sets are capped by the registry's cardinality limit; the excess folds into
one overflow series, and the registry warns once.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

from victor_otel import forking
from victor_otel import instruments as contract
from victor_otel.instruments import (
    GENAI_DURATION_BUCKETS,
    GENAI_TOKEN_BUCKETS,
    OVERFLOW_ATTRIBUTE,
    OVERFLOW_VALUE,
)
from victor_otel.llm import semconv
from victor_otel.registry import Registry, _metrics, get_registry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import Metric

_N_DURATION = len(GENAI_DURATION_BUCKETS) + 1
_N_TOKENS = len(GENAI_TOKEN_BUCKETS) + 1
#: Seconds per slot of the per-coordinator spend window (health's spend-rate check).
_SPEND_SLOT = 10.0


class LLMSeries:
    """Counters and histograms of one (coordinator, provider, model, operation)."""

    __slots__ = (
        "attributes", "cached_tokens", "cost", "dur_buckets", "dur_sum", "errors", "errors_by_type",
        "genai_attributes", "input_hist", "input_tokens", "key", "lock", "output_hist", "output_tokens",
        "requests", "start_ns", "ttft_buckets", "ttft_sum",
    )

    def __init__(self, key: tuple[str, str, str, str], overflow: bool = False) -> None:
        coordinator, provider, model, operation = key
        self.key = key
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.errors_by_type: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.cost = 0.0
        self.dur_buckets = [0] * _N_DURATION
        self.dur_sum = 0.0
        self.ttft_buckets = [0] * _N_DURATION
        self.ttft_sum = 0.0
        #: Per-call token counts for gen_ai.client.token.usage (bucket counts; the sums are the token totals).
        self.input_hist = [0] * _N_TOKENS
        self.output_hist = [0] * _N_TOKENS
        self.start_ns = time.time_ns()
        self.attributes: dict[str, Any] = {
            "coordinator": coordinator, "provider": provider, "model": model, "operation": operation,
        }
        self.genai_attributes: dict[str, Any] = {
            semconv.OPERATION_NAME: operation, semconv.PROVIDER_NAME: provider, semconv.REQUEST_MODEL: model,
            "victor.coordinator": coordinator,
        }
        if overflow:
            self.attributes[OVERFLOW_ATTRIBUTE] = True
            self.genai_attributes[OVERFLOW_ATTRIBUTE] = True

    def record(
        self,
        duration: float,
        ttft: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_tokens: int | None,
        cost: float | None,
        error_type: str | None,
        recorder: LLMRecorder,
    ) -> None:
        """Count one finished call (the buckets are found outside the lock; inside it, only additions)."""
        dur_bucket = bisect_left(GENAI_DURATION_BUCKETS, duration)
        with self.lock:
            self.requests += 1
            self.dur_sum += duration
            self.dur_buckets[dur_bucket] += 1
            if ttft is not None:
                self.ttft_buckets[bisect_left(GENAI_DURATION_BUCKETS, ttft)] += 1
                self.ttft_sum += ttft
            if input_tokens is not None:  # the histogram's sum is input_tokens, its count the buckets' sum
                self.input_tokens += input_tokens
                self.input_hist[bisect_left(GENAI_TOKEN_BUCKETS, input_tokens)] += 1
            if output_tokens is not None:
                self.output_tokens += output_tokens
                self.output_hist[bisect_left(GENAI_TOKEN_BUCKETS, output_tokens)] += 1
            if cached_tokens:
                self.cached_tokens += cached_tokens
            if cost:
                self.cost += cost
            if error_type is not None:
                self.errors += 1
                by_type = self.errors_by_type
                if error_type in by_type:
                    by_type[error_type] += 1
                else:
                    key = recorder.admit_error_type(error_type)
                    by_type[key] = by_type.get(key, 0) + 1
        if cost and recorder.budget_usd_per_hour is not None:  # the spend window serves health's budget check
            recorder.add_spend(self.key[0], cost)


class _Spend:
    """A coordinator's spend over the last window, in slots of :data:`_SPEND_SLOT` seconds."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots: deque[list[float]] = deque()

    def add(self, now: float, cost: float, horizon: float) -> None:
        slot = now // _SPEND_SLOT
        slots = self.slots
        if slots and slots[-1][0] == slot:
            slots[-1][1] += cost
        else:
            slots.append([slot, cost])
        while slots and slots[0][0] < (now - horizon) // _SPEND_SLOT:
            slots.popleft()

    def total(self, now: float, horizon: float) -> float:
        first = (now - horizon) // _SPEND_SLOT
        return sum(cost for slot, cost in list(self.slots) if slot >= first)


class LLMRecorder:
    """Process-wide LLM metric state; capped by (and reset with) the coordinator registry."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or get_registry()
        self._lock = threading.Lock()
        #: The hourly budget in US dollars, exported as victor_llm_budget_usd_per_hour when set.
        self.budget_usd_per_hour: float | None = None
        self._clear()

    def _clear(self) -> None:
        self.generation = self.registry.generation
        self.series: dict[tuple[str, str, str, str], LLMSeries] = {}
        self._overflow = LLMSeries((OVERFLOW_VALUE,) * 4, overflow=True)
        self._error_label_sets = 0
        self.spend: dict[str, _Spend] = {}

    def after_fork_in_child(self) -> None:
        """A forked child counts its own calls under locks of its own (as the coordinator registry does)."""
        self._lock = threading.Lock()
        self._clear()

    def series_for(self, coordinator: str, provider: str, model: str, operation: str) -> LLMSeries:
        """The series of one label set (created on first use; the overflow series past the cap)."""
        if self.generation != self.registry.generation:
            with self._lock:
                if self.generation != self.registry.generation:  # the registry was reset: so are we
                    self._clear()
        key = (coordinator, provider, model, operation)
        series = self.series.get(key)
        if series is not None:
            return series
        with self._lock:
            series = self.series.get(key)
            if series is None:
                if len(self.series) >= self.registry.limit:
                    self.registry.warn_overflow(contract.LLM_REQUESTS)
                    return self._overflow
                series = self.series[key] = LLMSeries(key)
            return series

    def admit_error_type(self, error_type: str) -> str:
        with self._lock:
            if self._error_label_sets >= self.registry.limit:
                self.registry.warn_overflow(contract.LLM_ERRORS_BY_TYPE)
                return OVERFLOW_VALUE
            self._error_label_sets += 1
            return error_type

    def add_spend(self, coordinator: str, cost: float) -> None:
        now = time.monotonic()
        with self._lock:
            spend = self.spend.get(coordinator)
            if spend is None:
                if len(self.spend) >= self.registry.limit:
                    return  # health's spend check sees the capped coordinators only
                spend = self.spend[coordinator] = _Spend()
            spend.add(now, cost, self.registry.window_seconds)

    def spend_per_hour(self) -> dict[str, float]:
        """Each coordinator's spend rate over the registry's window, in US dollars per hour."""
        now = time.monotonic()
        horizon = self.registry.window_seconds
        with self._lock:
            totals = {name: spend.total(now, horizon) for name, spend in self.spend.items()}
        return {name: total * 3600.0 / horizon for name, total in totals.items()}

    def _all(self) -> list[LLMSeries]:
        series = list(self.series.values())
        if self._overflow.requests:
            series.append(self._overflow)
        return series

    def produce(self) -> list[Metric]:
        """The victor_llm_* families that have data, as SDK ``Metric`` objects (every reader)."""
        from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

        now_ns = time.time_ns()
        requests: list[NumberDataPoint] = []
        errors: list[NumberDataPoint] = []
        by_type: list[NumberDataPoint] = []
        durations: list[HistogramDataPoint] = []
        ttfts: list[HistogramDataPoint] = []
        # tokens and cost have no operation label: summed over it here
        tokens: dict[tuple[str, str, str], list[int]] = {}
        costs: dict[tuple[str, str, str], float] = {}
        starts: dict[tuple[str, str, str], int] = {}
        overflowed: set[tuple[str, str, str]] = set()
        for s in self._all():
            with s.lock:
                n, n_errors, error_counts = s.requests, s.errors, list(s.errors_by_type.items())
                dur_buckets, dur_sum = list(s.dur_buckets), s.dur_sum
                ttft_buckets, ttft_sum = list(s.ttft_buckets), s.ttft_sum
                n_in, n_out, n_cached, cost = s.input_tokens, s.output_tokens, s.cached_tokens, s.cost
            ttft_count = sum(ttft_buckets)
            attrs, start = s.attributes, s.start_ns
            requests.append(NumberDataPoint(attrs, start, now_ns, n))
            errors.append(NumberDataPoint(attrs, start, now_ns, n_errors))
            for error_type, count in error_counts:
                by_type.append(NumberDataPoint({**attrs, "error_type": error_type}, start, now_ns, count))
            durations.append(_histogram(attrs, start, now_ns, dur_buckets, n, dur_sum, GENAI_DURATION_BUCKETS))
            if ttft_count:
                ttfts.append(
                    _histogram(attrs, start, now_ns, ttft_buckets, ttft_count, ttft_sum, GENAI_DURATION_BUCKETS)
                )
            short = s.key[:3]
            cell = tokens.setdefault(short, [0, 0, 0])
            cell[0] += n_in
            cell[1] += n_out
            cell[2] += n_cached
            costs[short] = costs.get(short, 0.0) + cost
            starts[short] = min(starts.get(short, start), start)
            if OVERFLOW_ATTRIBUTE in attrs:
                overflowed.add(short)
        token_points: list[NumberDataPoint] = []
        cost_points: list[NumberDataPoint] = []
        for short, counts in tokens.items():
            base: dict[str, Any] = {"coordinator": short[0], "provider": short[1], "model": short[2]}
            if short in overflowed:
                base[OVERFLOW_ATTRIBUTE] = True
            for token_type, count in zip(contract.TOKEN_TYPES, counts, strict=True):
                token_points.append(NumberDataPoint({**base, "token_type": token_type}, starts[short], now_ns, count))
            cost_points.append(NumberDataPoint(base, starts[short], now_ns, costs[short]))
        budget = []
        if self.budget_usd_per_hour is not None:
            budget.append(NumberDataPoint({}, 0, now_ns, self.budget_usd_per_hour))
        return list(
            _metrics(
                (contract.LLM_REQUESTS, requests), (contract.LLM_ERRORS, errors),
                (contract.LLM_ERRORS_BY_TYPE, by_type), (contract.LLM_TOKENS, token_points),
                (contract.LLM_COST, cost_points), (contract.LLM_DURATION, durations),
                (contract.LLM_TTFT, ttfts), (contract.LLM_BUDGET, budget),
            )
        )

    def produce_genai(self) -> list[Metric]:
        """The GenAI conventions' client instruments (for the pushing readers: OTLP, console, in-memory)."""
        from opentelemetry.sdk.metrics.export import HistogramDataPoint

        now_ns = time.time_ns()
        usage: list[HistogramDataPoint] = []
        durations: list[HistogramDataPoint] = []
        ttfts: list[HistogramDataPoint] = []
        for s in self._all():
            with s.lock:
                n, dur_buckets, dur_sum = s.requests, list(s.dur_buckets), s.dur_sum
                ttft_buckets, ttft_sum = list(s.ttft_buckets), s.ttft_sum
                hists = (
                    ("input", list(s.input_hist), s.input_tokens), ("output", list(s.output_hist), s.output_tokens)
                )
            ttft_count = sum(ttft_buckets)
            attrs, start = s.genai_attributes, s.start_ns
            durations.append(_histogram(attrs, start, now_ns, dur_buckets, n, dur_sum, GENAI_DURATION_BUCKETS))
            if ttft_count:
                ttfts.append(
                    _histogram(attrs, start, now_ns, ttft_buckets, ttft_count, ttft_sum, GENAI_DURATION_BUCKETS)
                )
            for token_type, hist, total in hists:
                count = sum(hist)
                if count:
                    usage.append(
                        _histogram(
                            {**attrs, semconv.TOKEN_TYPE: token_type}, start, now_ns, hist, count, total,
                            GENAI_TOKEN_BUCKETS,
                        )
                    )
        return list(
            _metrics(
                (contract.GENAI_TOKEN_USAGE, usage), (contract.GENAI_OPERATION_DURATION, durations),
                (contract.GENAI_TIME_TO_FIRST_CHUNK, ttfts),
            )
        )


def _histogram(
    attrs: dict[str, Any], start: int, now: int, buckets: list[int], count: int, total: float,
    bounds: tuple[float, ...],
) -> Any:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    return HistogramDataPoint(
        attributes=attrs, start_time_unix_nano=start, time_unix_nano=now, count=count, sum=total,
        bucket_counts=buckets, explicit_bounds=list(bounds), min=float("nan"), max=float("nan"), exemplars=[],
    )


_RECORDER = LLMRecorder()
forking.on_fork(after_in_child=_RECORDER.after_fork_in_child)


def get_recorder() -> LLMRecorder:
    """The process-wide LLM recorder."""
    return _RECORDER
