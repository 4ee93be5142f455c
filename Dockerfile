# syntax=docker/dockerfile:1
#
# scorefleet: ONE image for the Celery workers, beat and Flower; the command picks the
# role (the Helm chart in helm/scorefleet sets it per Deployment):
#
#   worker  celery -A workers.app worker -P threads -c 8 -I workers.process.liveness --heartbeat-interval 10
#   beat    celery -A workers.app beat -s /tmp/celerybeat-schedule
#   flower  celery -A workers.app flower --port=5555      (needs FLOWER_BASIC_AUTH, from a Secret)
#
#   docker build -t scorefleet:0.1.0 .
#
# The model images are separate (examples/iris/Dockerfile is the reference one).
# tests/deploy/test_dockerfile.py checks this file statically (no Docker engine in the test
# environment): stages, pinned base, non-root numeric USER, no credentials, the
# malloc settings and that the chart runs the commands above.

# Pinned to a patch release; pin the digest too in your registry mirror
# (`docker buildx imagetools inspect python:3.11.13-slim-bookworm`) for byte-for-byte rebuilds.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what packaging needs: the project's own sources (see .dockerignore).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scorefleet/ scorefleet/
COPY tasks/ tasks/
COPY workers/ workers/
COPY lambda_enqueue/ lambda_enqueue/

# A virtualenv that the runtime stage copies whole. Dependencies come as binary wheels
# only (celery, kombu, boto3, kubernetes, flower, psutil and pycurl all publish
# manylinux wheels), so no compiler or header package is ever installed; the project
# itself is pure Python and is built into a wheel first.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --only-binary=:all: /tmp/wheels/scorefleet-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip \
    && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib

# -------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="scorefleet" \
      org.opencontainers.image.description="scorefleet workers, beat and Flower (Celery on SQS)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A numeric, non-root user: Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 scorefleet \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin scorefleet

COPY --from=build /opt/venv /opt/venv

# MALLOC_*: glibc keeps multi-MB buffers mmapped and returns them when freed, and
# caps the per-thread arenas, so a threads-pool worker's RSS stays flat whatever
# the file size (the same values as workers/localstack/stack.py MALLOC_ENV).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MALLOC_MMAP_THRESHOLD_=1048576 \
    MALLOC_ARENA_MAX=2

WORKDIR /tmp
USER 10001:10001

# Flower's port (workers and beat listen on nothing).
EXPOSE 5555

# Kubernetes ignores HEALTHCHECK; the chart has a probe per role (the worker's is
# `python -m workers.process.liveness`, Flower's GET /healthcheck), and one HEALTHCHECK
# cannot fit the three roles of this image.
HEALTHCHECK NONE

# Default role: a worker (the chart always sets the command explicitly).
CMD ["celery", "-A", "workers.app", "worker", "-P", "threads", "-c", "8", "-I", "workers.process.liveness", "--heartbeat-interval", "10", "-l", "INFO"]
