#!/usr/bin/env bash
# Heap profile of hubd with N swarm agents connected: where a connected agent's memory goes.
# Usage: hubd/benches/massif_hub.sh [N=300] [BIN_DIR=target/debug]; then `ms_print DIR/massif.out`.
# Bounded: the swarm is killed after 400 s at most, the hub 40 s after every agent connected.
set -u
N=${1:-300}
B=${2:-target/debug}
D=$(mktemp -d /tmp/flotilla-massif-XXXX)
"$B/hubd" --data-dir "$D/hub" init --listen 127.0.0.1:0 >/dev/null
valgrind --tool=massif --massif-out-file="$D/massif.out" --threshold=0.5 \
  "$B/hubd" --data-dir "$D/hub" run 2>"$D/hub.log" &
HUB=$!
for _ in $(seq 1 600); do [ -f "$D/hub/hub.addr" ] && break; sleep 0.1; done
TOKEN=$("$B/hubd" --data-dir "$D/hub" token create --role agent --uses $((N + 5)) --ttl 1h --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
mkdir -p "$D/agents"
FLOTILLA_TOKEN=$TOKEN RUST_LOG=error timeout 400 "$B/agentd" --data-dir "$D/agents" swarm --count "$N" \
  >"$D/swarm.out" 2>"$D/swarm.log" &
SWARM=$!
for _ in $(seq 1 3000); do grep -q all_connected "$D/swarm.out" 2>/dev/null && break; sleep 0.1; done
grep -q all_connected "$D/swarm.out" || echo "not every agent connected; see $D/swarm.log" >&2
sleep 40 # metrics rounds at 5 s, so the profile is of a steady fleet
kill -TERM "$HUB"
wait "$HUB"
kill "$SWARM" 2>/dev/null
wait "$SWARM" 2>/dev/null
echo "profile: $D/massif.out (ms_print $D/massif.out)"
