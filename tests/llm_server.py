"""A local server on 127.0.0.1 speaking the HTTP APIs of OpenAI (chat completions, embeddings, Responses)
and Anthropic (messages).

The model name picks the behaviour: ``fail-429`` and ``fail-500`` answer that status, ``broken`` starts a
stream and drops the connection in the middle of it (chunked encoding left unterminated), anything else
answers normally. Usage is fixed per API (:data:`OPENAI_USAGE`, :data:`ANTHROPIC_USAGE`,
:data:`EMBEDDING_TOKENS`, :data:`RESPONSES_USAGE`); an OpenAI chat stream carries usage only when the
request asks for it (``stream_options.include_usage``), as the real API does. Every request is counted in
``hits`` (path, model, body) so that tests can tell the clients' retries from ours and see what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: prompt, completion, cached prompt tokens of every OpenAI answer
OPENAI_USAGE = (1200, 80, 1024)
#: input (uncached), output, cache read tokens of every Anthropic answer
ANTHROPIC_USAGE = (300, 40, 2000)
#: input tokens of every OpenAI embeddings answer
EMBEDDING_TOKENS = 42
#: input, output, cached input tokens of every OpenAI Responses answer
RESPONSES_USAGE = (900, 60, 512)
TEXT = ["Hel", "lo ", "world"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        self.server.hits.append((self.path, body.get("model"), body))
        model = body.get("model", "")
        api = self.path.rsplit("/", 1)[-1]  # messages, embeddings, responses, completions
        if model in ("fail-429", "fail-500"):
            status = int(model[-3:])
            if api == "messages":
                kind = "rate_limit_error" if status == 429 else "api_error"
                error: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": "nope"}}
            else:
                error = {"error": {"message": "nope", "type": "server_error", "code": None}}
            self._json(status, error)
            return
        if body.get("stream"):
            streams = {"messages": _anthropic_events, "responses": _responses_events}
            self._stream(streams.get(api, _openai_events)(model, body), broken=model == "broken")
        else:
            answers = {"messages": _anthropic_message, "embeddings": _embeddings, "responses": _response}
            self._json(200, answers.get(api, _openai_completion)(model, body))

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[str], broken: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if broken:
            events = events[:2]
        for event in events:
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        if broken:  # no terminating chunk: the client sees the connection end mid-body
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


def _openai_completion(model: str, body: dict[str, Any]) -> dict[str, Any]:
    prompt, completion, cached = OPENAI_USAGE
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": f"{model}-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TEXT)},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }


def _openai_events(model: str, body: dict[str, Any]) -> list[str]:
    prompt, completion, cached = OPENAI_USAGE
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": f"{model}-2024-08-06"}
    events = []
    for i, piece in enumerate(TEXT):
        last = i == len(TEXT) - 1
        choice = {"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if last else None}
        events.append({**base, "choices": [choice]})
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}})
    return [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]


def _anthropic_message(model: str, body: dict[str, Any]) -> dict[str, Any]:
    plain, output, read = ANTHROPIC_USAGE
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "".join(TEXT)}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": plain, "output_tokens": output, "cache_read_input_tokens": read,
                  "cache_creation_input_tokens": 0},
    }


def _anthropic_events(model: str, body: dict[str, Any]) -> list[str]:
    plain, output, read = ANTHROPIC_USAGE
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": "msg_2", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": plain, "output_tokens": 1, "cache_read_input_tokens": read,
                      "cache_creation_input_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
          for piece in TEXT),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": output}},
        {"type": "message_stop"},
    ]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events]


def _embeddings(model: str, body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    return {
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.25, -0.5, 1.0]} for i in range(count)],
        "usage": {"prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS},
    }


def _response(model: str, body: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    prompt, output, cached = RESPONSES_USAGE
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "model": f"{model}-2024-08-06", "status": status,
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "".join(TEXT), "annotations": []}]}],
        "usage": {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
                  "input_tokens_details": {"cached_tokens": cached}, "output_tokens_details": {"reasoning_tokens": 0}},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "incomplete_details": None, "error": None,
    }


def _responses_events(model: str, body: dict[str, Any]) -> list[str]:
    """The Responses API's event sequence for one text message (what openai's ``responses.stream()`` checks)."""
    created = {**_response(model, body, status="in_progress"), "output": [], "usage": None}
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    done_part = {**part, "text": "".join(TEXT)}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": created},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "part": part},
        *({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in TEXT),
        {"type": "response.output_text.done", **where, "text": "".join(TEXT), "logprobs": []},
        {"type": "response.content_part.done", **where, "part": done_part},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {**item, "status": "completed", "content": [done_part]}},
        {"type": "response.completed", "response": _response(model, body)},
    ]
    return [f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n" for i, e in enumerate(events)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: list[tuple[str, Any, dict[str, Any]]]


@contextmanager
def llm_server() -> Iterator[_Server]:
    """Serve on a free port of 127.0.0.1; ``server.url`` is its base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def base_url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"
