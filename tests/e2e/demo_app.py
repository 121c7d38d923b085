"""The demo app for the load test (``uvicorn --factory tests.e2e.demo_app:app_factory``): no synthetic
load and no injected failures, so that every count the test reads back is exactly what it sent."""

from __future__ import annotations

from typing import Any

import victor_otel
from victor_otel.demo import create_app


def app_factory() -> Any:
    victor_otel.init(service_name="victor-demo")  # the rest from OTEL_* / VICTOR_OTEL_* variables
    return create_app(error_rate=0.0, load_rate=0.0, seed=7)
