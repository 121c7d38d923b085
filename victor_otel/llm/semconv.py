"""The GenAI semantic conventions' attribute names and which of their versions is in force.

Names come from ``opentelemetry-semantic-conventions`` (incubating ``gen_ai`` attributes), so they follow the
installed release. ``OTEL_SEMCONV_STABILITY_OPT_IN`` is honoured as the official GenAI instrumentations do:
with ``gen_ai_latest_experimental`` in it, spans carry only the latest attributes (``gen_ai.provider.name``,
content as ``gen_ai.input.messages`` / ``gen_ai.output.messages``); without it, the attributes of the
conventions' previous release are written as well (``gen_ai.system``), for back ends that still read them.
"""

from __future__ import annotations

import os
from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _genai
from opentelemetry.semconv._incubating.attributes import server_attributes as _server
from opentelemetry.semconv.attributes import error_attributes as _error

OPERATION_NAME: Final = _genai.GEN_AI_OPERATION_NAME
PROVIDER_NAME: Final = _genai.GEN_AI_PROVIDER_NAME
SYSTEM: Final = _genai.GEN_AI_SYSTEM  # the previous conventions' name for the provider
REQUEST_MODEL: Final = _genai.GEN_AI_REQUEST_MODEL
REQUEST_STREAM: Final = _genai.GEN_AI_REQUEST_STREAM
RESPONSE_MODEL: Final = _genai.GEN_AI_RESPONSE_MODEL
RESPONSE_ID: Final = _genai.GEN_AI_RESPONSE_ID
FINISH_REASONS: Final = _genai.GEN_AI_RESPONSE_FINISH_REASONS
TIME_TO_FIRST_CHUNK: Final = _genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
INPUT_TOKENS: Final = _genai.GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS: Final = _genai.GEN_AI_USAGE_OUTPUT_TOKENS
CACHE_READ_INPUT_TOKENS: Final = _genai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
INPUT_MESSAGES: Final = _genai.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES: Final = _genai.GEN_AI_OUTPUT_MESSAGES
TOKEN_TYPE: Final = _genai.GEN_AI_TOKEN_TYPE
AGENT_NAME: Final = _genai.GEN_AI_AGENT_NAME
TOOL_NAME: Final = _genai.GEN_AI_TOOL_NAME
SERVER_ADDRESS: Final = _server.SERVER_ADDRESS
SERVER_PORT: Final = _server.SERVER_PORT
ERROR_TYPE: Final = _error.ERROR_TYPE

INVOKE_AGENT: Final = _genai.GenAiOperationNameValues.INVOKE_AGENT.value
EXECUTE_TOOL: Final = _genai.GenAiOperationNameValues.EXECUTE_TOOL.value

#: The environment variable and the value that opt into the latest (experimental) GenAI conventions.
STABILITY_OPT_IN: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"
LATEST_EXPERIMENTAL: Final = "gen_ai_latest_experimental"


def latest_experimental(environ: dict[str, str] | None = None) -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental`` (comma-separated).

    >>> latest_experimental({"OTEL_SEMCONV_STABILITY_OPT_IN": "http, gen_ai_latest_experimental"})
    True
    >>> latest_experimental({})
    False
    """
    raw = (os.environ if environ is None else environ).get(STABILITY_OPT_IN, "")
    return LATEST_EXPERIMENTAL in (part.strip().lower() for part in raw.split(","))
