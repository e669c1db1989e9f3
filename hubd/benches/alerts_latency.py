#!/usr/bin/env python3
"""Alert latency: from a threshold crossed on an agent to the webhook received, on a real hub.

Drives the release binaries over loopback only: `hubd` with 50 alert rules (one of them
`cpu above 90 for 5s` on one agent, the rest never firing) and a webhook receiver with the
default `[notify]` settings, `agentd swarm` (N agents in one process over real QUIC, samples every
`--interval-ms`), and an HTTP receiver in this script on 127.0.0.1 that checks each message's
HMAC signature and notes when it arrived.

    cargo build --release -p flotilla-hubd -p flotilla-agentd
    python3 hubd/benches/alerts_latency.py [--agents 200] [--rounds 10] [--interval-ms 1000]

Each round forces the agent's CPU to 97 % through the swarm's override file (the swarm re-reads
it at every sample), waits for the `firing` webhook, then forces 10 % and waits for `resolved`.
Figures, p50 and max over the rounds:
- fire: webhook received minus the threshold crossed, minus the rule's `for` (5 s). The crossing
  is the hub's: the arrival of the first sample over the line, the alert's `started_ms`, read
  from the hub's database (committed with the notification, so there once the webhook is).
- fire from forced: the same from the moment the value was forced, so it adds the wait for the
  agent's next sample (up to one interval).
- resolve: webhook received minus the moment the value was forced back (no `for` on the way out).
- hub: webhook received minus the transition's `at_ms` (evaluation, outbox commit, send).

Every wait is bounded; everything runs on 127.0.0.1 and stops by itself. Prints one line per figure
and a JSON summary at the end.
"""
import argparse, hashlib, hmac, http.server, json, os, signal, sqlite3, statistics, subprocess, tempfile
import threading, time

TARGET = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release")
SECRET = b"bench-webhook-secret"
FOR_S = 5.0
AGENT = "lat-00000"


class Receiver(http.server.BaseHTTPRequestHandler):
    """Notes (arrival time, alert) for every alert of every signed message."""
    got = []
    cond = threading.Condition()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        at = time.time()
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Flotilla-Signature", ""))
        self.send_response(200 if ok else 401)
        self.end_headers()
        if ok:
            with Receiver.cond:
                for a in json.loads(body)["alerts"]:
                    Receiver.got.append((at, a))
                Receiver.cond.notify_all()

    def log_message(self, *args):
        pass


def wait_alert(rule, state, after, timeout):
    """The first alert of `rule` in `state` received after `after`: (arrival, alert)."""
    deadline = time.time() + timeout
    with Receiver.cond:
        while True:
            for at, a in Receiver.got:
                if at >= after and a["rule"] == rule and a["state"] == state:
                    return at, a
            left = deadline - time.time()
            if left <= 0:
                raise SystemExit(f"no {state} webhook for {rule} within {timeout} s")
            Receiver.cond.wait(left)


def force(path, cpu):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"*": {"cpu_pct": 10, "mem_pct": 20}, AGENT: {"cpu_pct": cpu}}, f)
    os.replace(tmp, path)


