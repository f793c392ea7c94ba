#!/usr/bin/env bash
# Tier 4 (multi-host) tests: build, remove namespaces left by dead runs, run test/netns.
# Needs root (network namespaces); the tests skip loudly otherwise.
#   scripts/netns/run.sh            build + run
#   scripts/netns/run.sh --no-build run against the dist/ already built
#   scripts/netns/run.sh --cleanup  only remove leftovers (pmnt-<pid>-* whose pid is gone)
set -euo pipefail
cd "$(dirname "$0")/../.."

cleanup() {
  command -v ip >/dev/null || return 0
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^pmnt-[0-9]+-' || true); do
    pid=$(echo "$ns" | cut -d- -f2)
    if ! kill -0 "$pid" 2>/dev/null; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" && echo "removed leftover namespace $ns"
    fi
  done
}

if [[ "${1:-}" == "--cleanup" ]]; then cleanup; exit 0; fi
if ! command -v ip >/dev/null; then echo "ip (iproute2) missing: apt-get install -y iproute2" >&2; fi
cleanup
if [[ "${1:-}" != "--no-build" ]]; then npx tsc -b; fi
exec npx vitest run test/netns
