"""The openai and anthropic clients, instrumented: every model call becomes an :class:`LLMCall`.

Our own thin wrapper, not the official ``opentelemetry-instrumentation-openai-v2``: the official one records
through the SDK's synchronous instruments (the per-call cost victor_otel avoids), knows nothing of the
coordinator in force, of prices or of our redaction, and there is no official anthropic instrumentation.

What is wrapped (sync and async classes alike): openai ``chat.completions.create``, ``embeddings.create``
(operation ``embeddings``) and ``responses.create``; anthropic ``messages.create`` and ``messages.stream()``
(the context-manager helper). A streamed call (``stream=True``, or ``messages.stream()``) is ended when its
stream is exhausted, fails or is closed, with its first chunk as time to first token. An openai chat stream
sends usage only when asked (``stream_options={"include_usage": True}``): when the caller passed no
``stream_options`` at all (or openai's "not given" sentinel), the wrapper asks for it and hides the extra
usage-only chunk that it adds, so that the caller's loop sees the chunks it would have seen and the call
still has its tokens; any ``stream_options`` the caller passes is left as it is. openai's
``chat.completions.stream()`` and ``responses.stream()`` helpers call ``create(stream=True)``: they are
counted through it. The clients' own retries happen inside one call: a
call is counted once, with its final outcome.

``messages.stream()`` reads the raw event stream through the private attribute ``_raw_stream`` of
anthropic's ``MessageStream`` (checked on anthropic 2.14): every helper of that class
(``text_stream``, ``get_final_message()``, ``until_done()``) consumes it, so it is where every event passes.
Without it (another release), the call is still counted and timed, without tokens.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

from victor_otel.llm.calls import LLMCall

_logger = logging.getLogger("victor_otel")
_ORIGINAL = "__victor_otel_original__"

# (provider, module, class names, method, api): the api names how requests and responses are read
_TARGETS = (
    ("openai", "openai.resources.chat.completions", ("Completions", "AsyncCompletions"), "create", "chat"),
    ("openai", "openai.resources.embeddings", ("Embeddings", "AsyncEmbeddings"), "create", "embeddings"),
    ("openai", "openai.resources.responses", ("Responses", "AsyncResponses"), "create", "responses"),
    ("anthropic", "anthropic.resources.messages", ("Messages", "AsyncMessages"), "create", "messages"),
    ("anthropic", "anthropic.resources.messages", ("Messages", "AsyncMessages"), "stream", "messages"),
)
#: The gen_ai.operation.name of each api.
_OPERATION = {"chat": "chat", "embeddings": "embeddings", "responses": "chat", "messages": "chat"}


def _server(resource: Any) -> tuple[str | None, int | None]:
    try:
        url = resource._client.base_url  # both SDKs keep an httpx.URL here
        return url.host or None, url.port
    except Exception:
        return None, None


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# -- what a response says, per provider --------------------------------------------------------------


def _openai_usage(call: LLMCall, usage: Any) -> None:
    """Chat completions and embeddings count prompt / completion tokens, the Responses API input / output."""
    if usage is None:
        return
    if _get(usage, "input_tokens") is not None or _get(usage, "output_tokens") is not None:  # Responses API
        details = _get(usage, "input_tokens_details")
        call.record_usage(_get(usage, "input_tokens"), _get(usage, "output_tokens"),
                          _get(details, "cached_tokens") if details is not None else None)
        return
    details = _get(usage, "prompt_tokens_details")
    call.record_usage(
        _get(usage, "prompt_tokens"), _get(usage, "completion_tokens"),
        _get(details, "cached_tokens") if details is not None else None,
    )


def _openai_response(call: LLMCall, response: Any) -> None:
    _openai_usage(call, _get(response, "usage"))
    choices = _get(response, "choices") or ()
    call.set_response(_get(response, "model"), [_get(c, "finish_reason") for c in choices], _get(response, "id"))
    if call.capture_content:
        call.record_output([_get(_get(c, "message"), "content") for c in choices])


def _openai_chunk(call: LLMCall, chunk: Any, text: list[str]) -> None:
    choices = _get(chunk, "choices") or ()
    if choices:
        call.first_token()
        reasons = [_get(c, "finish_reason") for c in choices]
        if any(reasons):
            call.set_response(finish_reasons=reasons)
        if call.capture_content:
            text.extend(filter(None, (_get(_get(c, "delta"), "content") for c in choices)))
    call.set_response(_get(chunk, "model"), response_id=_get(chunk, "id"))
    _openai_usage(call, _get(chunk, "usage"))


def _openai_embeddings(call: LLMCall, response: Any) -> None:
    _openai_usage(call, _get(response, "usage"))
    call.set_response(_get(response, "model"))


def _responses_finish(response: Any) -> list[str | None]:
    """The Responses API has a status, not a finish reason: completed is stop, incomplete says why."""
    status = _get(response, "status")
    if status == "completed":
        return ["stop"]
    if status == "incomplete":
        return [_get(_get(response, "incomplete_details"), "reason") or "incomplete"]
    return [status]


def _openai_responses_response(call: LLMCall, response: Any) -> None:
    _openai_usage(call, _get(response, "usage"))
    call.set_response(_get(response, "model"), _responses_finish(response), _get(response, "id"))
    if call.capture_content:
        call.record_output([_get(response, "output_text")])


def _openai_responses_event(call: LLMCall, event: Any, text: list[str]) -> None:
    kind = _get(event, "type")
    if kind == "response.output_text.delta":
        call.first_token()
        if call.capture_content:
            text.append(_get(event, "delta") or "")
    elif kind in ("response.created", "response.completed", "response.incomplete", "response.failed"):
        response = _get(event, "response")
        call.set_response(_get(response, "model"), response_id=_get(response, "id"))
        if kind != "response.created":
            _openai_usage(call, _get(response, "usage"))
            call.set_response(finish_reasons=_responses_finish(response))


def _anthropic_usage(call: LLMCall, usage: Any) -> None:
    """Anthropic counts cache reads and writes apart from input_tokens: input here is their sum."""
    if usage is None:
        return
    read = _get(usage, "cache_read_input_tokens") or 0
    written = _get(usage, "cache_creation_input_tokens") or 0
    plain = _get(usage, "input_tokens")
    call.record_usage(
        None if plain is None else plain + read + written, _get(usage, "output_tokens"),
        read if (plain is not None or read) else None,
    )


def _anthropic_response(call: LLMCall, response: Any) -> None:
    _anthropic_usage(call, _get(response, "usage"))
    call.set_response(_get(response, "model"), [_get(response, "stop_reason")], _get(response, "id"))
    if call.capture_content:
        call.record_output([_get(block, "text") for block in _get(response, "content") or ()])


def _anthropic_chunk(call: LLMCall, event: Any, text: list[str]) -> None:
    kind = _get(event, "type")
    if kind == "message_start":
        message = _get(event, "message")
        call.set_response(_get(message, "model"), response_id=_get(message, "id"))
        _anthropic_usage(call, _get(message, "usage"))
    elif kind == "content_block_delta":
        call.first_token()
        if call.capture_content:
            piece = _get(_get(event, "delta"), "text")
            if piece:
                text.append(piece)
    elif kind == "message_delta":
        usage = _get(event, "usage")
        if usage is not None:
            call.record_usage(output_tokens=_get(usage, "output_tokens"))
        call.set_response(finish_reasons=[_get(_get(event, "delta"), "stop_reason")])


# per api: what a whole response says, what one stream chunk says
_RESPONSE = {"chat": _openai_response, "embeddings": _openai_embeddings, "responses": _openai_responses_response,
             "messages": _anthropic_response}
_CHUNK = {"chat": _openai_chunk, "responses": _openai_responses_event, "messages": _anthropic_chunk}


# -- streams -----------------------------------------------------------------------------------------


class _StreamBase:
    """A client stream, proxied: each chunk updates the call; the call ends with the stream.

    What a chunk, the end and a close do is here; the sync and async subclasses only mirror the two
    iteration protocols. ``hide_usage``: the usage-only chunk was asked for by the wrapper, not the caller
    (an openai chat stream): it is read, not passed on.
    """

    def __init__(self, stream: Any, call: LLMCall, api: str, hide_usage: bool = False) -> None:
        self._stream = stream
        self._call = call
        self._on_chunk = _CHUNK[api]
        self._text: list[str] = []
        self._hide_usage = hide_usage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _passes(self, chunk: Any) -> bool:
        """Read ``chunk`` into the call; whether the caller gets it."""
        try:
            self._on_chunk(self._call, chunk, self._text)
            if self._hide_usage and not _get(chunk, "choices") and _get(chunk, "usage") is not None:
                return False
        except Exception:  # telemetry must never break the application's stream
            _logger.exception("victor_otel: reading a stream chunk failed")
        return True

    def _stopped(self, exc: BaseException) -> None:
        """The stream raised ``exc``: its end (StopIteration / StopAsyncIteration) or its failure."""
        self._end(None if isinstance(exc, (StopIteration, StopAsyncIteration)) else exc)

    def _end(self, exc: BaseException | None) -> None:
        if self._text:
            self._call.record_output(["".join(self._text)])
        self._call.end(exc)


class _Stream(_StreamBase):
    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                chunk = next(self._stream)
            except BaseException as exc:
                self._stopped(exc)
                raise
            if self._passes(chunk):
                return chunk

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._end(GeneratorExit())  # closed before its end: counted, not an error

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _AsyncStream(_StreamBase):
    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                chunk = await self._stream.__anext__()
            except BaseException as exc:
                self._stopped(exc)
                raise
            if self._passes(chunk):
                return chunk

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._end(GeneratorExit())

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


# -- the wrappers ------------------------------------------------------------------------------------


def _start(provider: str, api: str, resource: Any, kwargs: dict[str, Any], stream: bool) -> LLMCall:
    host, port = _server(resource)
    call = LLMCall(
        provider, str(kwargs.get("model") or "unknown"), _OPERATION[api], stream=stream,
        server_address=host, server_port=port,
    )
    if call.capture_content:
        if api == "embeddings":
            call.record_input(kwargs.get("input"))
        elif api == "responses":
            instructions = kwargs.get("instructions")
            prompt = kwargs.get("input")
            call.record_input([{"role": "system", "content": instructions}, prompt] if instructions else prompt)
        else:
            messages = list(kwargs.get("messages") or ())
            system = kwargs.get("system")
            call.record_input([{"role": "system", "content": system}, *messages] if system else messages)
    return call


def _ask_for_usage(api: str, kwargs: dict[str, Any]) -> bool:
    """An openai chat stream without ``stream_options``: ask for usage (True: hide the chunk it adds).

    Not given is also openai's own "not given" sentinel (``omit`` / ``NOT_GIVEN``, both falsy), which its
    ``chat.completions.stream()`` helper passes on to ``create``."""
    if api == "chat" and kwargs.get("stream") and _not_given(kwargs.get("stream_options", _ABSENT)):
        kwargs["stream_options"] = {"include_usage": True}
        return True
    return False


_ABSENT = object()


def _not_given(value: object) -> bool:
    return value is _ABSENT or type(value).__name__ in ("Omit", "NotGiven")


def _settled(call: LLMCall, result: Any, api: str, stream_type: type[_StreamBase], hide_usage: bool) -> Any:
    """What a wrapped ``create`` returns once the client answered: a stream wrapper that ends the call at
    its last chunk, or the response itself, read and the call ended."""
    if call.stream:
        call.release_context()
        return stream_type(result, call, api, hide_usage)
    try:
        _RESPONSE[api](call, result)
    except Exception:
        _logger.exception("victor_otel: reading a model response failed")
    call.end(None)
    return result


def _wrap_sync(original: Callable[..., Any], provider: str, api: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        hide_usage = _ask_for_usage(api, kwargs)
        call = _start(provider, api, self, kwargs, bool(kwargs.get("stream")))
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        return _settled(call, result, api, _Stream, hide_usage)

    return create


def _wrap_async(original: Callable[..., Any], provider: str, api: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        hide_usage = _ask_for_usage(api, kwargs)
        call = _start(provider, api, self, kwargs, bool(kwargs.get("stream")))
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        return _settled(call, result, api, _AsyncStream, hide_usage)

    return create


# -- anthropic messages.stream(): a context manager around a MessageStream -------------------------------


class _ManagerBase:
    """``messages.stream()``'s manager, proxied: the call starts when the request is made (entering it);
    the events are read from the MessageStream's raw stream, which ends the call."""

    def __init__(self, manager: Any, start: Callable[[], LLMCall]) -> None:
        self._manager = manager
        self._start = start
        self._call: LLMCall | None = None
        self._watched = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def _entered(self, call: LLMCall, message_stream: Any, stream_type: type[_StreamBase]) -> Any:
        call.release_context()  # the span stays open until the stream ends, not current in the caller's block
        raw = getattr(message_stream, "_raw_stream", None)
        if raw is not None:
            message_stream._raw_stream = stream_type(raw, call, "messages")
            self._watched = True
        return message_stream

    def _exited(self, exc: BaseException | None) -> None:
        # the manager closed the stream (which ended a watched call); an unwatched one ends here
        if self._call is not None and not self._watched:
            self._call.end(exc)


