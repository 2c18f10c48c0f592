# syntax=docker/dockerfile:1
# The AgentPool operator image: `make image` builds it (docker build -t agentpool-operator:dev .).
# Two stages: the first builds wheels for the operator's distribution and its runtime dependencies
# only (no dev extras; the sandbox distribution in sandbox/ is not copied: .dockerignore keeps it
# out), the second installs them into a clean slim image that runs as UID 10001.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# pyproject.toml names README.md as the long description, so the build needs it.
COPY pyproject.toml README.md ./
COPY operator ./operator
# operator/agentpool/crds and examples are links to these: the wheel ships the CRDs and examples.
COPY crds ./crds
COPY examples ./examples
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed numeric UID/GID matching the chart's runAsUser, so runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 agentpool \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin agentpool
# Bind-mount the wheels instead of copying them, so they never become an image layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index /wheels/*.whl
LABEL org.opencontainers.image.title="agentpool-operator" \
      org.opencontainers.image.description="Kubernetes operator for CI build agents and batched build steps" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /tmp
# 9090: Prometheus /metrics; 8080: kopf's /healthz liveness endpoint.
EXPOSE 9090 8080
ENTRYPOINT ["agentpool", "run"]
