"""The decorators, the ``track(...)`` context manager and the cache / event recorders.

Every shape of callable is wrapped by a wrapper of the same shape (sync, async, generator, async
generator), so ``inspect.iscoroutinefunction`` and friends keep answering the same. A call:

1. starts a span ``Coordinator.method`` (when tracing is on) and makes it current;
2. runs the user's code;
3. records the outcome once in the pre-bound registry series (executions, duration, latency
   histogram, errors by ``error_type`` or cancellations) and the coordinator's sliding window;
4. ends the span and restores the caller's context.

Exceptions are re-raised unchanged. ``asyncio.CancelledError``, ``GeneratorExit``,
``KeyboardInterrupt`` and ``SystemExit`` (what is not an ``Exception``) are the outcome ``cancelled``,
not errors. Generators are timed over their whole iteration; the caller's context is restored at every
``yield``; an abandoned generator ends its span as ``cancelled`` when it is closed or collected.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, TraceFlags

from victor_otel.errors import VictorOtelConfigError
from victor_otel.redaction import redact
from victor_otel.registry import CoordinatorState, MethodSeries, Registry, get_registry

_logger = logging.getLogger("victor_otel")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

OUTCOME_SUCCESS = "success"
OUTCOME_ERROR = "error"
OUTCOME_CANCELLED = "cancelled"
_MAX_NAME = 128
_MARK = "__victor_otel_site__"
#: The W3C trace flag "sampled" (``TraceFlags.SAMPLED``): tested with ``&`` on the hot path, not the property.
_SAMPLED = int(TraceFlags.SAMPLED)
#: Coordinator kinds: the GenAI conventions' operation and name attribute their spans also carry.
_KINDS = {
    "agent": ("invoke_agent", "gen_ai.agent.name"),
    "tool": ("execute_tool", "gen_ai.tool.name"),
}


def _check_kind(kind: object) -> str | None:
    if kind is None or kind in _KINDS:
        return kind
    raise VictorOtelConfigError(f"kind: {kind!r} is not valid; accepted: None, " + " | ".join(map(repr, _KINDS)))


class _Runtime:
    """What the hot path reads on every call; set by ``init()`` / ``shutdown()``."""

    __slots__ = ("on_execution", "tracer")

    def __init__(self) -> None:
        #: ``None`` before ``init()``, after ``shutdown()`` and with ``OTEL_TRACES_EXPORTER=none``.
        self.tracer: trace.Tracer | None = None
        #: Called once per execution with (site, duration_s, exception or None) while the span is current.
        self.on_execution: Callable[[CallSite, float, BaseException | None], None] | None = None


_runtime = _Runtime()

#: The coordinator whose call is running (the innermost), traced or not: what a model call made inside it
#: is labelled with (victor_otel.llm). A context variable, so that tasks and threads started with the
#: context inherit it; set and reset around every call, generators' resumptions included.
current_coordinator: ContextVar[str | None] = ContextVar("victor_otel_coordinator", default=None)


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or not value.isprintable():
        raise VictorOtelConfigError(
            f"{what}: {value!r} is not valid; accepted: a non-empty printable string of at most "
            f"{_MAX_NAME} characters (a bounded name such as 'ChatCoordinator', never a request ID)"
        )
    return value


class CallSite:
    """One (coordinator, method) pair, bound to its registry series once and re-bound after a reset."""

    __slots__ = ("attributes", "coordinator", "generation", "method", "registry", "series", "span_name", "window")

    def __init__(
        self, coordinator: str, method: str, registry: Registry | None = None, kind: str | None = None
    ) -> None:
        self.coordinator = coordinator
        self.method = method
        self.span_name = f"{coordinator}.{method}"
        # The outcome starts as success and is overwritten by an error or a cancellation: passed with
        # the start attributes it costs far less than a set_attribute() on every successful call.
        self.attributes = {
            "victor.coordinator": coordinator, "victor.method": method, "victor.outcome": OUTCOME_SUCCESS,
        }
        if kind is not None:  # agent / tool: also a GenAI invoke_agent / execute_tool span, at no cost per call
            operation, name_key = _KINDS[kind]
            self.attributes.update({"gen_ai.operation.name": operation, name_key: coordinator})
        self.registry = registry or get_registry()
        self.generation = -1
        self.series: MethodSeries | None = None
        self.window: CoordinatorState | None = None

    def start_span(self) -> tuple[Span | None, object]:
        tracer = _runtime.tracer
        if tracer is None:
            return None, None
        span = tracer.start_span(self.span_name, attributes=self.attributes)
        return span, otel_context.attach(trace.set_span_in_context(span))

    def bind(self) -> MethodSeries:
        """(Re-)bind to the registry's series: at the first call, and after every registry reset."""
        registry = self.registry
        series, self.window = registry.method_series(self.coordinator, self.method)
        self.series, self.generation = series, registry.generation
        return series

    def succeeded(self, span: Span | None, token: object, duration: float) -> None:
        """:meth:`finish` for a call that returned: the path of nearly every call of every decorated function,
        kept to a few attribute reads and one registry update that also keeps the exemplar."""
        try:
            series = self.series
            if series is None or self.generation != self.registry.generation:
                series = self.bind()
            if span is None:
                series.record_success(duration, self.window)
            else:
                context = span.get_span_context()
                if context.trace_flags & _SAMPLED:  # the latency bucket links to this call's trace (exemplar)
                    series.record_success(duration, self.window, context.trace_id, context.span_id)
                else:
                    series.record_success(duration, self.window)
            hook = _runtime.on_execution
            if hook is not None:
                try:
                    hook(self, duration, None)
                except Exception:  # telemetry must never break the application's call
                    _logger.exception("victor_otel: the execution hook failed")
        finally:
            if span is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
                span.end()

    def finish(
        self,
        span: Span | None,
        token: object,
        duration: float,
        exc: BaseException | None,
    ) -> None:
        """Record the outcome once, emit the execution hook while the span is current, end the span."""
        if exc is None:
            self.succeeded(span, token, duration)
            return
        try:
            series = self.series
            if series is None or self.generation != self.registry.generation:
                series = self.bind()
            if isinstance(exc, Exception):
                series.record(duration, error_type_of(exc), False, self.window)
            else:
                series.record(duration, None, True, self.window)
            if span is not None:
                _annotate(span, exc)
                context = span.get_span_context()
                if context.trace_flags & _SAMPLED:
                    series.offer_exemplar(duration, context.trace_id, context.span_id)
            hook = _runtime.on_execution
            if hook is not None:
                try:
                    hook(self, duration, exc)
                except Exception:  # telemetry must never break the application's call
                    _logger.exception("victor_otel: the execution hook failed")
        finally:
            if span is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
                span.end()


