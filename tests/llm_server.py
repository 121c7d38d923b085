"""A local server on 127.0.0.1 speaking the OpenAI chat-completions and Anthropic messages HTTP APIs.

The model name picks the behaviour: ``fail-429`` and ``fail-500`` answer that status, ``broken`` starts a
stream and drops the connection in the middle of it (chunked encoding left unterminated), anything else
answers normally. Usage is fixed per provider (:data:`OPENAI_USAGE`, :data:`ANTHROPIC_USAGE`), and every
request is counted in ``hits`` so that tests can tell the clients' retries from ours.
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
TEXT = ["Hel", "lo ", "world"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        self.server.hits.append((self.path, body.get("model")))
        model = body.get("model", "")
        anthropic = self.path.endswith("/messages")
        if model in ("fail-429", "fail-500"):
            status = int(model[-3:])
            if anthropic:
                kind = "rate_limit_error" if status == 429 else "api_error"
                error: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": "nope"}}
            else:
                error = {"error": {"message": "nope", "type": "server_error", "code": None}}
            self._json(status, error)
            return
        if body.get("stream"):
            events = _anthropic_events(model) if anthropic else _openai_events(model, body)
            self._stream(events, broken=model == "broken")
        else:
            self._json(200, _anthropic_message(model) if anthropic else _openai_completion(model))

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


def _openai_completion(model: str) -> dict[str, Any]:
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


def _anthropic_message(model: str) -> dict[str, Any]:
    plain, output, read = ANTHROPIC_USAGE
    return {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "".join(TEXT)}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": plain, "output_tokens": output, "cache_read_input_tokens": read,
                  "cache_creation_input_tokens": 0},
    }


def _anthropic_events(model: str) -> list[str]:
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: list[tuple[str, Any]]


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
