from __future__ import annotations

import dataclasses
import inspect

import pytest

import victor_otel
from victor_otel import VictorOtelConfigError, config
from victor_otel.config import OPTIONS, Settings


def test_defaults_are_the_embedded_default() -> None:
    settings = Settings.from_sources({}, {})
    assert settings.traces_exporter == ("none",)  # nothing on the application's standard output
    assert settings.metrics_exporter == ("prometheus",)
    assert settings.metrics_host == "127.0.0.1"
    assert settings.sources["service_name"] == "default"


def test_argument_wins_over_victor_variable_over_otel_variable() -> None:
    env = {"OTEL_SERVICE_NAME": "from-otel", "VICTOR_OTEL_SERVICE_NAME": "from-victor"}
    assert Settings.from_sources({}, env).service_name == "from-victor"
    assert Settings.from_sources({}, {"OTEL_SERVICE_NAME": "from-otel"}).service_name == "from-otel"
    settings = Settings.from_sources({"service_name": "arg"}, env)
    assert settings.service_name == "arg"
    assert settings.sources["service_name"] == "argument"
    assert Settings.from_sources({}, env).sources["service_name"] == "VICTOR_OTEL_SERVICE_NAME"


def test_standard_variables() -> None:
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2.3,deployment.environment.name=prod,team=a%2Cb",
        "OTEL_SDK_DISABLED": "true",
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    settings = Settings.from_sources({}, env)
    assert settings.resolved_version == "1.2.3"
    assert settings.resolved_environment == "prod"
    assert settings.resource_attributes["team"] == "a,b"
    assert settings.disabled is True
    assert settings.traces_exporter == ("otlp", "console")
    assert settings.otlp_endpoint == "http://collector:4318"
    assert settings.sampler == "parentbased_traceidratio"
    assert settings.sampler_arg == 0.25


@pytest.mark.parametrize(
    ("env", "setting", "accepted"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER", "console | otlp | none"),
        ({"OTEL_TRACES_EXPORTER": "none,otlp"}, "OTEL_TRACES_EXPORTER", "'none' alone"),
        ({"OTEL_METRICS_EXPORTER": "statsd"}, "OTEL_METRICS_EXPORTER", "prometheus"),
        ({"OTEL_TRACES_SAMPLER_ARG": "abc"}, "OTEL_TRACES_SAMPLER_ARG", "a number >= 0.0 and <= 1.0"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG", "<= 1.0"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER", "always_on"),
        ({"VICTOR_OTEL_METRICS_PORT": "-1"}, "VICTOR_OTEL_METRICS_PORT", "an integer >= 0 and <= 65535"),
        ({"VICTOR_OTEL_METRICS_PORT": "70000"}, "VICTOR_OTEL_METRICS_PORT", "<= 65535"),
        ({"OTEL_SDK_DISABLED": "maybe"}, "OTEL_SDK_DISABLED", "true or false"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "A://["}, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://"),  # urlsplit raises
        ({"VICTOR_OTEL_DEBUG_TRACE_URL": "A://["}, "VICTOR_OTEL_DEBUG_TRACE_URL", "{trace_id}"),  # urlsplit raises
        ({"VICTOR_OTEL_LLM_CAPTURE_CONTENT": "sometimes"}, "VICTOR_OTEL_LLM_CAPTURE_CONTENT", "span_only"),
        ({"VICTOR_OTEL_LLM_BUDGET_USD_PER_HOUR": "0"}, "VICTOR_OTEL_LLM_BUDGET_USD_PER_HOUR", "> 0.0"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES", "key=value"),
        ({"VICTOR_OTEL_CARDINALITY_LIMIT": "0"}, "VICTOR_OTEL_CARDINALITY_LIMIT", ">= 1"),
        ({"VICTOR_OTEL_WINDOW_SECONDS": "nan"}, "VICTOR_OTEL_WINDOW_SECONDS", "a number"),
        ({"VICTOR_OTEL_SHUTDOWN_TIMEOUT": "0"}, "VICTOR_OTEL_SHUTDOWN_TIMEOUT", "> 0.0"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "1.5"}, "OTEL_METRIC_EXPORT_INTERVAL", "an integer"),
    ],
)
def test_bad_environment_value_names_the_setting(env: dict[str, str], setting: str, accepted: str) -> None:
    with pytest.raises(VictorOtelConfigError) as caught:
        Settings.from_sources({}, env)
    message = str(caught.value)
    assert message.startswith(setting + ":"), message
    assert accepted in message


