# syntax=docker/dockerfile:1
#
# kubernaut-gitops-reconciler image.
#   docker build -t ghcr.io/kubernaut/gitops-reconciler:0.1.0 .
#
# The base is pinned by tag. For reproducible builds pin the digest as well, and let a
# bot (Renovate/Dependabot) bump it:
#   FROM python:3.11-slim@sha256:<digest>      (docker buildx imagetools inspect python:3.11-slim)
ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the package and its dependencies in a virtual environment ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the wheel is built from (pyproject.toml names README.md as the readme;
# templates/ is shipped as reconciler.builtin_templates).
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
COPY templates ./templates
RUN pip install --no-cache-dir --upgrade pip \
 && pip install --no-cache-dir . \
 && reconciler --help >/dev/null

# ---- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kubernaut-gitops-reconciler" \
      org.opencontainers.image.description="GitOps reconciler: WorkflowExecutions in Git become Tekton PipelineRuns / Jobs; status is committed back." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/kubernaut/gitops-reconciler" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="kubernaut" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

# git and ssh are run by GitPython for fetch and push (HTTPS and SSH remotes).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Non-root user 10001 (matches runAsUser/fsGroup in deploy/base/deployment.yaml).
RUN groupadd --system --gid 10001 reconciler \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/reconciler --create-home \
      --shell /usr/sbin/nologin reconciler \
 && mkdir -p /etc/reconciler /var/cache/reconciler \
 && chown 10001:10001 /var/cache/reconciler

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GIT_TERMINAL_PROMPT=0

USER 10001:10001
WORKDIR /home/reconciler

# 8080 webhook, 8081 health (/healthz, /readyz), 9090 metrics.
EXPOSE 8080 8081 9090

# Kubernetes probes check health (deploy/base/deployment.yaml); no Docker HEALTHCHECK.
HEALTHCHECK NONE

ENTRYPOINT ["reconciler"]
CMD ["run", "--config", "/etc/reconciler/config.yaml"]
