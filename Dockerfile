# The victor_otel demo app, as collector/docker-compose.yml runs it.
#   docker build -t victor-otel-demo . && docker run -p 8000:8000 victor-otel-demo
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY victor_otel ./victor_otel
RUN pip install ".[otlp,demo]" && useradd --system --uid 10001 victor

USER victor
EXPOSE 8000
# Liveness as the orchestrator would probe it; /metrics answers as soon as the app serves.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=2)"
# 0.0.0.0: Prometheus and the collector reach the app from other containers.
CMD ["victor-otel", "demo", "--host", "0.0.0.0", "--port", "8000"]
