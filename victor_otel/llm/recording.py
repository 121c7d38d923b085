"""Pre-aggregated LLM metrics: one :class:`LLMSeries` per (coordinator, provider, model, operation).

A finished model call appends one tuple to the pre-bound series of its label set (atomic: no lock, no
arithmetic, no pricing on the call's path); the series folds its pending calls into its counters in
batches, columns summed and bucketed in C, at every collection and every :data:`FOLD_EVERY` calls. No
OpenTelemetry synchronous instrument is touched. At collection time
:meth:`LLMRecorder.produce` turns the state into SDK ``Metric`` objects: the ``victor_llm_*`` families for
every reader, and :meth:`LLMRecorder.produce_genai` the GenAI conventions' client instruments
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``, ``...time_to_first_chunk``) for the
pushing readers (OTLP), from the same state (the token-usage histograms only while a pushing exporter is
on: :attr:`LLMRecorder.genai_tokens`). Label sets are capped by the registry's cardinality limit; the excess
folds into one overflow series, and the registry warns once.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from victor_otel import forking
from victor_otel import instruments as contract
from victor_otel.instruments import (
    GENAI_DURATION_BUCKETS,
    GENAI_TOKEN_BUCKETS,
    OVERFLOW_ATTRIBUTE,
    OVERFLOW_VALUE,
    histogram_point,
    metrics,
    number_point,
)
from victor_otel.llm import semconv
from victor_otel.llm.prices import Price, PriceTable
from victor_otel.registry import Registry, get_registry

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, Metric, NumberDataPoint

_logger = logging.getLogger("victor_otel")
_N_DURATION = len(GENAI_DURATION_BUCKETS) + 1
_N_TOKENS = len(GENAI_TOKEN_BUCKETS) + 1
#: Seconds per slot of the per-coordinator spend window (health's spend-rate check).
_SPEND_SLOT = 10.0
#: A series folds its pending calls into its counters at least every this many calls (and at every
#: collection): the pending calls of one series never hold more memory than this many small tuples.
FOLD_EVERY = 128


class FinishedCall(Protocol):
    """What a series reads of a finished call (:class:`victor_otel.llm.LLMCall`)."""

    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    response_model: str | None
    ttft: float | None
    error_type: str | None


class _Errors:
    """The failed calls of one error type: their count and their durations (the conventions' duration
    instrument carries ``error.type``)."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.buckets = [0] * _N_DURATION
        self.sum = 0.0


def _add_buckets(counts: list[int], bounds: tuple[float, ...], values: Sequence[float]) -> None:
    """Count ``values`` into the histogram ``counts``: sorted once, then one bisection per bound (in C)."""
    ordered = sorted(values)
    below = 0
    for i, bound in enumerate(bounds):
        upto = bisect_right(ordered, bound)  # values <= bound: buckets 0..i (a bucket holds (previous, bound])
        counts[i] += upto - below
        below = upto
    counts[-1] += len(ordered) - below


def _present(values: tuple[Any, ...]) -> Sequence[Any]:
    """``values`` without its ``None`` ones (the tuple itself when it has none)."""
    if values.count(None):
        return [v for v in values if v is not None]
    return values


