"""LLM telemetry: every model call, its tokens, cost and first-token time, per coordinator.

Modules, imports pointing down: :mod:`.semconv` (the GenAI conventions' names and the opt-in),
:mod:`.prices` (the price table), :mod:`.recording` (pre-aggregated metrics and their SDK points),
:mod:`.calls` (:func:`llm_call`: the span, the metrics, the content), :mod:`.clients` (the openai and
anthropic clients, instrumented). :func:`victor_otel.init` wires them (``instrument_llm``, ``llm_prices``,
``llm_capture_content``, ``llm_budget_usd_per_hour``).
"""

from __future__ import annotations

from victor_otel.llm.calls import NO_COORDINATOR, LLMCall, configure, llm_call
from victor_otel.llm.prices import Price, PriceTable
from victor_otel.llm.recording import LLMRecorder, get_recorder

__all__ = ["NO_COORDINATOR", "LLMCall", "LLMRecorder", "Price", "PriceTable", "configure", "get_recorder", "llm_call"]
