# syntax=docker/dockerfile:1
# The inferwatch sidecar (also runs the demo model server and traffic in docker-compose.yml).
#   docker build -t inferwatch:dev .
#   docker run --rm -p 8080:8080 -p 9180:9180 -v $PWD/inferwatch.yaml:/etc/inferwatch/inferwatch.yaml:ro inferwatch:dev
# GPU metrics need the `gpu` extra: docker build --build-arg EXTRAS=gpu .
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/inferwatch
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/inferwatch/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

FROM python:${PYTHON_VERSION}-slim
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
CMD ["inferwatch", "run", "--config", "/etc/inferwatch/inferwatch.yaml"]