def error_type_of(exc: BaseException) -> str:
    """The ``error_type`` of a failed call: the exception's class name, or the name an outcome reported
    by name carries (``victor_error_type``, as the seed's ``track_execution(error_type=...)`` does)."""
    named = getattr(exc, "victor_error_type", None)
    return named if isinstance(named, str) else type(exc).__name__


def _annotate(span: Span, exc: BaseException) -> None:
    """Mark the span of a call that raised (an error) or was cancelled; success is set in finish()."""
    if isinstance(exc, Exception):
        span.set_attribute("victor.outcome", OUTCOME_ERROR)
        span.set_attribute("error.type", type(exc).__qualname__)
        # Exception messages and tracebacks can hold secrets: they go out redacted, like log records.
        message = redact(_exception_text(exc))
        stack = redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        span.record_exception(
            exc, attributes={"exception.message": message, "exception.stacktrace": stack}, escaped=True
        )
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
    else:
        span.set_attribute("victor.outcome", OUTCOME_CANCELLED)


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unrepresentable {type(exc).__qualname__}>"


# -- wrappers, one per shape -----------------------------------------------------------------------


def _wrap(func: Callable[..., Any], coordinator: str, method: str, kind: str | None = None) -> Callable[..., Any]:
    if getattr(func, _MARK, None) is not None:
        return func  # already instrumented: never count a call twice
    site = CallSite(coordinator, method, kind=kind)
    target = func
    if not (inspect.isfunction(func) or inspect.ismethod(func) or isinstance(func, functools.partial)):
        target = type(func).__call__  # a callable object: its __call__ tells the shape
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(target):
        wrapper = _wrap_async_gen(func, site)
    elif inspect.iscoroutinefunction(target):
        wrapper = _wrap_async(func, site)
    elif inspect.isgeneratorfunction(target):
        wrapper = _wrap_gen(func, site)
    else:
        wrapper = _wrap_sync(func, site)
    with contextlib.suppress(AttributeError, TypeError):
        functools.update_wrapper(wrapper, func)
    if not hasattr(wrapper, "__name__"):
        wrapper.__name__ = method
    setattr(wrapper, _MARK, site)
    return wrapper


def _wrap_sync(func: Callable[..., Any], site: CallSite) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracer = _runtime.tracer  # site.start_span(), inlined: this is the hottest path
        if tracer is None:
            span = token = None
        else:
            span = tracer.start_span(site.span_name, attributes=site.attributes)
            token = otel_context.attach(trace.set_span_in_context(span))
        entered = current_coordinator.set(site.coordinator)
        start = perf_counter()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            site.finish(span, token, perf_counter() - start, exc)
            raise
        finally:
            current_coordinator.reset(entered)
        site.succeeded(span, token, perf_counter() - start)
        return result

    return wrapper


