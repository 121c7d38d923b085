"""The ``capotel`` pytest plugin: spans, metrics and logs captured per test, in this project and in a user's.

The first half uses the fixture directly (the plugin is registered through the package's ``pytest11``
entry point, so these tests load it exactly as a user's do); the second half runs small user projects
with ``pytester`` in a separate pytest process to prove the entry point, the isolation between tests
and the failure messages.
"""

from __future__ import annotations

import contextlib
import io
import logging
import textwrap
from importlib.metadata import entry_points

import psutil
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import victor_otel
from victor_otel import VictorOtelConfigError
from victor_otel.testing import CapturedTelemetry

pytest_plugins = ["pytester"]


@victor_otel.coordinator("ChatCoordinator")
class ChatCoordinator:
    def chat(self, message: str) -> str:
        with trace.get_tracer("tests.app").start_as_current_span("llm.call", attributes={"llm.model": "m1"}):
            logging.getLogger("victor_otel.tests").warning("model called", extra={"request_id": "req-1"})
        if message == "fail":
            raise TimeoutError("model timed out")
        return message.upper()

    def plan(self, goal: str) -> list[str]:
        return [goal]


def test_the_plugin_is_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    points = [p for p in entry_points(group="pytest11") if p.value == "victor_otel.testing"]
    assert [p.name for p in points] == ["victor_otel"], "pip install -e . registers the pytest11 entry point"
    assert pytestconfig.pluginmanager.has_plugin("victor_otel")


# -- spans ---------------------------------------------------------------------------------------------


def test_spans_by_name_and_attribute(capotel: CapturedTelemetry) -> None:
    chat = ChatCoordinator()
    chat.chat("hello")
    with pytest.raises(TimeoutError):
        chat.chat("fail")
    chat.plan("answer")

    assert capotel.span_names() == ["llm.call", "ChatCoordinator.chat", "llm.call", "ChatCoordinator.chat",
                                    "ChatCoordinator.plan"]
    failed = capotel.span("ChatCoordinator.chat", {"victor.outcome": "error"})
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "TimeoutError"
    assert len(capotel.spans(attributes={"victor.coordinator": "ChatCoordinator"})) == 3
    # the application's own span (global OpenTelemetry API) is captured too, as a child of the coordinator's
    child = capotel.spans("llm.call", {"llm.model": "m1"})[1]
    assert child.parent is not None and child.parent.span_id == failed.context.span_id


def test_span_explains_what_it_found(capotel: CapturedTelemetry) -> None:
    ChatCoordinator().chat("a")
    ChatCoordinator().chat("b")
    with pytest.raises(AssertionError, match=r"no finished span named 'ChatCoordinator\.chats'.*"
                                             r"did you mean 'ChatCoordinator\.chat'"):
        capotel.span("ChatCoordinator.chats")
    with pytest.raises(AssertionError, match=r"2 finished spans named 'ChatCoordinator\.chat'; pass attributes="):
        capotel.span("ChatCoordinator.chat")


# -- metrics -------------------------------------------------------------------------------------------


def test_metric_values_by_name_and_labels(capotel: CapturedTelemetry) -> None:
    chat = ChatCoordinator()
    for message in ("a", "b", "fail"):
        with contextlib.suppress(TimeoutError):
            chat.chat(message)
    chat.plan("x")
    victor_otel.record_cache_hit("ChatCoordinator")
    victor_otel.record_event("tool_called", count=3)

    executions = "victor_coordinator_executions_total"
    assert capotel.metric(executions) == 4
    assert capotel.metric(executions, coordinator="ChatCoordinator", method="chat") == 3
    assert capotel.metric("victor_coordinator_errors_total") == 1
    assert capotel.metric("victor_coordinator_errors_by_type_total", error_type="TimeoutError") == 1
    assert capotel.metric("victor_coordinator_latency_seconds_count", method="plan") == 1
    assert capotel.metric("victor_coordinator_latency_seconds_bucket", method="chat", le="+Inf") == 3
    assert capotel.metric("victor_coordinator_cache_hits_total", coordinator="ChatCoordinator") == 1
    assert capotel.metric("victor_analytics_events_total", event="tool_called") == 3
    assert capotel.metric("victor_coordinator_cancelled_total") == 0  # known, nothing yet
    assert capotel.metric(executions, coordinator="Nobody") == 0
    [sample] = capotel.samples(executions, method="plan")
    assert sample.labels == {"coordinator": "ChatCoordinator", "method": "plan"}
    assert "# TYPE victor_coordinator_executions_total counter" in capotel.metrics_text()


