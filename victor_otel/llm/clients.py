"""The openai and anthropic clients, instrumented: every model call becomes an :class:`LLMCall`.

Our own thin wrapper, not the official ``opentelemetry-instrumentation-openai-v2``: the official one records
through the SDK's synchronous instruments (the per-call cost victor_otel avoids), knows nothing of the
coordinator in force, of prices or of our redaction, and there is no official anthropic instrumentation.
The wrapper replaces ``create`` on the client resource classes (``chat.completions`` of openai,
``messages`` of anthropic; sync and async); a streamed call (``stream=True``) is ended when its stream is
exhausted, fails or is closed, with its first chunk as time to first token. Usage on openai streams needs
``stream_options={"include_usage": True}`` (the API sends none otherwise). The clients' own retries happen
inside one ``create``: a call is counted once, with its final outcome.
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

# (provider, module, class names, operation)
_TARGETS = (
    ("openai", "openai.resources.chat.completions", ("Completions", "AsyncCompletions"), "chat"),
    ("anthropic", "anthropic.resources.messages", ("Messages", "AsyncMessages"), "chat"),
)


def _server(resource: Any) -> tuple[str | None, int | None]:
    try:
        url = resource._client.base_url  # both SDKs keep an httpx.URL here
        return url.host or None, url.port
    except Exception:
        return None, None


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


# -- what a response says, per provider --------------------------------------------------------------


def _openai_response(call: LLMCall, response: Any) -> None:
    usage = _get(response, "usage")
    if usage is not None:
        details = _get(usage, "prompt_tokens_details")
        call.record_usage(
            _get(usage, "prompt_tokens"), _get(usage, "completion_tokens"),
            _get(details, "cached_tokens") if details is not None else None,
        )
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
    usage = _get(chunk, "usage")
    if usage is not None:
        details = _get(usage, "prompt_tokens_details")
        call.record_usage(
            _get(usage, "prompt_tokens"), _get(usage, "completion_tokens"),
            _get(details, "cached_tokens") if details is not None else None,
        )


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


_RESPONSE = {"openai": _openai_response, "anthropic": _anthropic_response}
_CHUNK = {"openai": _openai_chunk, "anthropic": _anthropic_chunk}


# -- streams -----------------------------------------------------------------------------------------


class _StreamBase:
    """A client stream, proxied: each chunk updates the call; the call ends with the stream."""

    def __init__(self, stream: Any, call: LLMCall, provider: str) -> None:
        self._stream = stream
        self._call = call
        self._on_chunk = _CHUNK[provider]
        self._text: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _chunk(self, chunk: Any) -> None:
        try:
            self._on_chunk(self._call, chunk, self._text)
        except Exception:  # telemetry must never break the application's stream
            _logger.exception("victor_otel: reading a stream chunk failed")

    def _end(self, exc: BaseException | None) -> None:
        if self._text:
            self._call.record_output(["".join(self._text)])
        self._call.end(exc)


class _Stream(_StreamBase):
    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._end(None)
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        self._chunk(chunk)
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
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._end(None)
            raise
        except BaseException as exc:
            self._end(exc)
            raise
        self._chunk(chunk)
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


def _start(provider: str, operation: str, resource: Any, kwargs: dict[str, Any]) -> LLMCall:
    host, port = _server(resource)
    call = LLMCall(
        provider, str(kwargs.get("model") or "unknown"), operation, stream=bool(kwargs.get("stream")),
        server_address=host, server_port=port,
    )
    if call.capture_content:
        messages = list(kwargs.get("messages") or ())
        system = kwargs.get("system")
        call.record_input([{"role": "system", "content": system}, *messages] if system else messages)
    return call


def _settled(call: Any, result: Any, provider: str, stream_type: type) -> Any:
    """What a wrapped ``create`` returns once the client answered: a stream wrapper that ends the call at
    its last chunk, or the response itself, read and the call ended."""
    if call.stream:
        call.release_context()
        return stream_type(result, call, provider)
    try:
        _RESPONSE[provider](call, result)
    except Exception:
        _logger.exception("victor_otel: reading a model response failed")
    call.end(None)
    return result


def _wrap_sync(original: Callable[..., Any], provider: str, operation: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _start(provider, operation, self, kwargs)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        return _settled(call, result, provider, _Stream)

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_async(original: Callable[..., Any], provider: str, operation: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _start(provider, operation, self, kwargs)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        return _settled(call, result, provider, _AsyncStream)

    setattr(create, _ORIGINAL, original)
    return create


def instrument_clients() -> list[str]:
    """Instrument the installed openai and anthropic clients (idempotent); returns the providers done."""
    done = []
    for provider, module_name, class_names, operation in _TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for class_name in class_names:
            cls = getattr(module, class_name)
            original = cls.__dict__["create"]
            if getattr(original, _ORIGINAL, None) is not None:
                continue
            wrap = _wrap_async if class_name.startswith("Async") else _wrap_sync
            cls.create = wrap(original, provider, operation)
        done.append(provider)
    return done


def uninstrument_clients() -> None:
    """Put the clients' own ``create`` back."""
    for _provider, module_name, class_names, _operation in _TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for class_name in class_names:
            cls = getattr(module, class_name)
            original = getattr(cls.__dict__["create"], _ORIGINAL, None)
            if original is not None:
                cls.create = original