def _wrap_async(func: Callable[..., Any], site: CallSite) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracer = _runtime.tracer
        if tracer is None:
            span = token = None
        else:
            span = tracer.start_span(site.span_name, attributes=site.attributes)
            token = otel_context.attach(trace.set_span_in_context(span))
        entered = current_coordinator.set(site.coordinator)
        start = perf_counter()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            site.finish(span, token, perf_counter() - start, exc)
            raise
        finally:
            current_coordinator.reset(entered)
        site.succeeded(span, token, perf_counter() - start)
        return result

    return wrapper


def _wrap_gen(func: Callable[..., Any], site: CallSite) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        tracer = _runtime.tracer
        span = tracer.start_span(site.span_name, attributes=site.attributes) if tracer else None
        ctx = trace.set_span_in_context(span) if span is not None else None
        start = perf_counter()
        failure: BaseException | None = None
        try:
            token = otel_context.attach(ctx) if ctx is not None else None
            try:
                gen = func(*args, **kwargs)
            finally:
                if token is not None:
                    otel_context.detach(token)
            to_send: Any = None
            to_throw: BaseException | None = None
            while True:
                token = otel_context.attach(ctx) if ctx is not None else None
                entered = current_coordinator.set(site.coordinator)
                try:
                    if to_throw is not None:
                        thrown, to_throw = to_throw, None
                        item = gen.throw(thrown)
                    else:
                        item = gen.send(to_send)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                finally:
                    current_coordinator.reset(entered)
                    if token is not None:
                        otel_context.detach(token)
                try:
                    to_send = yield item
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as exc:  # thrown in by the caller: hand it to the generator
                    to_throw = exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _finish_stream(site, span, ctx, perf_counter() - start, failure)

    return wrapper


def _wrap_async_gen(func: Callable[..., Any], site: CallSite) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        tracer = _runtime.tracer
        span = tracer.start_span(site.span_name, attributes=site.attributes) if tracer else None
        ctx = trace.set_span_in_context(span) if span is not None else None
        start = perf_counter()
        failure: BaseException | None = None
        try:
            token = otel_context.attach(ctx) if ctx is not None else None
            try:
                agen = func(*args, **kwargs)
            finally:
                if token is not None:
                    otel_context.detach(token)
            to_send: Any = None
            to_throw: BaseException | None = None
            while True:
                token = otel_context.attach(ctx) if ctx is not None else None
                entered = current_coordinator.set(site.coordinator)
                try:
                    if to_throw is not None:
                        thrown, to_throw = to_throw, None
                        item = await agen.athrow(thrown)
                    else:
                        item = await agen.asend(to_send)
                except StopAsyncIteration:
                    return
                finally:
                    current_coordinator.reset(entered)
                    if token is not None:
                        otel_context.detach(token)
                try:
                    to_send = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:
                    to_throw = exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _finish_stream(site, span, ctx, perf_counter() - start, failure)

    return wrapper


def _finish_stream(
    site: CallSite, span: Span | None, ctx: Any, duration: float, failure: BaseException | None
) -> None:
    # The span is made current again only for the hook (execution logs carry its IDs).
    token = otel_context.attach(ctx) if ctx is not None else None
    site.finish(span, token, duration, failure)


# -- public decorators ---------------------------------------------------------------------------


def _instrument_class(cls: type[T], name: str, kind: str | None = None) -> type[T]:
    for attr, value in list(vars(cls).items()):
        if attr.startswith("_"):
            continue
        if isinstance(value, staticmethod):
            setattr(cls, attr, staticmethod(_wrap(value.__func__, name, attr, kind)))
        elif isinstance(value, classmethod):
            setattr(cls, attr, classmethod(_wrap(value.__func__, name, attr, kind)))
        elif inspect.isfunction(value):
            setattr(cls, attr, _wrap(value, name, attr, kind))
    return cls


def _default_names(func: Callable[..., Any]) -> tuple[str, str]:
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    parts = [p for p in qualname.split(".") if p != "<locals>"]
    method = parts[-1]
    return (parts[-2] if len(parts) > 1 else method), method


@overload
def coordinator(name: type[T]) -> type[T]: ...
@overload
def coordinator(name: F) -> F: ...
@overload
def coordinator(name: str | None = None, *, kind: str | None = None) -> Callable[[T], T]: ...


