#!/usr/bin/env bash
# Prepare this checkout: .venv with pinned requirements, front-end packages from npm,
# and with --test the test requirements plus (as root) the Debian packages the
# container and browser tests need, and the unprivileged user the pgvector tests run PostgreSQL as.
# Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=run
[[ "${1:-}" == "--test" ]] && MODE=test

PYTHON_BIN="${PYTHON:-}"
if [[ -z "$PYTHON_BIN" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN="$candidate"; break; fi
  done
fi
if ! "$PYTHON_BIN" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "Imagineer needs Python 3.11 (found $("$PYTHON_BIN" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# This machine's pip config names extra indexes that may not exist; hide that noise, keep real errors.
# (pipefail is on, so a failing pip still fails the script.)
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [[ "$(id -u)" == "0" ]]; then
  missing=()
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [[ "$MODE" == "test" ]]; then
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    [[ -x /bin/busybox ]] || missing+=(busybox-static)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  fi
  if (( ${#missing[@]} )); then
    log "Installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # PostgreSQL refuses to run as root: the pgvector tests (gallery/testing/pgvector_server.py) run their
  # private server as this unprivileged system user, with no home and no login shell.
  if [[ "$MODE" == "test" ]] && ! id -u imagineer-pg >/dev/null 2>&1; then
    log "Creating system user imagineer-pg (runs the test PostgreSQL)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin imagineer-pg
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  log "Creating .venv"
  "$PYTHON_BIN" -m venv .venv
fi

req_files=(requirements.txt)
[[ "$MODE" == "test" ]] && req_files+=(requirements-dev.txt)
stamp=".venv/.installed-$(cat "${req_files[@]}" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  log "Installing Python requirements (${req_files[*]})"
  pip_install --upgrade pip
  # torch first and exactly pinned, so nothing can pull a different (CUDA) build.
  pip_install "torch==2.13.0"
  args=()
  for f in "${req_files[@]}"; do args+=(-r "$f"); done
  pip_install "${args[@]}"
  touch "$stamp"
fi

if [[ ! -f node_modules/htmx.org/dist/htmx.min.js || package-lock.json -nt node_modules/.package-lock.json ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is needed to install htmx from the npm registry (apt-get install npm)." >&2
    exit 1
  fi
  log "Installing front-end packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

log "Setup done ($MODE)"
