#!/bin/sh
# Stand-in for the Claude Code CLI inside the container tests' busybox image.
# Like `claude -p <prompt> --output-format json` it prints one JSON result object. Its answer
# labels every file in /images, and its tags report what it could observe about its sandbox,
# so tests can check the mounts, user, capabilities and network the backend gave it.
# FAKE_CLAUDE_MODE: normal | slow (normal after FAKE_CLAUDE_DELAY seconds, default 2) | sleep | malformed |
# invalid-entry | error | auth | crash
mode="${FAKE_CLAUDE_MODE:-normal}"
prompt=""
format="text"
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--print) ;;
    --output-format) shift; format="$1" ;;
    --allowedTools|--disallowedTools|--tools|--permission-mode|--settings|--model|--max-turns) shift ;;
    -*) ;;
    *) prompt="$1" ;;
  esac
  shift
done

emit() {  # subtype is_error result-text-already-escaped-for-a-json-string
  printf '{"type":"result","subtype":"%s","is_error":%s,"duration_ms":7,"duration_api_ms":5,"num_turns":2,"result":"%s","session_id":"00000000-0000-0000-0000-standin","total_cost_usd":0,"usage":{"input_tokens":10,"output_tokens":20},"modelUsage":{"stand-in-model":{"inputTokens":10,"outputTokens":20}},"permission_denials":[],"uuid":"stand-in"}\n' "$1" "$2" "$3"
}

if [ "$format" != "json" ]; then
  echo "stand-in claude only speaks --output-format json" >&2
  exit 2
fi

case "$mode" in
  sleep) exec sleep 3600 ;;
  malformed) emit success false "Sorry, I cannot label these images {not json"; exit 0 ;;
  error) emit error_during_execution true "stand-in failure while reading the images"; exit 1 ;;
  auth) emit success true "Not logged in · Please run /login"; exit 1 ;;
  crash) echo "half a line of output"; echo "stand-in crashed" >&2; exit 7 ;;
  slow) sleep "${FAKE_CLAUDE_DELAY:-2}" ;;
esac

if touch /images/.write-probe 2>/dev/null; then images=images-rw; else images=images-ro; fi
if touch /.write-probe 2>/dev/null; then rootfs=rootfs-rw; else rootfs=rootfs-ro; fi
if touch "$HOME/.write-probe" 2>/dev/null; then home=home-rw; else home=home-ro; fi
if [ -s "$HOME/.claude/.credentials.json" ]; then auth=auth-file
elif [ -n "${ANTHROPIC_API_KEY:-}" ]; then auth=auth-key
else auth=auth-none; fi
if [ "$(ls /sys/class/net 2>/dev/null | tr -d '\n')" = "lo" ]; then net=net-none; else net=net-some; fi
if grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/self/status; then caps=caps-none; else caps=caps-some; fi
if grep -q '^NoNewPrivs:[[:space:]]*1$' /proc/self/status; then nnp=no-new-privs; else nnp=new-privs-allowed; fi
uid="uid-$(id -u)"
# cgroup v2 first, then v1: the limits the engine applied.
mem="mem-$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo unknown)"
pids="pids-$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || echo unknown)"
cpu="cpu-$(cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || echo unknown)"

count=0
for f in /images/*; do [ -f "$f" ] && count=$((count + 1)); done

body=""
sep=""
first=1
for f in /images/*; do
  [ -f "$f" ] || continue
  name=$(basename "$f")
  case "$prompt" in
    *"$name"*) ;;
    *) emit success true "stand-in: $name is not named in the prompt"; exit 1 ;;
  esac
  nsfw=false
  if [ "$mode" = "invalid-entry" ] && [ "$first" = 1 ]; then nsfw='\"maybe\"'; fi
  first=0
  body="$body$sep\\\"$name\\\": {\\\"caption\\\": \\\"Stand-in caption for $name ($count files).\\\", \\\"tags\\\": [\\\"Stand-In\\\", \\\"stand-in\\\", \\\"$images\\\", \\\"$rootfs\\\", \\\"$home\\\", \\\"$auth\\\", \\\"$net\\\", \\\"$caps\\\", \\\"$nnp\\\", \\\"$uid\\\", \\\"$mem\\\", \\\"$pids\\\", \\\"$cpu\\\"], \\\"categories\\\": [\\\"test\\\"], \\\"nsfw\\\": $nsfw, \\\"nsfw_confidence\\\": 0.97}"
  sep=", "
done
emit success false "Here are the labels.\\n\\n\`\`\`json\\n{$body}\\n\`\`\`"
