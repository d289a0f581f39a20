# syntax=docker/dockerfile:1
# The inferwatch sidecar (also runs the demo model server and traffic in docker-compose.yml).
#   docker build -t inferwatch:dev .
#   docker run --rm -p 8080:8080 -p 9180:9180 -v $PWD/inferwatch.yaml:/etc/inferwatch/inferwatch.yaml:ro inferwatch:dev
# GPU metrics need the `gpu` extra: docker build --build-arg EXTRAS=gpu .
# The base image by tag, not digest: the slim tags are rebuilt for security fixes every few weeks,
# and a digest committed here would keep the old, vulnerable layers until someone bumps it. Builds
# that must be reproducible pass one: --build-arg BASE_IMAGE=python:3.12-slim@sha256:<digest>.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/inferwatch
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY src ./src
# Dependencies at the versions the tests passed with (constraints.txt), not whatever is newest today.
RUN /opt/inferwatch/bin/pip install -c constraints.txt ".${EXTRAS:+[$EXTRAS]}"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="inferwatch" \
      org.opencontainers.image.description="A Prometheus sidecar that watches machine learning models in production" \
      org.opencontainers.image.licenses="Apache-2.0"
# One BLAS thread: the drift evaluation's matrix products are small, and a sidecar sharing
# the model's CPUs with a BLAS thread pool ran them 5x slower (docs/design.md).
ENV PATH=/opt/inferwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1
COPY --from=build /opt/inferwatch /opt/inferwatch
# A fixed non-root uid: the sidecar reads the model server's /proc entries (shared PID namespace),
# which needs the same uid when the model server runs from this image too.
RUN groupadd --system --gid 10001 inferwatch \
 && useradd --system --uid 10001 --gid inferwatch --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin inferwatch \
 && mkdir -p /etc/inferwatch /var/lib/inferwatch \
 && chown inferwatch:inferwatch /var/lib/inferwatch
USER 10001:10001
WORKDIR /var/lib/inferwatch
# 8080: the proxy (clients call this), 9180: the admin port (/metrics, /healthz, /readyz, /v1/events)
EXPOSE 8080 9180
# Ready = the worker runs and the model server answers (the slim image has no curl: Python asks).
# Containers of this image that are not the sidecar (the demo's model, traffic) override or disable it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9180/readyz', timeout=2)"]
CMD ["inferwatch", "run", "--config", "/etc/inferwatch/inferwatch.yaml"]
