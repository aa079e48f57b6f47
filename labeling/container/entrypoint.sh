#!/bin/sh
# Runs as the unprivileged labeler user on a read-only root filesystem with a tmpfs $HOME.
# The backend copies the credentials into /claude-credentials through the engine's API (root's files,
# read-only to this user), one of:
# - a Claude login (.credentials.json): the CLI wants to write next to it (token refresh, session
#   files), so it gets a private copy in the tmpfs home that dies with the container;
# - an API key (api-key): exported as ANTHROPIC_API_KEY to the CLI's process alone, so it never
#   appears in the container's configuration (`docker inspect`).
# The CLI's own tools cannot read either: see the permission rules in managed-settings.json.
set -eu
mkdir -p "$HOME/.claude"
if [ -e /claude-credentials/.credentials.json ]; then
  if ! cp /claude-credentials/.credentials.json "$HOME/.claude/.credentials.json" 2>/dev/null; then
    echo "labeler: cannot read /claude-credentials/.credentials.json as uid $(id -u); make it readable by the container user" >&2
    exit 3
  fi
  chmod 600 "$HOME/.claude/.credentials.json"
fi
if [ -e /claude-credentials/api-key ]; then
  if ! ANTHROPIC_API_KEY=$(cat /claude-credentials/api-key 2>/dev/null); then
    echo "labeler: cannot read /claude-credentials/api-key as uid $(id -u)" >&2
    exit 3
  fi
  export ANTHROPIC_API_KEY
fi
exec "$@"
