# DicomKeep: one image for every service.
#
#   docker build -t dicomkeep .
#   docker run -p 8042:8042 -p 4242:4242 dicomkeep              # all-in-one (serve)
#   docker run dicomkeep run indexer /etc/dicomkeep             # one service (distributed)
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
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
# --frozen: exactly uv.lock; --no-editable: the venv no longer needs /src.
RUN uv sync --frozen --no-dev --all-packages --no-editable --python /usr/local/bin/python3.11


FROM python:3.11-slim

RUN groupadd --system --gid 10001 dicomkeep \
    && useradd --system --uid 10001 --gid dicomkeep --home-dir /var/lib/dicomkeep \
       --shell /usr/sbin/nologin dicomkeep \
    && mkdir -p /etc/dicomkeep /var/lib/dicomkeep/db \
    && chown -R dicomkeep:dicomkeep /var/lib/dicomkeep

COPY --from=build /opt/dicomkeep /opt/dicomkeep

# Image defaults, as the orthancteam/orthanc images have them: reachable from
# outside the container (which turns HTTP authentication on: declare
# RegisteredUsers), files under /var/lib/dicomkeep/db in all-in-one mode.
# Variables win over configuration files: override these with -e, not in a file.
ENV PATH=/opt/dicomkeep/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ORTHANC__REMOTE_ACCESS_ALLOWED=true \
    ORTHANC__STORAGE_DIRECTORY=/var/lib/dicomkeep/db

USER dicomkeep
WORKDIR /var/lib/dicomkeep
VOLUME ["/var/lib/dicomkeep/db"]

# REST API (HttpPort) and DICOM (DicomPort). `dicomkeep run` services also serve
# /livez, /readyz and /metrics on DicomKeep.OpsPort when it is set (9000 in
# docker-compose.yml and deploy/k8s).
EXPOSE 8042 4242

ENTRYPOINT ["dicomkeep"]
CMD ["serve", "/etc/dicomkeep"]