def test_an_unknown_metric_name_fails_with_a_suggestion(capotel: CapturedTelemetry) -> None:
    with pytest.raises(AssertionError, match="did you mean 'victor_coordinator_executions_total'"):
        capotel.metric("victor_coordinator_executions")


def test_a_label_the_family_does_not_have_fails_and_names_the_family_that_has_it(capotel: CapturedTelemetry) -> None:
    with pytest.raises(TimeoutError):
        ChatCoordinator().chat("fail")
    # errors_total keeps the labels of executions_total; the exception class has a family of its own.
    with pytest.raises(AssertionError, match="error_type is a label of victor_coordinator_errors_by_type_total"):
        capotel.metric("victor_coordinator_errors_total", error_type="TimeoutError")
    assert capotel.metric("victor_coordinator_latency_seconds_bucket", le="+Inf") == 1  # le: histogram buckets


# -- logs ----------------------------------------------------------------------------------------------


def test_log_records_are_captured_with_their_fields(capotel: CapturedTelemetry) -> None:
    with pytest.raises(TimeoutError):
        ChatCoordinator().chat("fail")
    logging.getLogger("elsewhere").error("disk full", extra={"volume": "/data"})

    [entry] = capotel.logs(logger="victor_otel", request_id="req-1")
    assert (entry.level, entry.logger, entry.message) == ("WARNING", "victor_otel.tests", "model called")
    span = capotel.span("llm.call")
    assert entry["trace_id"] == format(span.context.trace_id, "032x")  # correlated with the span it ran in
    assert entry["span_id"] == format(span.context.span_id, "016x")
    assert [e.message for e in capotel.logs(level="ERROR")] == ["disk full"]
    assert capotel.logs(volume="/data")[0].logger == "elsewhere"
    assert capotel.logs(message="model") == [entry]
    assert capotel.logs(level="CRITICAL") == []


def test_set_log_level_lets_lower_records_through(capotel: CapturedTelemetry) -> None:
    logger = logging.getLogger("victor_otel.tests.quiet")
    logger.info("dropped: below the root logger's WARNING")
    capotel.set_log_level("INFO", logger="victor_otel.tests")
    logger.info("kept")
    assert [e.message for e in capotel.logs(logger="victor_otel.tests.quiet")] == ["kept"]


def test_coordinator_execution_logs_are_captured(capotel: CapturedTelemetry) -> None:
    logs = pytest.importorskip("victor_otel.logs")
    logs.setup_coordinator_logging(level="DEBUG", format_type="json", stream=io.StringIO())
    try:
        with pytest.raises(TimeoutError):
            ChatCoordinator().chat("fail")
    finally:
        logs.teardown_coordinator_logging()
    [failure] = capotel.logs(coordinator="ChatCoordinator", outcome="error")
    assert failure.level == "ERROR" and failure["error_type"] == "TimeoutError"
    assert failure["trace_id"] == format(capotel.span("ChatCoordinator.chat").context.trace_id, "032x")


# -- isolation -----------------------------------------------------------------------------------------


@pytest.fixture
def hostile_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings in the shell that would export over the network or open a port."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://192.0.2.1:4318")
    monkeypatch.setenv("VICTOR_OTEL_METRICS_PORT", "0")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")


def test_no_network_whatever_the_environment(hostile_environment: None, capotel: CapturedTelemetry) -> None:
    before = psutil.Process().net_connections(kind="inet")
    ChatCoordinator().plan("x")
    settings = capotel.telemetry.settings
    assert (settings.traces_exporter, settings.metrics_exporter, settings.logs_exporter) == (
        ("none",), ("prometheus",), ("none",)
    )
    assert settings.metrics_port is None and not settings.disabled
    assert capotel.telemetry.metrics_server is None
    assert capotel.metric("victor_coordinator_executions_total") == 1
    assert psutil.Process().net_connections(kind="inet") == before


def test_init_by_the_code_under_test_returns_the_capture(capotel: CapturedTelemetry) -> None:
    assert victor_otel.init(service_name="chat-api", traces_exporter="otlp") is capotel.telemetry
    assert victor_otel.current() is capotel.telemetry
    assert victor_otel.shutdown() is True and victor_otel.current() is capotel.telemetry
    assert capotel.init_calls == [{"service_name": "chat-api", "traces_exporter": "otlp"}]
    with pytest.raises(VictorOtelConfigError, match="window_seconds"):
        victor_otel.init(window_seconds=0)


