"""victor_otel: OpenTelemetry instrumentation for the Victor orchestrator (work in progress)."""
