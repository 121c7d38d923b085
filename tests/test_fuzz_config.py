"""Hostile configuration: whatever init() arguments or environment variables hold, the only error that can
come out is VictorOtelConfigError, and its message names the setting (the argument or the variable)."""

from __future__ import annotations

import decimal
import os
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import victor_otel
from victor_otel.config import OPTIONS, SDK_LIMITS, SDK_POSITIVE_INTEGERS, Settings, check_sdk_environment

NAMES = [option.name for option in OPTIONS]
VARIABLES = sorted({var for option in OPTIONS for var in option.env})
SDK_VARIABLES = [*SDK_POSITIVE_INTEGERS, *SDK_LIMITS, "OTEL_METRICS_EXEMPLAR_FILTER", "OTEL_PROPAGATORS"]
HOSTILE_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8")),
    st.sampled_from([
        "", " ", "\x00", "nan", "NaN", "inf", "-inf", "1e309", "-0", "0x10", "1_000",
        "\u096f", "\uff11\uff12",  # a Devanagari nine, full-width digits: int() takes them
        "true ", "None",
        "'; DROP TABLE x; --", "${jndi:ldap://127.0.0.1/a}", "$(reboot)", "../../../../etc/passwd", "a" * 100_000,
        "http://", "http://[::1", "ftp://host", "http://host:99999", "k=v,=x,k2", "%ZZ", "\u202e", "\ud7ff",
        "otlp,none", "none,none", ",,,", "prometheus,otlp,console",
    ]),
)
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.floats(),
    st.decimals(allow_nan=True), st.complex_numbers(), HOSTILE_TEXT, st.binary(max_size=20),
    st.lists(HOSTILE_TEXT, max_size=3), st.tuples(st.integers()), st.sets(st.integers(), max_size=2),
    st.dictionaries(HOSTILE_TEXT, HOSTILE_TEXT, max_size=3), st.dictionaries(st.integers(), st.text(), max_size=2),
    st.just(object()), st.just(decimal.Decimal("sNaN")), st.just(float("nan")), st.just(type),
)


def names_the_setting(message: str, *names: str) -> bool:
    return any(name in message for name in names)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(NAMES), value=HOSTILE)
def test_any_argument_value_is_taken_or_refused_by_name(name: str, value: Any) -> None:
    try:
        Settings.from_sources({name: value}, {})
    except victor_otel.VictorOtelConfigError as error:
        assert names_the_setting(str(error), name), str(error)


@settings(max_examples=400, deadline=None)
@given(variable=st.sampled_from(VARIABLES + SDK_VARIABLES), value=HOSTILE_TEXT)
def test_any_environment_value_is_taken_or_refused_by_name(variable: str, value: str) -> None:
    environ = {variable: value}
    try:
        Settings.from_sources({}, environ)
        check_sdk_environment(environ)
    except victor_otel.VictorOtelConfigError as error:
        assert names_the_setting(str(error), variable, *NAMES), str(error)


#: init() for real: everything except what would bind sockets, write files or reach the network.
SAFE_FOR_INIT = [n for n in NAMES if n not in ("metrics_port", "metrics_host", "traces_file", "multiproc_dir",
                                                 "otlp_endpoint")]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments=st.fixed_dictionaries({}, optional={
           o.name: st.one_of(st.just(o.default), HOSTILE) if o.default is not None else HOSTILE
           for o in OPTIONS if o.name in SAFE_FOR_INIT}),
       environ=st.dictionaries(st.sampled_from(VARIABLES + SDK_VARIABLES), HOSTILE_TEXT, max_size=2))
def test_init_raises_nothing_but_a_named_config_error(arguments: dict[str, Any], environ: dict[str, str]) -> None:
    environ = {k: v.replace("\x00", "") for k, v in environ.items()}  # the OS refuses NUL in variables
    unsafe = {"VICTOR_OTEL_METRICS_PORT", "VICTOR_OTEL_METRICS_HOST", "VICTOR_OTEL_TRACES_FILE",
              "VICTOR_OTEL_MULTIPROC_DIR", "OTEL_EXPORTER_OTLP_ENDPOINT"}
    environ = {k: v for k, v in environ.items() if k not in unsafe}
    with mock.patch.dict(os.environ, environ):
        try:
            victor_otel.init(otlp_endpoint="http://127.0.0.1:9", **arguments)  # the discard port: refused
            event("initialised")
        except victor_otel.VictorOtelConfigError as error:
            assert names_the_setting(str(error), *arguments, *environ), str(error)
        finally:
            victor_otel.shutdown(timeout=2)


def test_an_unknown_setting_is_named_too() -> None:
    try:
        Settings.from_sources({"shutdown_timout": 1}, {})
    except victor_otel.VictorOtelConfigError as error:
        assert "shutdown_timout" in str(error) and "shutdown_timeout" in str(error)
    else:
        raise AssertionError("an unknown setting was accepted")


def test_sdk_variables_the_sdk_would_choke_on_are_refused_at_init() -> None:
    for variable, value in [("OTEL_BSP_SCHEDULE_DELAY", "0"), ("OTEL_BLRP_SCHEDULE_DELAY", "-5"),
                            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "999999999999999999999"),
                            ("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes"), ("OTEL_PROPAGATORS", "tracecontext,b4")]:
        with mock.patch.dict(os.environ, {variable: value}):
            try:
                victor_otel.init(service_name="fuzz", traces_exporter="console")
            except victor_otel.VictorOtelConfigError as error:
                assert variable in str(error)
            else:
                raise AssertionError(f"{variable}={value!r} was accepted")
            finally:
                victor_otel.shutdown(timeout=2)
