# Switchboard gateway image. Settings come from the environment (SPEC §5); the config file is
# mounted at /app/config/switchboard.yaml (see compose.yaml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHBOARD_CONFIG=/app/config/switchboard.yaml

RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid switchboard --no-create-home --home-dir /app \
      --shell /usr/sbin/nologin switchboard

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY bots ./bots
COPY switchboard ./switchboard
COPY bench ./bench
RUN pip install . \
 && rm -rf build ./*.egg-info

USER switchboard
EXPOSE 8080

# The slim image has no curl: ask /healthz with Python's standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SWITCHBOARD_PORT', '8080'); answer = urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4); sys.exit(0 if answer.status == 200 else 1)"]

CMD ["switchboard", "run"]