class LLMSeries:
    """Counters and histograms of one (coordinator, provider, model, operation).

    A finished call is one tuple appended to :attr:`pending` (atomic under the GIL: no lock, no
    arithmetic on the call's path); :meth:`fold` adds the pending calls to the counters in one batch, at
    every collection and every :data:`FOLD_EVERY` calls, under the series' lock. The duration histogram
    of successful calls and one per error type are kept apart, so that
    ``gen_ai.client.operation.duration`` gets ``error.type`` and ``victor_llm_request_duration_seconds``
    (every call) is their sum.
    """

    __slots__ = (
        "attributes", "cached_tokens", "cost", "dur_buckets", "dur_sum", "errors", "genai_attributes", "input_hist",
        "input_hist_sum", "input_tokens", "key", "lock", "model", "output_hist", "output_hist_sum", "output_tokens",
        "pending", "priced", "provider",
        "requests", "start_ns", "ttft_buckets", "ttft_sum",
    )

    def __init__(self, key: tuple[str, str, str, str], overflow: bool = False) -> None:
        coordinator, provider, model, operation = key
        self.key = key
        self.provider = provider
        self.model = model
        self.lock = threading.Lock()
        #: Finished calls not folded yet: (duration, ttft, input, output, cached input, response model, error type).
        self.pending: list[tuple[Any, ...]] = []
        self.requests = 0
        self.errors: dict[str, _Errors] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.cost = 0.0
        self.dur_buckets = [0] * _N_DURATION  # successful calls (errors: in self.errors)
        self.dur_sum = 0.0
        self.ttft_buckets = [0] * _N_DURATION
        self.ttft_sum = 0.0
        #: Per-call token counts for gen_ai.client.token.usage, and their sums (while genai_tokens is on).
        self.input_hist = [0] * _N_TOKENS
        self.input_hist_sum = 0
        self.output_hist = [0] * _N_TOKENS
        self.output_hist_sum = 0
        #: (table, response model, price) of the last priced call.
        self.priced: tuple[PriceTable | None, str | None, Price | None] = (None, None, None)
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

    def record(self, call: FinishedCall, duration: float, recorder: LLMRecorder) -> None:
        """Count one finished call: one append (the hot path); every :data:`FOLD_EVERY` calls, a fold."""
        pending = self.pending
        pending.append((duration, call.ttft, call.input_tokens, call.output_tokens, call.cached_input_tokens,
                        call.response_model, call.error_type))
        if len(pending) >= FOLD_EVERY:
            self.fold(recorder)

    def price_of(self, prices: PriceTable, response_model: str | None) -> Price | None:
        """The table's price for this series' calls answered by ``response_model`` (the last one kept)."""
        priced = self.priced
        if priced[0] is prices and priced[1] == response_model:
            return priced[2]
        price = prices.resolve(self.provider, self.model, response_model)
        self.priced = (prices, response_model, price)  # one assignment: threads see all of it or none
        return price

    def cost_of(self, call: FinishedCall, prices: PriceTable) -> float | None:
        """One call's cost in US dollars (``None``: no tokens, or no price)."""
        if call.input_tokens is None and call.output_tokens is None:
            return None
        n_in, n_out, n_cached = call.input_tokens or 0, call.output_tokens or 0, call.cached_input_tokens or 0
        price = self.price_of(prices, call.response_model)
        if price is not None:
            return price.cost(n_in, n_out, n_cached)
        return prices.unpriced(self.provider, self.model, call.response_model, n_in, n_out, n_cached)

    def fold(self, recorder: LLMRecorder) -> None:
        """Add the pending calls to the counters."""
        with self.lock:
            self._fold(recorder)

    def _fold(self, recorder: LLMRecorder) -> None:
        # Under self.lock (one folder at a time); calls appended meanwhile stay for the next fold.
        pending = self.pending
        n = len(pending)
        if not n:
            return
        batch = pending[:n]
        del pending[:n]
        # Columns, each summed and bucketed in C: per call, the Python work is a tuple append.
        durations, ttfts, inputs, outputs, cached, models, error_types = zip(*batch, strict=True)
        self.requests += n
        ok: Sequence[float] = durations
        if error_types.count(None) != n:
            ok = [d for d, e in zip(durations, error_types, strict=True) if e is None]
            for duration, error_type in zip(durations, error_types, strict=True):
                if error_type is not None:
                    self._failed(error_type, duration, recorder)
        self.dur_sum += sum(ok)
        _add_buckets(self.dur_buckets, GENAI_DURATION_BUCKETS, ok)
        firsts = _present(ttfts)
        if firsts:
            self.ttft_sum += sum(firsts)
            _add_buckets(self.ttft_buckets, GENAI_DURATION_BUCKETS, firsts)
        counted_in = _present(inputs)
        counted_out = _present(outputs)
        self.input_tokens += sum(counted_in)
        self.output_tokens += sum(counted_out)
        if recorder.genai_tokens:  # gen_ai.client.token.usage: per-call token counts, bucketed
            _add_buckets(self.input_hist, GENAI_TOKEN_BUCKETS, counted_in)
            _add_buckets(self.output_hist, GENAI_TOKEN_BUCKETS, counted_out)
            self.input_hist_sum += sum(counted_in)
            self.output_hist_sum += sum(counted_out)
        if cached.count(None) != n:
            self.cached_tokens += sum(filter(None, cached))
        if counted_in or counted_out:
            try:
                self.cost += self._batch_cost(recorder.prices, inputs, outputs, cached, models)
            except Exception:  # a failing price source (genai-prices) must not cost the batch its other counts
                _logger.exception("victor_otel: pricing model calls failed; their cost is not counted")

    def _batch_cost(
        self, prices: PriceTable, inputs: Sequence[int | None], outputs: Sequence[int | None],
        cached: Sequence[int | None], models: Sequence[str | None],
    ) -> float:
        n = len(models)
        price = self.price_of(prices, models[0])
        if price is not None and models.count(models[0]) == n:  # one price for the whole batch: sums suffice
            n_cached = 0
            if cached.count(None) != n:  # cached input counts at most the input (Price.cost)
                n_cached = sum(min(c or 0, i or 0) for c, i in zip(cached, inputs, strict=True))
            return price.cost(sum(filter(None, inputs)), sum(filter(None, outputs)), n_cached)
        total = 0.0
        for one_in, one_out, one_cached, model in zip(inputs, outputs, cached, models, strict=True):
            if one_in is None and one_out is None:
                continue
            price = self.price_of(prices, model)
            args = (one_in or 0, one_out or 0, one_cached or 0)
            cost = price.cost(*args) if price is not None else prices.unpriced(self.provider, self.model, model, *args)
            total += cost or 0.0
        return total

    def _failed(self, error_type: str, duration: float, recorder: LLMRecorder) -> None:
        cell = self.errors.get(error_type)
        if cell is None:
            key = recorder.admit_error_type(error_type)
            cell = self.errors.get(key)
            if cell is None:
                cell = self.errors[key] = _Errors()
        cell.count += 1
        cell.buckets[bisect_left(GENAI_DURATION_BUCKETS, duration)] += 1
        cell.sum += duration


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
        #: The price table calls are priced with (``init(llm_prices=...)``).
        self.prices = PriceTable({})
        #: Whether gen_ai.client.token.usage is kept (per-call token counts, bucketed): only while a metric
        #: exporter that pushes (OTLP, console) is on; /metrics shows the token totals only.
        self.genai_tokens = False
        self._clear()
        self.registry.on_reset(self._clear)  # reset with the registry: the hot path checks nothing

    def _clear(self) -> None:
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
        if self._overflow.requests or self._overflow.pending:
            series.append(self._overflow)
        return series

    def _snapshots(self) -> list[tuple[LLMSeries, _Snapshot]]:
        """Each series and a copy of its state, taken under its lock."""
        copies = []
        for s in self._all():
            with s.lock:
                s._fold(self)
                copy = _Snapshot(s)
            copies.append((s, copy))
        return copies

    def produce(self) -> list[Metric]:
        """The victor_llm_* families that have data, as SDK ``Metric`` objects (every reader)."""
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
        for s, c in self._snapshots():
            attrs, start = s.attributes, s.start_ns
            requests.append(number_point(attrs, start, now_ns, c.requests))
            errors.append(number_point(attrs, start, now_ns, sum(count for _, count, _, _ in c.errors)))
            dur_buckets, dur_sum = list(c.dur_buckets), c.dur_sum
            for error_type, count, buckets, total in c.errors:
                by_type.append(number_point({**attrs, "error_type": error_type}, start, now_ns, count))
                dur_buckets = [a + b for a, b in zip(dur_buckets, buckets, strict=True)]
                dur_sum += total
            durations.append(
                histogram_point(contract.LLM_DURATION, attrs, start, now_ns, dur_buckets, c.requests, dur_sum)
            )
            if c.ttft_count:
                ttfts.append(
                    histogram_point(contract.LLM_TTFT, attrs, start, now_ns, c.ttft_buckets, c.ttft_count, c.ttft_sum)
                )
            short = s.key[:3]
            cell = tokens.setdefault(short, [0, 0, 0])
            cell[0] += c.input_tokens
            cell[1] += c.output_tokens
            cell[2] += c.cached_tokens
            costs[short] = costs.get(short, 0.0) + c.cost
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
                token_points.append(number_point({**base, "token_type": token_type}, starts[short], now_ns, count))
            cost_points.append(number_point(base, starts[short], now_ns, costs[short]))
        budget = []
        if self.budget_usd_per_hour is not None:
            budget.append(number_point({}, 0, now_ns, self.budget_usd_per_hour))
        return metrics((
            (contract.LLM_REQUESTS, requests), (contract.LLM_ERRORS, errors),
            (contract.LLM_ERRORS_BY_TYPE, by_type), (contract.LLM_TOKENS, token_points),
            (contract.LLM_COST, cost_points), (contract.LLM_DURATION, durations),
            (contract.LLM_TTFT, ttfts), (contract.LLM_BUDGET, budget),
        ))

    def produce_genai(self) -> list[Metric]:
        """The GenAI conventions' client instruments (for the pushing readers: OTLP, console, in-memory):
        the operation duration with ``error.type`` on failed calls, the time to first chunk, and the token
        usage while :attr:`genai_tokens` is on."""
        now_ns = time.time_ns()
        usage: list[HistogramDataPoint] = []
        durations: list[HistogramDataPoint] = []
        ttfts: list[HistogramDataPoint] = []
        for s, c in self._snapshots():
            attrs, start = s.genai_attributes, s.start_ns
            n_ok = c.requests - sum(count for _, count, _, _ in c.errors)
            if n_ok:
                durations.append(histogram_point(
                    contract.GENAI_OPERATION_DURATION, attrs, start, now_ns, c.dur_buckets, n_ok, c.dur_sum
                ))
            for error_type, count, buckets, total in c.errors:
                durations.append(histogram_point(
                    contract.GENAI_OPERATION_DURATION, {**attrs, semconv.ERROR_TYPE: error_type}, start, now_ns,
                    buckets, count, total,
                ))
            if c.ttft_count:
                ttfts.append(histogram_point(
                    contract.GENAI_TIME_TO_FIRST_CHUNK, attrs, start, now_ns, c.ttft_buckets, c.ttft_count,
                    c.ttft_sum,
                ))
            for token_type, hist, total in (("input", c.input_hist, c.input_hist_sum),
                                            ("output", c.output_hist, c.output_hist_sum)):
                count = sum(hist)
                if count:
                    usage.append(histogram_point(
                        contract.GENAI_TOKEN_USAGE, {**attrs, semconv.TOKEN_TYPE: token_type}, start, now_ns, hist,
                        count, total,
                    ))
        return metrics((
            (contract.GENAI_TOKEN_USAGE, usage), (contract.GENAI_OPERATION_DURATION, durations),
            (contract.GENAI_TIME_TO_FIRST_CHUNK, ttfts),
        ))