@pytest.mark.parametrize(
    ("arguments", "setting"),
    [
        ({"traces_exporter": "zipkin"}, "traces_exporter"),
        ({"sampler_arg": "abc"}, "sampler_arg"),
        ({"metrics_port": -5}, "metrics_port"),
        ({"metrics_port": True}, "metrics_port"),
        ({"service_name": ""}, "service_name"),
        ({"service_name": 42}, "service_name"),
        ({"cardinality_limit": 2.5}, "cardinality_limit"),
        ({"no_such_setting": 1}, "unknown setting"),
    ],
)
def test_bad_argument_names_the_setting(arguments: dict[str, object], setting: str) -> None:
    with pytest.raises(VictorOtelConfigError, match=setting):
        Settings.from_sources(arguments, {})


def test_every_option_is_a_settings_field_with_the_same_default() -> None:
    defaults = Settings()
    resolved = Settings.from_sources({}, {})
    for option in OPTIONS:
        if option.default is None and option.name == "traces_exporter":  # resolved from traces_file
            assert getattr(defaults, option.name) == getattr(resolved, option.name) == ("none",)
            continue
        assert getattr(defaults, option.name) == option.default, option.name


@pytest.mark.parametrize(
    ("arguments", "environ", "expected"),
    [
        ({}, {}, ("none",)),
        ({"traces_file": "spans.jsonl"}, {}, ("console",)),  # the demo's file
        ({}, {"VICTOR_OTEL_TRACES_FILE": "spans.jsonl"}, ("console",)),
        ({"traces_file": "spans.jsonl"}, {"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({}, {"OTEL_TRACES_EXPORTER": "console"}, ("console",)),  # standard output: asked for
    ],
)
def test_spans_go_to_standard_output_only_when_asked_for(
    arguments: dict[str, object], environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert Settings.from_sources(arguments, environ).traces_exporter == expected


def test_differences_name_the_changed_settings() -> None:
    a = Settings.from_sources({"service_name": "a"}, {})
    b = Settings.from_sources({"service_name": "b"}, {})
    assert a.differences(b) == ["service_name: 'a' != 'b'"]


def test_each_setting_is_declared_once_as_a_settings_field() -> None:
    """OPTIONS is derived from the fields: every field but ``sources`` is a setting, in the same order."""
    names = [f.name for f in dataclasses.fields(Settings) if f.name != "sources"]
    assert [option.name for option in OPTIONS] == names
    assert set(config._BY_NAME) == set(names)


def test_init_takes_exactly_the_settings_each_defaulting_to_none() -> None:
    """init()'s keywords are the third list of setting names: this keeps it equal to the declaration."""
    parameters = inspect.signature(victor_otel.init).parameters
    settings = {option.name for option in OPTIONS}
    assert set(parameters) - {"span_exporters"} == settings, (
        f"init() lacks {sorted(settings - set(parameters))}, has unknown {sorted(set(parameters) - settings)}"
    )
    assert "span_exporters" in parameters
    # None means "not given": from_sources() then reads the environment variable, then the default.
    assert {name: p.default for name, p in parameters.items() if name in settings} == dict.fromkeys(settings)


def test_secrets_stay_out_of_repr_and_messages() -> None:
    secrets = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    assert secrets == set(config._SECRETS) == {"health_token", "metrics_token", "metrics_basic_auth"}
    arguments = {"health_token": "tok-health", "metrics_token": "tok-metrics", "metrics_basic_auth": "u:tok-basic"}
    settings = Settings.from_sources(arguments, {})
    assert not any(value in repr(settings) for value in arguments.values())
    differences = settings.differences(Settings.from_sources({}, {}))
    assert sorted(d.split(":")[0] for d in differences) == sorted(arguments)
    assert not any(value in " ".join(differences) for value in arguments.values())


def test_unset_traces_exporter_is_resolved_in_the_object_itself() -> None:
    """Settings() and dataclasses.replace() resolve it as from_sources() does: never left None."""
    assert Settings().traces_exporter == ("none",)
    assert Settings(traces_file="spans.jsonl").traces_exporter == ("console",)
    assert Settings(traces_file="spans.jsonl", traces_exporter=("otlp",)).traces_exporter == ("otlp",)
    assert Settings.from_sources({"traces_file": "spans.jsonl"}, {}).sources["traces_exporter"] == "default"