def rules(url):
    out = [f'[[receiver]]\nname = "bench"\nkind = "webhook"\nurl = "{url}"\nsecret = "{SECRET.decode()}"\n']
    out.append(f'[[alert]]\nname = "lat"\nkind = "cpu"\nabove = 90.0\nresolve = 50.0\nfor = "{FOR_S:.0f}s"\n'
               f'selector = "{AGENT}"\nseverity = "critical"\n')
    # 49 more that the swarm's random values never reach: evaluated on every sample all the same.
    kinds = [("cpu", "above = 99.99"), ("mem", "above = 99.99"), ("load", "above = 1000.0"),
             ("disk", "above = 99.99"), ("temp", "above = 500.0"), ("net", "above = 1e12"),
             ("swap", "above = 99.99")]
    for i in range(49):
        kind, cond = kinds[i % len(kinds)]
        out.append(f'[[alert]]\nname = "quiet-{i}"\nkind = "{kind}"\n{cond}\nfor = "{i % 5}m"\n')
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--bin", default=os.path.abspath(TARGET))
    args = ap.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    top = tempfile.mkdtemp(prefix="flotilla-alerts-latency-")
    data, swarm_dir = os.path.join(top, "hub"), os.path.join(top, "agents")
    os.makedirs(swarm_dir)
    subprocess.run([f"{args.bin}/hubd", "--data-dir", data, "init", "--listen", "127.0.0.1:0", "--json"],
                   check=True, capture_output=True)
    with open(os.path.join(data, "hub.toml"), "a") as f:
        f.write("\n" + rules(url))
    env = dict(os.environ, RUST_LOG="warn", FLOTILLA_HUB_MAX_HANDSHAKES_PER_SOURCE="1000000")
    hub = subprocess.Popen([f"{args.bin}/hubd", "--data-dir", data, "run"], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(os.path.join(top, "hub.log"), "w"))
    addr = os.path.join(data, "hub.addr")
    deadline = time.time() + 30
    while not os.path.exists(addr):
        if time.time() > deadline or hub.poll() is not None:
            raise SystemExit(f"hub did not start; see {top}/hub.log")
        time.sleep(0.01)
    token = json.loads(subprocess.run(
        [f"{args.bin}/hubd", "--data-dir", data, "token", "create", "--role", "agent",
         "--uses", str(args.agents + 10), "--ttl", "2h", "--json"],
        check=True, capture_output=True, text=True).stdout)["token"]
    overrides = os.path.join(top, "overrides.json")
    force(overrides, 10)
    swarm = subprocess.Popen(
        [f"{args.bin}/agentd", "--data-dir", swarm_dir, "swarm", "--count", str(args.agents),
         "--prefix", "lat", "--metrics-interval-ms", str(args.interval_ms), "--overrides", overrides],
        env=dict(os.environ, RUST_LOG="error", FLOTILLA_TOKEN=token),
        stdout=subprocess.PIPE, stderr=open(os.path.join(top, "swarm.log"), "w"), text=True)
    deadline = time.time() + 600
    while True:
        line = swarm.stdout.readline()
        if not line or time.time() > deadline:
            raise SystemExit(f"swarm did not connect; see {top}/swarm.log")
        if json.loads(line)["event"] == "all_connected":
            break
    print(f"{args.agents} agents connected, samples every {args.interval_ms} ms, 50 rules", flush=True)

    db = sqlite3.connect(f"file:{os.path.join(data, 'hub.db')}?mode=ro", uri=True)

    def started_s():
        (info,) = db.execute("SELECT info FROM alerts WHERE rule = 'lat'").fetchone()
        return json.loads(info)["started_ms"] / 1000

    fire, forced, resolve, hub_fire, hub_resolve = [], [], [], [], []
    try:
        for r in range(args.rounds):
            t0 = time.time()
            force(overrides, 97)
            at, a = wait_alert("lat", "firing", t0, FOR_S + 30)
            forced.append(at - t0 - FOR_S)
            fire.append(at - started_s() - FOR_S)
            hub_fire.append(at - a["at_ms"] / 1000)
            t1 = time.time()
            force(overrides, 10)
            at, a = wait_alert("lat", "resolved", t1, 30)
            resolve.append(at - t1)
            hub_resolve.append(at - a["at_ms"] / 1000)
            print(f"round {r + 1}: fired {fire[-1]:.3f} s after `for` ({forced[-1]:.3f} s from forced), "
                  f"resolved after {resolve[-1]:.3f} s "
                  f"(hub: {hub_fire[-1] * 1000:.0f} / {hub_resolve[-1] * 1000:.0f} ms)", flush=True)
    finally:
        swarm.send_signal(signal.SIGTERM)
        swarm.wait(timeout=60)
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=60)
        server.shutdown()

    def fig(v):
        return {"p50_ms": round(statistics.median(v) * 1000), "max_ms": round(max(v) * 1000)}

    summary = {"machine": os.uname().nodename, "cores": os.cpu_count(), "agents": args.agents,
               "interval_ms": args.interval_ms, "rounds": args.rounds, "for_s": FOR_S,
               "fire_minus_for": fig(fire), "forced_fire_minus_for": fig(forced), "resolve": fig(resolve),
               "hub_fire": fig(hub_fire), "hub_resolve": fig(hub_resolve)}
    print(f"threshold crossed -> webhook, minus `for`: p50 {summary['fire_minus_for']['p50_ms']} ms, "
          f"max {summary['fire_minus_for']['max_ms']} ms (from forced: p50 "
          f"{summary['forced_fire_minus_for']['p50_ms']} ms, max {summary['forced_fire_minus_for']['max_ms']} ms); resolve: p50 {summary['resolve']['p50_ms']} ms, "
          f"max {summary['resolve']['max_ms']} ms; transition -> webhook: p50 {summary['hub_fire']['p50_ms']} ms",
          flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
