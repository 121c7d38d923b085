"""One model call: its GenAI client span, its metrics, its cost, and (opt-in) its content.

>>> import victor_otel
>>> with victor_otel.llm_call(provider="openai", model="gpt-4o") as call:
...     call.record_usage(input_tokens=12, output_tokens=3)

The span (``chat gpt-4o``, kind CLIENT) is a child of the span in force, normally the coordinator's; the
metrics carry the name of the coordinator whose call is running, traced or not (``coordinator=`` names it
for a call made outside any coordinator). A call is counted once when it ends: an exception makes it an error
(``error_type`` is the exception's class name), a ``BaseException`` that is not an ``Exception``
(cancellation, a stream abandoned) counts the request only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from time import perf_counter
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from victor_otel.decorators import _runtime, error_type_of
from victor_otel.decorators import current_coordinator as _current_coordinator
from victor_otel.llm import semconv
from victor_otel.llm.prices import PriceTable
from victor_otel.llm.recording import FOLD_EVERY, LLMRecorder, get_recorder
from victor_otel.redaction import get_redactor

_content_logger = logging.getLogger("victor_otel.llm")
#: The coordinator label of calls made outside any coordinator.
NO_COORDINATOR = "_none"
#: Captured prompts and completions are cut to this many characters (after redaction).
CONTENT_MAX_CHARS = 8192


class _Config:
    """What init() set for LLM calls (one home for this module's global state)."""

    __slots__ = ("capture_content", "latest")

    def __init__(self) -> None:
        self.capture_content = False
        self.latest = semconv.latest_experimental()


config = _Config()
#: The process-wide recorder (a module constant: read on every call).
_recorder: LLMRecorder = get_recorder()


def configure(prices: PriceTable | None = None, capture_content: bool | None = None) -> None:
    """Set the price table and content capture (``init()`` calls it); re-reads the semconv opt-in."""
    if prices is not None:
        _recorder.prices = prices
    if capture_content is not None:
        config.capture_content = capture_content
    config.latest = semconv.latest_experimental()


def current_coordinator() -> str | None:
    """The coordinator whose call is running (the innermost), traced or not, if any."""
    return _current_coordinator.get()


def _truncate(text: str) -> str:
    if len(text) <= CONTENT_MAX_CHARS:
        return text
    return text[: CONTENT_MAX_CHARS - 14] + "...[truncated]"


def content_text(value: Any) -> str:
    """``value`` (messages) redacted, as JSON, cut to :data:`CONTENT_MAX_CHARS`."""
    redacted = get_redactor().value(value)
    try:
        text = json.dumps(redacted, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = str(redacted)
    return _truncate(get_redactor().text(text))


class LLMCall:
    """Record one model call made by a client victor_otel does not instrument; ``with`` or ``async with``
    (``victor_otel.llm_call`` is this class).

    >>> import victor_otel
    >>> async def ask():
    ...     async with victor_otel.llm_call(provider="anthropic", model="claude-sonnet-4", stream=True) as call:
    ...         call.first_token()
    ...         call.record_usage(input_tokens=40, output_tokens=7, cached_input_tokens=32)
    >>> import asyncio; asyncio.run(ask())

    ``provider`` is a ``gen_ai.provider.name`` value (``openai``, ``anthropic``, ``aws.bedrock``, ...),
    ``operation`` a ``gen_ai.operation.name`` one (``chat``, ``text_completion``, ``embeddings``, ...). The
    span starts (and becomes current) here, so create the call right before the request.
    """

    # Slots, every one set here: reading a slot is cheaper than falling back to a class default, and this
    # object is built and read on every model call.
    __slots__ = (
        "_ended", "_start", "_token", "cached_input_tokens", "coordinator", "error_type", "finish_reasons",
        "input_tokens", "model", "operation", "output_tokens", "provider", "response_model", "span", "stream", "ttft",
    )

    def __init__(
        self,
        provider: str,
        model: str,
        operation: str = "chat",
        *,
        coordinator: str | None = None,
        stream: bool = False,
        server_address: str | None = None,
        server_port: int | None = None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.operation = operation
        self.coordinator = coordinator or _current_coordinator.get() or NO_COORDINATOR
        self.stream = stream
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_input_tokens: int | None = None
        self.response_model: str | None = None
        self.finish_reasons: tuple[str, ...] = ()
        self.ttft: float | None = None
        self.error_type: str | None = None
        self.span: Span | None = None
        self._token: object = None
        self._ended = False
        tracer = _runtime.tracer
        if tracer is not None:
            attributes: dict[str, Any] = {
                semconv.OPERATION_NAME: operation, semconv.PROVIDER_NAME: provider, semconv.REQUEST_MODEL: model,
            }
            if not config.latest:
                attributes[semconv.SYSTEM] = provider
            if stream:
                attributes[semconv.REQUEST_STREAM] = True
            if server_address:
                attributes[semconv.SERVER_ADDRESS] = server_address
                if server_port:
                    attributes[semconv.SERVER_PORT] = server_port
            self.span = tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes)
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        self._start = perf_counter()

    # -- what the call reports ------------------------------------------------------------------

    def record_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_input_tokens: int | None = None,
    ) -> None:
        """The call's token counts (input includes the cached input tokens); later values replace earlier."""
        # int() only for what is not an int already (a call less per count: this runs on every call)
        if input_tokens is not None:
            self.input_tokens = input_tokens if input_tokens.__class__ is int else int(input_tokens)
        if output_tokens is not None:
            self.output_tokens = output_tokens if output_tokens.__class__ is int else int(output_tokens)
        if cached_input_tokens is not None:
            self.cached_input_tokens = (
                cached_input_tokens if cached_input_tokens.__class__ is int else int(cached_input_tokens)
            )

    def first_token(self) -> None:
        """Mark the first chunk of a stream (only the first call counts): time to first token."""
        if self.ttft is None:
            self.ttft = perf_counter() - self._start

    def set_response(
        self, model: str | None = None, finish_reasons: Iterable[str | None] | None = None,
        response_id: str | None = None,
    ) -> None:
        """What the response said: the model that answered, why it stopped, its ID."""
        if model:
            self.response_model = model
        if finish_reasons is not None:
            self.finish_reasons = tuple(r for r in finish_reasons if r)
        if response_id and self.span is not None:
            self.span.set_attribute(semconv.RESPONSE_ID, response_id)

    @property
    def capture_content(self) -> bool:
        """Whether prompts and completions are recorded (off unless enabled)."""
        return config.capture_content

    def record_input(self, messages: Any) -> None:
        """The prompt (messages), recorded redacted and truncated when content capture is on."""
        if config.capture_content:
            self._content(semconv.INPUT_MESSAGES, messages)

    def record_output(self, messages: Any) -> None:
        """The completion, recorded redacted and truncated when content capture is on."""
        if config.capture_content:
            self._content(semconv.OUTPUT_MESSAGES, messages)

    def _content(self, key: str, messages: Any) -> None:
        text = content_text(messages)
        if self.span is not None:
            self.span.set_attribute(key, text)
        _content_logger.info(
            "%s", key, extra={key: text, semconv.PROVIDER_NAME: self.provider, semconv.REQUEST_MODEL: self.model,
                              "coordinator": self.coordinator},
        )

    # -- ending -------------------------------------------------------------------------------------

    def release_context(self) -> None:
        """Stop being the current span (a stream keeps its span open after its create() returned)."""
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def end(self, exc: BaseException | None = None) -> None:
        """Count the call once, finish its span. Later calls do nothing."""
        self.__exit__(None, exc, None)

    def _finish_span(self, span: Span, exc: BaseException | None, cost: float | None) -> None:
        attributes: dict[str, Any] = {"victor.coordinator": self.coordinator}
        if self.response_model:
            attributes[semconv.RESPONSE_MODEL] = self.response_model
        if self.finish_reasons:
            attributes[semconv.FINISH_REASONS] = self.finish_reasons
        if self.input_tokens is not None:
            attributes[semconv.INPUT_TOKENS] = self.input_tokens
        if self.output_tokens is not None:
            attributes[semconv.OUTPUT_TOKENS] = self.output_tokens
        if self.cached_input_tokens is not None:
            attributes[semconv.CACHE_READ_INPUT_TOKENS] = self.cached_input_tokens
        if self.ttft is not None:
            attributes[semconv.TIME_TO_FIRST_CHUNK] = self.ttft
        if cost is not None:
            attributes["victor.llm.cost_usd"] = cost
        if self.error_type is not None and exc is not None:
            attributes[semconv.ERROR_TYPE] = self.error_type
            span.record_exception(exc, attributes={"exception.message": get_redactor().text(str(exc))})
            span.set_status(Status(StatusCode.ERROR, self.error_type))
        elif exc is not None:
            attributes["victor.outcome"] = "cancelled"
        span.set_attributes(attributes)
        span.end()

    # -- context manager --------------------------------------------------------------------------

    def __enter__(self) -> LLMCall:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # end(exc): written here, where a `with` block lands without one more call (the manual hot path)
        if self._ended:
            return
        self._ended = True
        duration = perf_counter() - self._start
        if exc is not None and isinstance(exc, Exception):
            self.error_type = error_type_of(exc)
        cost = None
        recorder = _recorder
        span = self.span
        try:
            series = recorder.series.get((self.coordinator, self.provider, self.model, self.operation))
            if series is None:
                series = recorder.series_for(self.coordinator, self.provider, self.model, self.operation)
            pending = series.pending  # LLMSeries.record(), inlined: one append, folded into the counters later
            pending.append((duration, self.ttft, self.input_tokens, self.output_tokens, self.cached_input_tokens,
                            self.response_model, self.error_type))
            if len(pending) >= FOLD_EVERY:
                series.fold(recorder)
            if span is not None or recorder.budget_usd_per_hour is not None:  # the cost is needed now
                cost = series.cost_of(self, recorder.prices)
                if cost and recorder.budget_usd_per_hour is not None:
                    recorder.add_spend(self.coordinator, cost)
        finally:
            if span is not None:
                self.release_context()
                self._finish_span(span, exc, cost)

    async def __aenter__(self) -> LLMCall:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


#: Record one model call made by a client victor_otel does not instrument; ``with`` or ``async with``:
#: ``llm_call(provider, model, operation="chat", *, coordinator=None, stream=False, server_address=None,
#: server_port=None)``. The class itself, so that a call costs no extra function call; see :class:`LLMCall`.
llm_call = LLMCall
