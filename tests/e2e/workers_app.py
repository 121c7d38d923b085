"""The app the multi-worker tests serve: one coordinator call per request; settings from the environment.

``uvicorn tests.e2e.workers_app:app --workers 4`` imports it in every worker;
``gunicorn --preload`` imports it once in the master, before the workers are forked.
"""

from __future__ import annotations

import os
import sys

from fastapi import FastAPI

import victor_otel

victor_otel.init(service_name="workers-test")  # everything else: VICTOR_OTEL_* / OTEL_* variables
if os.environ.get("WORKERS_APP_LOG_LEVEL"):  # one log record per execution, through the OTel log bridge too
    victor_otel.setup_coordinator_logging(level=os.environ["WORKERS_APP_LOG_LEVEL"], stream=sys.stderr)


@victor_otel.coordinator("WorkerCoordinator")
class WorkerCoordinator:
    async def handle(self) -> int:
        return os.getpid()


coordinator = WorkerCoordinator()
app = FastAPI()


@app.get("/work")
async def work() -> dict[str, int]:
    return {"pid": await coordinator.handle()}


victor_otel.instrument_app(app)
