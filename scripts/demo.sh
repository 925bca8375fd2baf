#!/usr/bin/env bash
# Install Switchboard into .venv and start the local demo (no credentials needed).
# On Debian/Ubuntu it installs redis-server when it is missing (as root, or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_URL:-}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "Installing redis-server (Debian package)…"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install Redis (e.g. 'brew install redis') or set REDIS_URL." >&2
    exit 1
  fi
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  # Debian ships venv's pip bootstrap (ensurepip) in a separate package.
  if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  "$PYTHON" -m venv .venv
fi
LOG=.venv/install.log
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e .; } >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "Installing Switchboard failed (log above, also in $LOG)." >&2
  exit 1
fi
exec .venv/bin/switchboard demo "$@"
