#!/usr/bin/env bash
# The whole check, as CI runs it (`bash .ci/run`): install Switchboard with its test tools into
# .venv (and redis-server when missing), then ruff, mypy and the full test suite; exit 1 if any fails.
# Works on a fresh Debian/Ubuntu machine with Python 3.11+, as root or with sudo, without a
# terminal. Safe to run again: a second run reinstalls nothing unless pyproject.toml changed.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

STEP="setup"
trap 'status=$?; printf "\nscripts/test.sh: FAILED during %s (exit %s)\n" "$STEP" "$status" >&2; exit "$status"' ERR

step() {
  STEP="$*"
  printf '\n==> %s\n' "$STEP"
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { echo "apt-get is not available: install $* by hand" >&2; return 1; }
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "not root and no sudo: install $* by hand" >&2; return 1; }
    sudo="sudo -n"
  fi
  if [ -z "$APT_UPDATED" ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  step "install redis-server (apt-get)"
  apt_install redis-server
fi

step "python environment (.venv)"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
[ -n "$PYTHON" ] || { echo "python3 is not installed" >&2; false; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "$PYTHON is older than Python 3.11" >&2; false; }
if [ ! -x .venv/bin/python ]; then
  # Debian ships venv's pip bootstrap (ensurepip) in a separate package.
  "$PYTHON" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
  "$PYTHON" -m venv .venv
fi

# Reinstall only when the dependencies may have changed: the install is editable, so source
# changes need none.
STAMP=.venv/.switchboard-test-deps
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -VV | tr -d '\n')"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  step "pip install -e .[test]"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
  printf '%s' "$WANT" >"$STAMP"
else
  echo "dependencies already installed (pyproject.toml unchanged)"
fi

# The checks all run, so one CI log shows every kind of failure at once.
FAILED=""
check() {
  step "$1"
  if "${@:2}"; then
    return 0
  fi
  FAILED="${FAILED:+$FAILED, }$1"
}
check "ruff check ." .venv/bin/ruff check .
check "mypy" .venv/bin/mypy
check "pytest -q" .venv/bin/pytest -q </dev/null

trap - ERR
if [ -n "$FAILED" ]; then
  printf '\nscripts/test.sh: FAILED: %s (%ss)\n' "$FAILED" "$SECONDS" >&2
  exit 1
fi
printf '\nscripts/test.sh: OK (ruff, mypy and pytest passed in %ss)\n' "$SECONDS"
