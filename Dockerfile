# anki-cognito-gateway: the gateway and the stock Anki sync server (from the pinned `anki`
# package in pyproject.toml) in one small image. README.md, "Docker", explains its use.
#
#   docker build -t anki-cognito-gateway .
#   docker run -p 127.0.0.1:8080:8080 -v gateway-data:/data --env-file .env anki-cognito-gateway
#
# Published on loopback: the gateway speaks plain HTTP (put TLS in front). docs/deploy/compose.md
# has the commands, backups to a volume at /backups included.
#
# Build argument EXTRAS="[dev]" adds moto, the Cognito stand-in of local mode (its Cognito service
# and its Flask server only, not moto's `server` extra); docker-compose.yml builds that variant
# for its `local` profile. Production images leave it empty.
#
# The base image is pinned by version tag. Pinning by digest as well
# (python:3.11.14-slim-bookworm@sha256:...) is stronger, but a digest cannot be looked up or
# verified where this file was written (no registry access); add it when you build, from
# `docker buildx imagetools inspect python:3.11.14-slim-bookworm`.
FROM python:3.11.14-slim-bookworm

ARG EXTRAS=""

# PIP_ROOT_USER_ACTION: pip runs as root only while building (the image runs as uid 10001); its
# "running pip as root" warning printed on every build is noise here.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    GATEWAY_DATA_DIR=/data \
    GATEWAY_SERVER_HOST=0.0.0.0 \
    GATEWAY_SERVER_PORT=8080

# A fixed uid/gid, so a bind-mounted data folder can be chowned to match: chown 10001:10001.
# /backups: where `python -m gateway backup --to /backups` writes; a named volume mounted there
# starts out owned by the gateway user (the engine copies the image folder's owner).
# Not --system: system accounts must have uids below 1000 (useradd warns on every build).
RUN groupadd --gid 10001 gateway \
    && useradd --no-log-init --uid 10001 --gid gateway --create-home --home-dir /home/gateway \
        --shell /usr/sbin/nologin gateway \
    && mkdir /data /backups \
    && chown gateway:gateway /data /backups

# The project itself, so its versions come from pyproject.toml: `anki` (the stock sync server
# the workers run) is pinned exactly there. Built outside /app and removed after: the image runs
# the installed package, with no source copy, build/ or *.egg-info left behind.
COPY pyproject.toml README.md /tmp/src/
COPY gateway /tmp/src/gateway
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "/tmp/src${EXTRAS}" && rm -rf /tmp/src
WORKDIR /app
COPY config ./config

# Numeric, so that runtimes which check for a non-root uid (runAsNonRoot) can see it.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

# /health answers 200 while the gateway serves (also under a path prefix). No curl in slim
# images: `python -m gateway health` does the request. Podman keeps HEALTHCHECK only when it
# builds with `--format docker` (README, "Docker").
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "gateway", "health"]

# Exec form: python is PID 1 and gets docker's SIGTERM itself. The gateway handles SIGTERM and
# SIGINT by stopping every sync server (SIGINT, their clean shutdown) before it exits; allow it
# time to (`docker stop -t 30`, compose `stop_grace_period: 30s`).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway", "serve"]
