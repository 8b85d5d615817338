# syntax=docker/dockerfile:1
# DicomKeep: one image for every service.
#
#   docker build -t dicomkeep:0.1.0 .
#   docker run -p 127.0.0.1:8042:8042 -p 4242:4242 dicomkeep:0.1.0   # all-in-one (serve)
#   docker run dicomkeep:0.1.0 run indexer /etc/dicomkeep            # one service (distributed)
#
# The configuration is read from /etc/dicomkeep (every *.json file of the folder,
# Orthanc-style), then from ORTHANC__* and DICOMKEEP_* variables: see docs/configuration.md.

FROM python:3.11-slim AS build

# The uv version the Makefile pins; installed from PyPI like `make install` does.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Same path in both stages: console scripts record the interpreter's absolute path.
ENV UV_PROJECT_ENVIRONMENT=/opt/dicomkeep \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /src

# 1. The dependencies alone (uv's Docker pattern, "intermediate layers"): this layer
# is rebuilt only when uv.lock or a pyproject.toml changes, not on a source change.
# Every workspace member's pyproject.toml is needed to read the workspace.
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/
COPY services/allinone/pyproject.toml services/allinone/
COPY services/gateway/pyproject.toml services/gateway/
COPY services/indexer/pyproject.toml services/indexer/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/jobs/pyproject.toml services/jobs/
COPY services/stability/pyproject.toml services/stability/
COPY services/storage/pyproject.toml services/storage/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-install-workspace \
        --python /usr/local/bin/python3.11

# 2. DicomKeep itself. --frozen: exactly uv.lock; --no-dev: only what runs;
# --no-editable: the environment no longer needs /src.
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-editable --python /usr/local/bin/python3.11


FROM python:3.11-slim

RUN groupadd --system --gid 10001 dicomkeep \
    && useradd --system --uid 10001 --gid dicomkeep --home-dir /var/lib/dicomkeep \
       --shell /usr/sbin/nologin dicomkeep \
    && mkdir -p /etc/dicomkeep /var/lib/dicomkeep/db \
    && chown -R dicomkeep:dicomkeep /var/lib/dicomkeep

COPY --from=build /opt/dicomkeep /opt/dicomkeep

# Image defaults, as the orthancteam/orthanc images have them: reachable from
# outside the container (which turns HTTP authentication on: declare
# RegisteredUsers), files under /var/lib/dicomkeep/db in all-in-one mode, and the
# ops port (/livez, /readyz, /metrics; no authentication) that HEALTHCHECK probes.
# Variables win over configuration files: override these with -e, not in a file.
ENV PATH=/opt/dicomkeep/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORTHANC__REMOTE_ACCESS_ALLOWED=true \
    ORTHANC__STORAGE_DIRECTORY=/var/lib/dicomkeep/db \
    ORTHANC__DICOM_KEEP__OPS_PORT=9000

USER dicomkeep
WORKDIR /var/lib/dicomkeep
VOLUME ["/var/lib/dicomkeep/db"]

# REST API (HttpPort), DICOM (DicomPort), ops (DicomKeep.OpsPort).
EXPOSE 8042 4242 9000

# Every command (serve, or run SERVICE) opens the ops port: 200 on /readyz once the
# backends the process holds answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9000/readyz', timeout=4)"]

ENTRYPOINT ["dicomkeep"]
CMD ["serve", "/etc/dicomkeep"]