class _Snapshot:
    """A copy of one series' state (taken under its lock: lists copied, nothing computed)."""

    __slots__ = (
        "cached_tokens", "cost", "dur_buckets", "dur_sum", "errors", "input_hist", "input_hist_sum", "input_tokens",
        "output_hist", "output_hist_sum", "output_tokens", "requests", "ttft_buckets", "ttft_count", "ttft_sum",
    )

    def __init__(self, s: LLMSeries) -> None:
        self.requests = s.requests
        self.errors = [(name, e.count, list(e.buckets), e.sum) for name, e in s.errors.items()]
        self.dur_buckets, self.dur_sum = list(s.dur_buckets), s.dur_sum
        self.ttft_buckets, self.ttft_sum = list(s.ttft_buckets), s.ttft_sum
        self.ttft_count = sum(self.ttft_buckets)
        self.input_tokens, self.output_tokens, self.cached_tokens, self.cost = (
            s.input_tokens, s.output_tokens, s.cached_tokens, s.cost
        )
        self.input_hist, self.input_hist_sum = list(s.input_hist), s.input_hist_sum
        self.output_hist, self.output_hist_sum = list(s.output_hist), s.output_hist_sum


_RECORDER = LLMRecorder()
forking.on_fork(after_in_child=_RECORDER.after_fork_in_child)


def get_recorder() -> LLMRecorder:
    """The process-wide LLM recorder."""
    return _RECORDER
