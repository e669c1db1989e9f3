#!/bin/bash
# exec latency through the mux against a hub whose registry holds a fleet_bench run's agents (a copy
# of that run's hub directory), for the hubd binary in $1 and the fleet_bench directory in $2;
# agent and CLI from target/release; SELECTOR (default `one`, the one live agent, also `o*` or its
# label `bench=one`) picks it. Usage:
#   hubd/benches/exec_big_registry.sh target/release/hubd /tmp/flotilla-bench-XXXX [SELECTOR]
set -e
H=$(realpath "$1"); FLEET=$2; SEL=${3:-one}; B=$(dirname "$(realpath "$0")")/../../target/release; D=$(mktemp -d)
cp -a "$FLEET/hub" $D/hub
rm -f $D/hub/hub.addr $D/hub/*.sock
$H --data-dir $D/hub run --listen 127.0.0.1:0 2>/dev/null & HP=$!
while [ ! -f $D/hub/hub.addr ]; do sleep 0.05; done
tok=$($H --data-dir $D/hub token create --role agent --uses 1)
$B/agentd --data-dir $D/a enroll --name one --label bench=one --token $tok >/dev/null
$B/agentd --data-dir $D/a run --exec any 2>/dev/null & AP=$!
F="$B/flotilla --login-dir $D/hub/admin --mux-socket $D/mux.sock"
$F mux 2>/dev/null & MP=$!
for i in $(seq 100); do $F exec one -- true >/dev/null 2>&1 && break; sleep 0.1; done
n=$(sqlite3 "$D/hub/hub.db" "SELECT count(*) FROM identities WHERE role = 'agent'" 2>/dev/null || echo "?")
python3 - "$F" "$n" "$SEL" <<'PY'
import subprocess, sys, time
sel = sys.argv[3]
cmd = sys.argv[1].split() + ["exec", sel, "--", "true"]
n = sys.argv[2]
ts = []
for _ in range(100):
    t = time.perf_counter(); subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True); ts.append(time.perf_counter() - t)
ts.sort(); print(f"exec {sel} -- true via mux, {n} agents registered: p50 {ts[50]*1e3:.2f} ms p99 {ts[98]*1e3:.2f} ms")
PY
kill $MP $AP $HP; wait 2>/dev/null; rm -rf $D
