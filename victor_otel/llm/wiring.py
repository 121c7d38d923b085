"""What ``victor_otel.init()`` does for LLM calls, in one place."""

from __future__ import annotations

from typing import Any

from victor_otel import multiprocess
from victor_otel.bootstrap import Telemetry
from victor_otel.checks.runner import add_health_check, remove_health_check
from victor_otel.llm import calls
from victor_otel.llm.prices import PriceTable
from victor_otel.llm.recording import get_recorder
from victor_otel.readers import VictorPeriodicReader

#: The health check's key (component:measurement) for the coordinators' LLM spend rate.
SPEND_CHECK = "llm:spend_rate"
_WIRED = "_victor_otel_llm_wired"


def setup(telemetry: Telemetry) -> None:
    """Read the LLM settings: prices, content capture, budget; merge the metrics; instrument the clients."""
    settings = telemetry.settings
    # A bad table raises VictorOtelConfigError here, naming the variable the value came from.
    prices = PriceTable.parse(settings.llm_prices, setting=settings.named("llm_prices"))
    calls.configure(prices, settings.llm_capture_content)
    recorder = get_recorder()
    recorder.budget_usd_per_hour = settings.llm_budget_usd_per_hour
    # gen_ai.client.token.usage (per-call token counts, bucketed) only while something pushes metrics
    recorder.genai_tokens = any(isinstance(reader, VictorPeriodicReader) for reader in telemetry.readers)
    if not getattr(telemetry, _WIRED, False):  # init() with the same settings returns the same Telemetry
        setattr(telemetry, _WIRED, True)
        telemetry.add_producer(recorder.produce)
        telemetry.add_producer(recorder.produce_genai, push_only=True)
        multiprocess.sum_over_workers(telemetry, recorder.produce)  # multi-process /metrics: every worker's calls
    if settings.llm_budget_usd_per_hour is not None:
        add_health_check(SPEND_CHECK, spend_check(settings.llm_budget_usd_per_hour), component_type="component")
    else:
        remove_health_check(SPEND_CHECK)
    if settings.instrument_llm:
        from victor_otel.llm.clients import instrument_clients

        instrument_clients()


def spend_check(budget: float) -> Any:
    """A health check that warns when a coordinator spends faster than ``budget`` US dollars per hour."""

    def check() -> dict[str, Any]:
        rates = get_recorder().spend_per_hour()
        over = sorted(name for name, rate in rates.items() if rate > budget)
        highest = max(rates.values(), default=0.0)
        return {
            "status": "warn" if over else "pass",
            "observedValue": round(highest, 6),
            "observedUnit": "USD/h",
            "output": (
                f"spending faster than the budget of {budget} USD/h: {', '.join(over)}" if over else ""
            ),
        }

    return check
