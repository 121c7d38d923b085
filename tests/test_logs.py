"""logs.py: the JSON and text formats, redaction, set-up, execution records and the OTel log bridge."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import victor_otel
from victor_otel import decorators, logs
from victor_otel.errors import VictorOtelConfigError

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
SECRETS = {
    "openai": "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "password": "hunter2-Secret!",
    "github": "ghp_0123456789abcdefghijABCDEFGHIJ012345",
    "url": "s3cr3tpass",
}


def strict_loads(line: str) -> dict[str, Any]:
    """json.loads that refuses NaN / Infinity (what jq and most log pipelines refuse)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    value = json.loads(line, parse_constant=refuse)
    assert isinstance(value, dict)
    return value


@pytest.fixture(autouse=True)
def _no_logging_setup() -> Iterator[None]:
    logs.teardown_coordinator_logging()
    yield
    logs.teardown_coordinator_logging()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [strict_loads(line) for line in stream.getvalue().splitlines()]


def test_the_issue_example_writes_one_json_object_per_line(tmp_path: Any) -> None:
    path = tmp_path / "victor" / "coordinators.log"
    victor_otel.setup_coordinator_logging(level="INFO", format_type="json", output_file=str(path))
    logger = victor_otel.get_coordinator_logger("ChatCoordinator")
    logger.info("Processing request", extra={"user_id": "user@example.com"})
    logger.debug("not at INFO")
    records = [strict_loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert list(record)[: len(logs.CORE_FIELDS)] == list(logs.CORE_FIELDS)
    assert TIMESTAMP.match(record["timestamp"])
    assert record["level"] == "INFO"
    assert record["logger"] == "victor.coordinators.ChatCoordinator"
    assert record["coordinator"] == "ChatCoordinator"
    assert record["message"] == "Processing request"
    assert record["user_id"] == "user@example.com"
    assert record["request_id"] is None and record["trace_id"] is None and record["span_id"] is None
    assert "duration_ms" not in record and "exception" not in record


def test_timestamp_is_utc_with_milliseconds(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    logger = victor_otel.get_coordinator_logger("Chat")
    record = logger.makeRecord(logger.name, logging.INFO, "f", 1, "m", (), None)
    record.created, record.msecs = 1_700_000_000.987654, 987.654
    logger.handle(record)
    assert lines(out)[0]["timestamp"] == "2023-11-14T22:13:20.987Z"


def test_correlation_service_environment_and_extras_at_top_level(
    out: io.StringIO, spans: InMemorySpanExporter
) -> None:
    victor_otel.init(
        service_name="chat-api", environment="staging", traces_exporter="none", span_exporters=[spans]
    )
    victor_otel.setup_coordinator_logging(stream=out)
    telemetry = victor_otel.current()
    assert telemetry is not None and telemetry.tracer is not None
    with victor_otel.request_context("req-7"), telemetry.tracer.start_as_current_span("work") as span:
        victor_otel.get_coordinator_logger("ChatCoordinator").info(
            "step %d of %d", 1, 3, extra={"nested": {"a": [1, 2]}, "count": 3, "ok": True, "none": None}
        )
    record = lines(out)[0]
    context = span.get_span_context()
    assert record["service"] == "chat-api" and record["environment"] == "staging"
    assert record["request_id"] == "req-7"
    assert record["trace_id"] == format(context.trace_id, "032x")
    assert record["span_id"] == format(context.span_id, "016x")
    assert record["message"] == "step 1 of 3"
    assert record["nested"] == {"a": [1, 2]} and record["count"] == 3 and record["ok"] is True
    assert "none" in record and record["none"] is None


def test_user_fields_never_overwrite_core_fields(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    hostile = {
        "level": "ERROR",
        "timestamp": "1999",
        "logger": "x",
        "service": "evil",
        "environment": "prod",
        "trace_id": "f" * 32,
        "span_id": "e" * 16,
        "exception": {"type": "Fake"},
        "duration_ms": "9999",
    }
    with victor_otel.request_context("req-1"):
        victor_otel.get_coordinator_logger("Chat").info("m", extra={**hostile, "request_id": "other"})
    record = lines(out)[0]
    assert record["level"] == "INFO" and record["logger"] == "victor.coordinators.Chat"
    assert record["service"] != "evil" and record["trace_id"] is None and record["span_id"] is None
    assert record["request_id"] == "req-1"
    assert "exception" not in record and "duration_ms" not in record
    for key, value in hostile.items():
        assert record[f"extra_{key}"] == value
    assert record["extra_request_id"] == "other"


def test_seed_style_request_id_and_duration_fill_empty_core_fields(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    logger = logging.getLogger("someone.else")
    logger.addHandler(logging.StreamHandler(out))
    logger.handlers[-1].setFormatter(victor_otel.JsonFormatter())
    try:
        logger.warning("seed", extra={"request_id": "abc-123", "duration_ms": 2500, "coordinator": "Chat"})
        logger.warning("bad", extra={"request_id": "a b\n", "duration_ms": float("inf"), "coordinator": 7})
    finally:
        logger.removeHandler(logger.handlers[-1])
    seed, bad = lines(out)
    assert (seed["request_id"], seed["duration_ms"], seed["coordinator"]) == ("abc-123", 2500, "Chat")
    assert bad["request_id"] is None and "duration_ms" not in bad and bad["coordinator"] is None
    assert bad["extra_request_id"] == "a b\n" and bad["extra_duration_ms"] == "Infinity"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_values_json_cannot_hold_are_rendered_safely(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    loop: list[Any] = []
    loop.append(loop)
    mapping: dict[Any, Any] = {}
    mapping["self"] = mapping
    extra = {
        "nan": float("nan"),
        "inf": float("-inf"),
        "obj": object(),
        "bad": Unprintable(),
        "raw": b"\xff\xfebytes sk-abcdefghijklmnopqrstuvwx",
        "when": datetime.datetime(2025, 1, 31, 12, 0, tzinfo=datetime.timezone.utc),
        "tags": {"b"},
        "keys": {1: "one", (2, 3): "tuple", None: "none"},
        "loop": loop,
        "mapping": mapping,
        "lone_surrogate": "\ud800",
    }
    victor_otel.get_coordinator_logger("Chat").info("values", extra=extra)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.isascii()
    record = strict_loads(text)
    assert record["nan"] == "NaN" and record["inf"] == "-Infinity"
    assert record["obj"].startswith("<object object") and record["bad"] == "<unrepresentable Unprintable>"
    assert "sk-abc" not in record["raw"] and record["when"] == "2025-01-31T12:00:00+00:00"
    assert record["tags"] == ["b"] and set(record["keys"]) == {"1", "(2, 3)", "None"}
    assert "nested too deep" in json.dumps(record["loop"]) and "nested too deep" in json.dumps(record["mapping"])


@pytest.mark.parametrize(
    "hostile",
    [
        'x"}\n{"level": "ERROR", "duration_ms": 99999}',
        "line1\r\nline2\x00\x1b[31mred",
        "\u2028\u2029\u202e unicode \U0001f600",
        "{" * 500 + "}" * 500,
        "A" * 10_240,
    ],
)
def test_hostile_strings_stay_inside_one_json_string(out: io.StringIO, hostile: str) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    victor_otel.get_coordinator_logger("Chat").info(hostile, extra={"header": hostile, hostile[:20]: 1})
    text = out.getvalue()
    assert text.count("\n") == 1 and text.isascii()
    record = strict_loads(text)
    assert record["message"] == hostile and record["header"] == hostile
    assert record["level"] == "INFO" and "duration_ms" not in record


# -- redaction ------------------------------------------------------------------------------------


def test_secrets_in_messages_and_extras_come_out_redacted(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    message = (
        f"calling with key {SECRETS['openai']} and Authorization: Bearer {SECRETS['bearer']} "
        f"aws {SECRETS['aws']} password={SECRETS['password']} gh {SECRETS['github']} "
        f"db postgres://victor:{SECRETS['url']}@db:5432/x"
    )
    extra = {
        "api_key": "plain-value-but-secret-name",
        "headers": {"Authorization": f"Bearer {SECRETS['bearer']}", "accept": "json"},
        "config": {"db_password": "pw", "nested": [{"client_secret": "cs"}, f"token: {SECRETS['password']}"]},
        "note": f"key={SECRETS['openai']}",
        "max_tokens": 512,
        "prompt_tokens": 12,
        "tool": "risk-assessment-procedure-v2",
    }
    victor_otel.get_coordinator_logger("Chat").error(message, extra=extra)
    text = out.getvalue()
    for secret in [*SECRETS.values(), "plain-value-but-secret-name", '"pw"', '"cs"']:
        assert secret not in text
    record = lines(out)[0]
    assert record["message"].startswith("calling with key [REDACTED] and Authorization: [REDACTED] aws [REDACTED]")
    assert "password=[REDACTED]" in record["message"] and "postgres://victor:[REDACTED]@db" in record["message"]
    assert record["api_key"] == "[REDACTED]"
    assert record["headers"] == {"Authorization": "[REDACTED]", "accept": "json"}
    assert record["config"]["nested"][0] == {"client_secret": "[REDACTED]"}
    assert record["max_tokens"] == 512 and record["prompt_tokens"] == 12
    assert record["tool"] == "risk-assessment-procedure-v2"


def test_exception_message_and_stack_trace_are_redacted(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(stream=out)
    try:
        raise PermissionError(f"rejected key {SECRETS['openai']}")
    except PermissionError:
        victor_otel.get_coordinator_logger("Chat").exception("call failed")
    record = lines(out)[0]
    exception = record["exception"]
    assert exception["type"] == "PermissionError"
    assert exception["message"] == "rejected key [REDACTED]"
    assert "Traceback (most recent call last)" in exception["stack_trace"]
    assert SECRETS["openai"] not in out.getvalue()


def test_user_patterns_callback_and_hashed_emails(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(
        stream=out,
        redact_patterns=[r"ticket-\d+", re.compile(r"internal\.example")],
        redact_callback=lambda s: s.replace("Alice", "[NAME]"),
        hash_emails=True,
        hash_salt="pepper",
    )
    logger = victor_otel.get_coordinator_logger("Chat")
    logger.info("Alice opened ticket-42 on internal.example", extra={"user_id": "User@Example.com"})
    logger.info("again", extra={"user_id": "user@example.com"})
    first, second = lines(out)
    assert first["message"] == "[NAME] opened [REDACTED] on [REDACTED]"
    assert re.fullmatch(r"\[email:[0-9a-f]{16}\]", first["user_id"])
    assert first["user_id"] == second["user_id"]  # stable: records of one user still correlate
    unsalted = logs.Redactor(hash_emails=True).text("user@example.com")
    assert unsalted != first["user_id"]


def test_compiled_patterns_keep_their_flags() -> None:
    redactor = logs.Redactor(patterns=[re.compile(r"project (apollo|gemini)", re.IGNORECASE), r"case-\d+"])
    assert redactor.text("PROJECT Apollo and case-7") == "[REDACTED] and [REDACTED]"
    separate = logs.Redactor(patterns=[r"(?P<x>alpha)", r"(?P<x>beta)", r"(?i)gamma"])
    assert separate.text("alpha beta GAMMA delta") == "[REDACTED] [REDACTED] [REDACTED] delta"


def test_a_failing_callback_fails_closed() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("bug")

    assert logs.Redactor(callback=broken).text("anything") == logs.REDACTED


def test_bad_redaction_settings_name_the_setting() -> None:
    with pytest.raises(VictorOtelConfigError, match="redact_patterns"):
        victor_otel.setup_coordinator_logging(redact_patterns=["(unclosed"])
    with pytest.raises(VictorOtelConfigError, match="redact_callback"):
        victor_otel.setup_coordinator_logging(redact_callback="nope")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    secret=st.sampled_from(
        [
            SECRETS["openai"],
            SECRETS["aws"],
            SECRETS["github"],
            SECRETS["bearer"],
            "password=" + SECRETS["password"],
            "Bearer " + SECRETS["password"] + "xyz",
        ]
    ),
)
def test_default_secrets_never_survive_whatever_surrounds_them(before: str, after: str, secret: str) -> None:
    text = f"{before} {secret} {after}"
    redacted = logs.Redactor().text(text)
    core = secret.split("=")[-1].split(" ")[-1]
    assert core not in redacted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pwd=x", "pwd=[REDACTED]"),
        ("token: abc", "token: [REDACTED]"),
        ("a://u:p@h", "a://u:[REDACTED]@h"),
        ("Bearer abcdefgh", "Bearer [REDACTED]"),
        ("xoxb-0123456789", "[REDACTED]"),
    ],
)
def test_short_secrets_are_caught_too(text: str, expected: str) -> None:
    assert logs.Redactor().text(text) == expected


def test_plain_text_is_left_alone() -> None:
    redactor = logs.Redactor()
    for text in [
        "Processing request r-42 in chat",
        "ChatCoordinator.chat succeeded in 12.3 ms",
        "max_tokens: 512, tokens=7",
        "time 12:30:01 key count 3",
        "user@example.com",
        "",
    ]:
        assert redactor.text(text) == text


# -- text format ----------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_format_is_one_readable_line_without_colour_off_a_terminal(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(format_type="text", stream=out)
    with victor_otel.request_context("req-9"):
        victor_otel.get_coordinator_logger("ChatCoordinator").warning(
            "two\nlines", extra={"user": "a b", "api_key": SECRETS["openai"], "n": 3}
        )
    text = out.getvalue()
    assert text.count("\n") == 1 and "\x1b[" not in text
    assert re.match(
        r"^\d{4}-\d\d-\d\dT[\d:.]+Z WARNING +\[ChatCoordinator\] two\\nlines request_id=req-9 "
        r'user="a b" api_key=\[REDACTED\] n=3$',
        text.rstrip("\n"),
    ), text


def test_text_format_colours_a_terminal_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")  # TERM=dumb (some CI runners) means no colour
    terminal = FakeTerminal()
    victor_otel.setup_coordinator_logging(format_type="text", stream=terminal)
    victor_otel.get_coordinator_logger("Chat").error("red")
    assert "\x1b[31m" in terminal.getvalue()

    monkeypatch.setenv("NO_COLOR", "1")
    terminal = FakeTerminal()
    victor_otel.setup_coordinator_logging(format_type="text", stream=terminal)
    victor_otel.get_coordinator_logger("Chat").error("plain")
    assert "\x1b[" not in terminal.getvalue()
    assert logs.color_enabled(FakeTerminal()) is False
    monkeypatch.setenv("NO_COLOR", "")
    assert logs.color_enabled(FakeTerminal()) is True
    assert logs.color_enabled(io.StringIO()) is False


def test_text_format_prints_the_traceback_below(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(format_type="text", stream=out)
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        victor_otel.get_coordinator_logger("Chat").exception("failed")
    first, *rest = out.getvalue().rstrip("\n").split("\n")
    assert "ERROR" in first and "failed" in first
    assert rest[0] == "    Traceback (most recent call last):"
    assert rest[-2:] == ["    ValueError: bad", "    value"]


# -- set-up ---------------------------------------------------------------------------------------


def our_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if (logger, h) in logs.setup._setup.handlers]


def test_setup_twice_never_duplicates_handlers_and_leaves_root_alone(out: io.StringIO) -> None:
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    parent = logging.getLogger(logs.COORDINATOR_LOGGER)
    for _ in range(3):
        victor_otel.setup_coordinator_logging(stream=out)
    assert len(parent.handlers) == 2  # the stream handler and the OTel bridge
    victor_otel.get_coordinator_logger("Chat").info("once")
    assert len(lines(out)) == 1
    assert root.handlers == root_handlers and root.level == root_level
    logs.teardown_coordinator_logging()
    assert parent.handlers == [] and parent.propagate is True


def test_root_is_configured_only_when_asked(out: io.StringIO) -> None:
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    victor_otel.setup_coordinator_logging(stream=out, root=True, level="WARNING")
    try:
        logging.getLogger("some.library").warning("library warning")
        logging.getLogger("some.library").info("filtered")
        victor_otel.get_coordinator_logger("Chat").warning("coordinator warning")
        records = lines(out)
        assert [r["message"] for r in records] == ["library warning", "coordinator warning"]
        assert records[0]["coordinator"] is None and records[1]["coordinator"] == "Chat"
    finally:
        logs.teardown_coordinator_logging()
    assert root.handlers == before and root.level == level


def test_levels_per_coordinator(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(level="WARNING", levels={"ChatCoordinator": "debug"}, stream=out)
    victor_otel.get_coordinator_logger("ChatCoordinator").debug("chat debug")
    victor_otel.get_coordinator_logger("ToolCoordinator").info("tool info")
    victor_otel.get_coordinator_logger("ToolCoordinator").warning("tool warning")
    assert [r["message"] for r in lines(out)] == ["chat debug", "tool warning"]
    logs.teardown_coordinator_logging()
    assert victor_otel.get_coordinator_logger("ChatCoordinator").level == logging.NOTSET


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"format_type": "xml"}, "format_type"),
        ({"level": "LOUD"}, "level"),
        ({"levels": {"Chat": "nope"}}, "levels"),
        ({"success_level": None}, "success_level"),
        ({"slow_threshold_ms": -1}, "slow_threshold_ms"),
        ({"output_file": "/proc/victor/nope.log"}, "output_file"),
    ],
)
def test_bad_settings_are_rejected_with_the_setting_named(kwargs: dict[str, Any], setting: str) -> None:
    with pytest.raises(VictorOtelConfigError, match=setting):
        victor_otel.setup_coordinator_logging(**kwargs)
    assert logs.setup._setup.handlers == []


def test_output_file_survives_logrotate(tmp_path: Any) -> None:
    path = tmp_path / "coordinators.log"
    victor_otel.setup_coordinator_logging(output_file=path)
    logger = victor_otel.get_coordinator_logger("Chat")
    logger.info("before rotation")
    os.rename(path, tmp_path / "coordinators.log.1")  # what logrotate does (without copytruncate)
    logger.info("after rotation")
    logs.teardown_coordinator_logging()
    assert [strict_loads(x)["message"] for x in path.read_text().splitlines()] == ["after rotation"]
    rotated = (tmp_path / "coordinators.log.1").read_text().splitlines()
    assert [strict_loads(x)["message"] for x in rotated] == ["before rotation"]


# -- executions -----------------------------------------------------------------------------------


def test_executions_are_logged_once_with_duration_and_outcome(
    out: io.StringIO, spans: InMemorySpanExporter
) -> None:
    victor_otel.init(service_name="t", traces_exporter="none", span_exporters=[spans])
    victor_otel.setup_coordinator_logging(level="DEBUG", stream=out)

    @victor_otel.coordinator("ChatCoordinator")
    class Chat:
        def ok(self) -> int:
            return 1

        async def fails(self) -> None:
            raise KeyError(f"missing {SECRETS['openai']}")

    with victor_otel.request_context("req-x"):
        Chat().ok()
        with pytest.raises(KeyError):
            asyncio.run(Chat().fails())
    success, failure = lines(out)
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert success["level"] == "DEBUG" and success["outcome"] == "success" and success["method"] == "ok"
    assert isinstance(success["duration_ms"], float) and success["duration_ms"] >= 0
    assert success["message"].startswith("ChatCoordinator.ok succeeded in ")
    assert success["span_id"] == format(finished["ChatCoordinator.ok"].context.span_id, "016x")
    assert failure["level"] == "ERROR" and failure["outcome"] == "error" and failure["error_type"] == "KeyError"
    assert failure["exception"]["type"] == "KeyError" and "[REDACTED]" in failure["exception"]["message"]
    assert "Traceback" in failure["exception"]["stack_trace"]
    assert failure["trace_id"] == format(finished["ChatCoordinator.fails"].context.trace_id, "032x")
    assert failure["request_id"] == "req-x" == success["request_id"]
    assert SECRETS["openai"] not in out.getvalue()


def test_success_is_debug_by_default_slow_is_warning_failure_is_error(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(level="INFO", stream=out, slow_threshold_ms=2000)
    collector = victor_otel.get_coordinator_metrics_collector()
    collector.track_execution("Chat", duration_ms=5.0)
    collector.track_execution("Chat", duration_ms=2500.0)
    collector.track_execution("Chat", duration_ms=7.0, success=False)
    records = lines(out)
    assert [(r["level"], r["duration_ms"], r["outcome"]) for r in records] == [
        ("WARNING", 2500.0, "success"),
        ("ERROR", 7.0, "error"),
    ]


def test_success_level_is_configurable_and_cancellation_is_not_an_error(out: io.StringIO) -> None:
    victor_otel.setup_coordinator_logging(level="INFO", stream=out, success_level="INFO")

    @victor_otel.instrument(coordinator="StreamCoordinator", method="stream")
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    assert list(stream()) == [1, 2]
    generator = stream()
    next(generator)
    generator.close()
    records = lines(out)
    assert [(r["level"], r["outcome"]) for r in records] == [("INFO", "success"), ("INFO", "cancelled")]


def test_no_execution_record_and_no_hook_cost_without_setup() -> None:
    assert decorators._runtime.on_execution is None
    victor_otel.setup_coordinator_logging(stream=io.StringIO())
    assert decorators._runtime.on_execution is logs.executions.log_execution
    logs.teardown_coordinator_logging()
    assert decorators._runtime.on_execution is None


def test_an_existing_hook_is_chained_and_restored(out: io.StringIO) -> None:
    seen: list[str] = []

    def other(site: Any, duration: float, exc: BaseException | None) -> None:
        seen.append(site.span_name)

    decorators._runtime.on_execution = other
    try:
        victor_otel.setup_coordinator_logging(stream=out, success_level="INFO")
        victor_otel.get_coordinator_metrics_collector().track_execution("Chat", duration_ms=1.0)
        assert seen == ["Chat.execute"] and len(lines(out)) == 1
        logs.teardown_coordinator_logging()
        assert decorators._runtime.on_execution is other
    finally:
        decorators._runtime.on_execution = None


def test_span_attributes_we_set_are_redacted(spans: InMemorySpanExporter) -> None:
    victor_otel.init(service_name="t", traces_exporter="none", span_exporters=[spans])

    @victor_otel.instrument(coordinator="Chat", method="call")
    def call() -> None:
        raise RuntimeError(f"upstream said Authorization: Bearer {SECRETS['bearer']}")

    with pytest.raises(RuntimeError):
        call()
    (span,) = spans.get_finished_spans()
    (event,) = span.events
    assert event.attributes is not None
    assert event.attributes["exception.message"] == "upstream said Authorization: [REDACTED]"
    assert SECRETS["bearer"] not in str(event.attributes["exception.stacktrace"])
    assert span.status.description == "RuntimeError: upstream said Authorization: [REDACTED]"


# -- the OTel log bridge --------------------------------------------------------------------------


def test_records_go_through_the_logger_provider_with_trace_context(
    out: io.StringIO, spans: InMemorySpanExporter
) -> None:
    telemetry = victor_otel.init(
        service_name="t", traces_exporter="none", logs_exporter="console", span_exporters=[spans]
    )
    exported = InMemoryLogRecordExporter()
    telemetry.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    victor_otel.setup_coordinator_logging(stream=out)
    assert telemetry.tracer is not None
    with telemetry.tracer.start_as_current_span("work") as span, victor_otel.request_context("req-b"):
        victor_otel.get_coordinator_logger("ChatCoordinator").warning(
            "key %s", SECRETS["openai"], extra={"tags": ["a"], "password": "pw", "n": 2}
        )
    (readable,) = exported.get_finished_logs()
    record = readable.log_record
    assert record.body == "key [REDACTED]"
    assert record.severity_text == "WARN" and record.trace_id == span.get_span_context().trace_id
    assert record.attributes is not None
    assert dict(record.attributes) == {
        "coordinator": "ChatCoordinator", "request_id": "req-b", "tags": '["a"]', "password": "[REDACTED]", "n": 2,
    }
    assert lines(out)[0]["message"] == "key [REDACTED]"  # the same prepared record, written once each


def test_the_exporters_own_diagnostics_are_not_bridged(out: io.StringIO) -> None:
    telemetry = victor_otel.init(service_name="t", traces_exporter="none", logs_exporter="console")
    exported = InMemoryLogRecordExporter()
    telemetry.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    victor_otel.setup_coordinator_logging(stream=out, root=True)
    logging.getLogger("opentelemetry.sdk._logs.test").warning("export failed")
    logging.getLogger("victor_otel").warning("exporter gave up")
    logging.getLogger("app").warning("bridged")
    assert [r.log_record.body for r in exported.get_finished_logs()] == ["bridged"]
    assert [r["message"] for r in lines(out)] == ["export failed", "exporter gave up", "bridged"]


def test_threads_keep_their_own_correlation(out: io.StringIO) -> None:
    import threading

    victor_otel.setup_coordinator_logging(stream=out)
    logger = victor_otel.get_coordinator_logger("Chat")

    def work(n: int) -> None:
        with victor_otel.request_context(f"thread-{n}"):
            for i in range(50):
                logger.info("step", extra={"n": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = lines(out)
    assert len(records) == 200
    assert all(r["request_id"] == f"thread-{r['n']}" for r in records)
    assert all(TIMESTAMP.match(r["timestamp"]) for r in records)


def test_the_bridge_is_silent_without_a_logger_provider(out: io.StringIO) -> None:
    victor_otel.init(service_name="t", traces_exporter="none")
    victor_otel.setup_coordinator_logging(stream=out)
    victor_otel.get_coordinator_logger("Chat").info("only the stream")
    assert len(lines(out)) == 1


# -- the benchmark still runs ---------------------------------------------------------------------


def test_the_logging_benchmark_runs_with_tiny_counts() -> None:
    from benchmarks import bench_logs

    results = [bench_logs.compare_json(iterations=20, rounds=1), bench_logs.decorator_overhead(iterations=20, rounds=1)]
    for result in results:
        assert {"case", "what", "ours", "anchor", "ratio", "target", "passed", "rounds"} <= set(result)
        assert result["ours"] > 0 and result["anchor"] > 0
    assert bench_logs.enabled_record_cost(iterations=5, rounds=1) > 0


def test_names_past_the_cardinality_cap_create_no_logger() -> None:
    """A ``logging.Logger`` lives for ever: only coordinators admitted under the cap get one. Before, every
    new name made one (100,000 names: 100,051 loggers, +85 MB), even when the record was filtered out."""
    victor_otel.init(service_name="cap", traces_exporter="none", cardinality_limit=5)
    out = io.StringIO()
    victor_otel.setup_coordinator_logging(level="INFO", success_level="INFO", stream=out)
    collector = victor_otel.get_coordinator_metrics_collector()
    try:
        for i in range(1_500):
            collector.track_execution(f"CapLogA{i}", 3.0)
            with victor_otel.track(f"CapLogB{i}", "op"):
                pass
    finally:
        victor_otel.teardown_coordinator_logging()
    made = [name for name in logging.Logger.manager.loggerDict if name.startswith("victor.coordinators.CapLog")]
    assert len(made) == 5, made
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 3_000  # nothing is lost past the cap: the name travels as a field
    assert records[-1]["coordinator"] == "CapLogB1499" and records[-1]["logger"] == "victor.coordinators"
    assert records[0]["coordinator"] == "CapLogA0" and records[0]["logger"] == "victor.coordinators.CapLogA0"
