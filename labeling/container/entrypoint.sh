#!/bin/sh
# Runs as the unprivileged labeler user on a read-only root filesystem with a tmpfs $HOME.
# The Claude credentials are mounted read-only; the CLI wants to write next to them (token
# refresh, session files), so it gets a private copy in the tmpfs home that dies with the container.
set -eu
mkdir -p "$HOME/.claude"
if [ -e /claude-credentials/.credentials.json ]; then
  if ! cp /claude-credentials/.credentials.json "$HOME/.claude/.credentials.json" 2>/dev/null; then
    echo "labeler: cannot read /claude-credentials/.credentials.json as uid $(id -u); make it readable by the container user" >&2
    exit 3
  fi
  chmod 600 "$HOME/.claude/.credentials.json"
fi
exec "$@"
