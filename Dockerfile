# syntax=docker/dockerfile:1
# One image for all three chatmq services; docker-compose.yml picks the role with the command
# (`chatmq broker`, `chatmq bridge`, `chatmq api`).
# The web app (web/): npm packages exactly as the lockfile pins them, then the no-bundler build.
FROM node:20-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/build.js ./
COPY web/src ./src
RUN node build.js

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid so a bind-mounted data dir can be chowned to match on the host.
RUN groupadd --system --gid 10001 chatmq \
    && useradd --system --uid 10001 --gid chatmq --home-dir /var/lib/chatmq --create-home \
       --shell /usr/sbin/nologin chatmq

# Install from a throwaway copy of the source: the image keeps the installed package only.
COPY . /tmp/chatmq-src
RUN pip install '/tmp/chatmq-src[server]' && rm -rf /tmp/chatmq-src

# `chatmq api` serves it at /app/.
COPY --from=web /web/dist /opt/chatmq/web

USER chatmq
WORKDIR /var/lib/chatmq
ENV CHATMQ_DATA_DIR=/var/lib/chatmq \
    CHATMQ_HOST=0.0.0.0 \
    CHATMQ_WEB_DIR=/opt/chatmq/web

# MQTT, WebSocket MQTT, HTTP API.
EXPOSE 1883 8083 8080

# Exec form: chatmq runs as PID 1's child under compose's `init: true` and gets SIGTERM directly.
ENTRYPOINT ["chatmq"]
CMD ["--help"]