def coordinator(name: Any = None, *, kind: str | None = None) -> Any:
    """Instrument a coordinator class (every public method) or one function.

    >>> import victor_otel
    >>> @victor_otel.coordinator("ChatCoordinator")
    ... class ChatCoordinator:
    ...     def plan(self, goal):
    ...         return f"plan for {goal}"
    >>> ChatCoordinator().plan("x")
    'plan for x'

    ``@coordinator`` without arguments names the coordinator after the class. On a function, the
    coordinator defaults to the enclosing class name (or the function's own name) and the method to
    the function name.

    ``kind="agent"`` or ``kind="tool"``: the coordinator is an agent or a tool of the GenAI conventions, and
    its spans are also ``invoke_agent`` / ``execute_tool`` spans (``gen_ai.agent.name`` /
    ``gen_ai.tool.name`` = the coordinator's name).
    """
    _check_kind(kind)
    if name is not None and not isinstance(name, str):
        target = name
        if isinstance(target, type):
            return _instrument_class(target, _check_name("coordinator", target.__name__))
        if callable(target):
            coordinator_name, method = _default_names(target)
            return _wrap(target, _check_name("coordinator", coordinator_name), method)
        raise VictorOtelConfigError(f"coordinator: cannot instrument {target!r}; pass a class or a callable")
    explicit = None if name is None else _check_name("coordinator", name)

    def decorate(target: Any) -> Any:
        if isinstance(target, type):
            return _instrument_class(target, explicit or _check_name("coordinator", target.__name__), kind)
        if isinstance(target, (staticmethod, classmethod)):
            return type(target)(decorate(target.__func__))
        if not callable(target):
            raise VictorOtelConfigError(f"coordinator: cannot instrument {target!r}; pass a class or a callable")
        default_coordinator, method = _default_names(target)
        return _wrap(target, explicit or _check_name("coordinator", default_coordinator), method, kind)

    return decorate


def instrument(coordinator: str, method: str | None = None) -> Callable[[T], T]:
    """Instrument one function or method as ``coordinator.method`` (method defaults to its name).

    >>> import victor_otel
    >>> @victor_otel.instrument(coordinator="ToolCoordinator", method="run")
    ... def run_tool(name):
    ...     return name.upper()
    >>> run_tool("grep")
    'GREP'
    """
    if callable(coordinator) or isinstance(coordinator, (staticmethod, classmethod)):  # bare @instrument
        raise VictorOtelConfigError(
            "instrument: the coordinator name is missing; write @victor_otel.instrument(\"ChatCoordinator\") "
            "(the method defaults to the function's name), or @victor_otel.coordinator to name it after its class"
        )
    coordinator_name = _check_name("coordinator", coordinator)
    if method is not None:
        _check_name("method", method)

    def decorate(target: Any) -> Any:
        if isinstance(target, (staticmethod, classmethod)):
            return type(target)(decorate(target.__func__))
        if not callable(target):
            raise VictorOtelConfigError(f"instrument: cannot instrument {target!r}; pass a callable")
        return _wrap(target, coordinator_name, method or _default_names(target)[1])

    return decorate


class track:
    """Time a block as ``coordinator.operation``, sync or async, with the same span and metrics.

    >>> import victor_otel
    >>> with victor_otel.track("ChatCoordinator", "retrieve"):
    ...     pass
    """

    __slots__ = ("_entered", "_site", "_span", "_start", "_token")

    def __init__(self, coordinator: str, operation: str = "block") -> None:
        self._site = CallSite(_check_name("coordinator", coordinator), _check_name("operation", operation))
        self._span: Span | None = None
        self._token: object = None
        self._entered: Any = None
        self._start = 0.0

    def __enter__(self) -> Span | None:
        self._span, self._token = self._site.start_span()
        self._entered = current_coordinator.set(self._site.coordinator)
        self._start = perf_counter()
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration = perf_counter() - self._start
        current_coordinator.reset(self._entered)
        self._site.finish(self._span, self._token, duration, exc)

    async def __aenter__(self) -> Span | None:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def record_cache_hit(coordinator: str) -> None:
    """Count a cache hit for ``coordinator`` (counter and sliding-window hit rate)."""
    get_registry().coordinator(_check_name("coordinator", coordinator)).record_cache(True)


def record_cache_miss(coordinator: str) -> None:
    """Count a cache miss for ``coordinator``."""
    get_registry().coordinator(_check_name("coordinator", coordinator)).record_cache(False)


def record_event(name: str, count: int = 1) -> None:
    """Count ``count`` analytics events named ``name`` (``victor_analytics_events_total{event=name}``)."""
    _check_name("event", name)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise VictorOtelConfigError(f"count: {count!r} is not valid; accepted: an integer >= 0")
    get_registry().record_event(name, count)