@pytest.mark.capotel(service_name="chat-api", cardinality_limit=2)
def test_settings_from_the_marker(capotel: CapturedTelemetry) -> None:
    assert capotel.telemetry.settings.service_name == "chat-api"
    assert capotel.telemetry.settings.cardinality_limit == 2
    assert 'service_name="chat-api"' in capotel.metrics_text()


def test_clear_forgets_what_was_recorded(capotel: CapturedTelemetry) -> None:
    ChatCoordinator().chat("a")
    capotel.clear()
    assert capotel.span_names() == [] and capotel.logs() == []
    assert capotel.metric("victor_coordinator_executions_total") == 0
    ChatCoordinator().plan("b")
    assert capotel.span_names() == ["ChatCoordinator.plan"]


# -- in a user's project, through the entry point --------------------------------------------------------

USER_APP = '''
    import logging

    from opentelemetry import trace

    import victor_otel

    tracer = trace.get_tracer("user.app")  # taken once, at import, as applications do


    def create_app():
        victor_otel.init(service_name="user-app")  # start-up code runs unchanged under capotel


    @victor_otel.coordinator("ToolCoordinator")
    class ToolCoordinator:
        def run(self, tool):
            with tracer.start_as_current_span("tool.exec", attributes={"tool": tool}):
                logging.getLogger("victor_otel.user").warning("ran %s", tool)
            if tool == "rm":
                raise PermissionError(tool)
            return tool
'''

USER_TESTS = '''
    import pytest

    from app import ToolCoordinator, create_app


    @pytest.mark.parametrize("round", [1, 2, 3])
    def test_each_test_sees_only_its_own_telemetry(capotel, round):
        create_app()
        ToolCoordinator().run(f"grep-{round}")
        with pytest.raises(PermissionError):
            ToolCoordinator().run("rm")

        assert capotel.span_names() == ["tool.exec", "ToolCoordinator.run", "tool.exec", "ToolCoordinator.run"]
        assert capotel.span("tool.exec", {"tool": f"grep-{round}"}).parent is not None
        assert capotel.metric("victor_coordinator_executions_total", coordinator="ToolCoordinator") == 2
        assert capotel.metric("victor_coordinator_errors_by_type_total", error_type="PermissionError") == 1
        assert [e.message for e in capotel.logs(logger="victor_otel.user")] == [f"ran grep-{round}", "ran rm"]
        assert capotel.init_calls == [{"service_name": "user-app"}]


    def test_after_capotel_nothing_is_left(capsys):
        import logging
        import signal

        import victor_otel
        from victor_otel import bootstrap
        from victor_otel.registry import get_registry

        assert victor_otel.current() is None
        assert bootstrap.init.__module__ == "victor_otel.bootstrap"  # the real init() again
        assert get_registry().all_coordinators() == []
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # init() installed a flush handler; undone
        assert not [h for h in logging.getLogger().handlers if type(h).__name__ == "_LogCapture"]
        ToolCoordinator().run("ls")  # spans of the global tracer go nowhere now, and nothing breaks
'''


def test_a_user_project_gets_the_fixture_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app=textwrap.dedent(USER_APP), test_app=textwrap.dedent(USER_TESTS))
    # -W error: the plugin itself must raise no pytest warning. pytest-asyncio (installed by our test
    # extras, not by the user's project) warns about its own unset option in a project without one.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:asyncio", "-W", "error::pytest.PytestWarning"
    )
    result.assert_outcomes(passed=4)


def test_mistakes_in_a_user_project_are_explained(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        app=textwrap.dedent(USER_APP),
        test_fail=textwrap.dedent('''
            import pytest

            from app import ToolCoordinator

            def test_wrong_span_name(capotel):
                ToolCoordinator().run("ls")
                capotel.span("ToolCoordinator.runs")

            @pytest.mark.capotel(traces_exporter="otlp")
            def test_exporting(capotel):
                pass
        '''),
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=1)
    output = result.stdout.str()
    assert (
        "AssertionError: no finished span named 'ToolCoordinator.runs'; captured 2: "
        "['ToolCoordinator.run', 'tool.exec'] (did you mean 'ToolCoordinator.run'?)"
    ) in output
    assert "victor_otel/testing.py" not in output.split("test_wrong_span_name")[1].split("test_exporting")[0]
    assert "traces_exporter cannot be set: capotel keeps spans, metrics and logs in memory" in output


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_uses_it(capotel):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:victor_otel")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'capotel' not found*"])