class _Manager(_ManagerBase):
    def __enter__(self) -> Any:
        call = self._call = self._start()
        try:
            message_stream = self._manager.__enter__()
        except BaseException as exc:
            call.end(exc)
            raise
        return self._entered(call, message_stream, _Stream)

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self._manager.__exit__(*exc_info)
        finally:
            self._exited(exc_info[1])


class _AsyncManager(_ManagerBase):
    async def __aenter__(self) -> Any:
        call = self._call = self._start()
        try:
            message_stream = await self._manager.__aenter__()
        except BaseException as exc:
            call.end(exc)
            raise
        return self._entered(call, message_stream, _AsyncStream)

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._manager.__aexit__(*exc_info)
        finally:
            self._exited(exc_info[1])


def _wrap_stream_manager(
    original: Callable[..., Any], provider: str, api: str, manager_type: type[_ManagerBase]
) -> Callable[..., Any]:
    @functools.wraps(original)
    def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)  # no request yet: it is made when the manager is entered
        return manager_type(manager, functools.partial(_start, provider, api, self, kwargs, True))

    return stream


def _wrapper(original: Callable[..., Any], provider: str, method: str, api: str, is_async: bool) -> Any:
    if method == "stream":
        return _wrap_stream_manager(original, provider, api, _AsyncManager if is_async else _Manager)
    return (_wrap_async if is_async else _wrap_sync)(original, provider, api)


def _classes(module_name: str, class_names: tuple[str, ...]) -> list[type]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    return [cls for name in class_names if isinstance(cls := getattr(module, name, None), type)]


def instrument_clients() -> list[str]:
    """Instrument the installed openai and anthropic clients (idempotent); returns the providers done."""
    done: list[str] = []
    for provider, module_name, class_names, method, api in _TARGETS:
        classes = _classes(module_name, class_names)
        for cls in classes:
            original = cls.__dict__.get(method)
            if original is None or getattr(original, _ORIGINAL, None) is not None:
                continue
            wrapped = _wrapper(original, provider, method, api, cls.__name__.startswith("Async"))
            setattr(wrapped, _ORIGINAL, original)
            setattr(cls, method, wrapped)
        if classes and provider not in done:
            done.append(provider)
    return done


def uninstrument_clients() -> None:
    """Put the clients' own methods back."""
    for _provider, module_name, class_names, method, _api in _TARGETS:
        for cls in _classes(module_name, class_names):
            original = getattr(cls.__dict__.get(method), _ORIGINAL, None)
            if original is not None:
                setattr(cls, method, original)
