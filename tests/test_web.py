"""``instrument_app``: one clear error for what is not a Starlette or FastAPI app, or without Starlette."""

from __future__ import annotations

import subprocess
import sys

import pytest
from starlette.applications import Starlette

import victor_otel


def test_an_app_of_another_framework_is_refused_with_a_message() -> None:
    class FlaskLike:
        def route(self) -> None:
            pass

    with pytest.raises(victor_otel.VictorOtelConfigError, match="is not a Starlette or FastAPI application"):
        victor_otel.instrument_app(FlaskLike())


def test_without_starlette_the_message_names_what_to_install() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"  # as if it were not installed
        "import victor_otel\n"
        "try:\n"
        "    victor_otel.instrument_app(object())\n"
        "except victor_otel.VictorOtelError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "needs Starlette or FastAPI" in out.stdout and "pip install 'victor-otel[demo]'" in out.stdout


def test_a_starlette_app_gets_the_routes() -> None:
    app = victor_otel.instrument_app(Starlette())
    assert {"/metrics", "/debug", "/health"} <= {route.path for route in app.routes}
