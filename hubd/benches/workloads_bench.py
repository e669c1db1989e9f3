#!/usr/bin/env python3
"""`flotilla ps all` over a fleet of swarm agents reporting synthetic containers, on a real hub.

Drives the release binaries over loopback only: `hubd`, `agentd swarm --containers C` (N agents in
one process, each with its own key, certificate and QUIC connection, sending real
`MetricsFrame::Workloads` deltas every metrics interval) and `flotilla ps`.

    cargo build --release -p flotilla-hubd -p flotilla-agentd -p flotilla-tui --bins
    python3 hubd/benches/workloads_bench.py [--agents 1000] [--containers 20] [--runs 10]

Figures:
- `ps all`: time from starting `flotilla ps all` (a fresh process: connect, handshake, query) to its
  first row on stdout, and to its last row (end of output), median and max of `--runs` runs.
- hub memory per container: the hub's RSS with the swarm reporting C containers per agent, minus
  its RSS with the same swarm reporting none (each on a fresh hub, after the same settling time),
  divided by N × C. Both include the stats every running container sends each interval.

Every wait is bounded; everything runs on 127.0.0.1 and stops by itself. Prints one line per figure
and a JSON summary at the end.
"""
import argparse, json, os, select, signal, statistics, subprocess, tempfile, time

TARGET = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Hub:
    def __init__(self, data, bin_dir, listen):
        env = dict(os.environ, RUST_LOG="warn", FLOTILLA_HUB_MAX_HANDSHAKES_PER_SOURCE="1000000")
        args = [f"{bin_dir}/hubd", "--data-dir", data, "run"] + (["--listen", listen] if listen else [])
        addr_file = os.path.join(data, "hub.addr")
        if os.path.exists(addr_file):
            os.remove(addr_file)
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(data, "..", "hub.log"), "a"))
        deadline = time.time() + 30
        while not os.path.exists(addr_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("hub did not start; see hub.log")
            time.sleep(0.01)
        self.addr = open(addr_file).read().strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


class Swarm:
    def __init__(self, bin_dir, dir, count, containers, token):
        self.proc = subprocess.Popen(
            [f"{bin_dir}/agentd", "--data-dir", dir, "swarm", "--count", str(count),
             "--containers", str(containers)],
            env=dict(os.environ, RUST_LOG="error", **({"FLOTILLA_TOKEN": token} if token else {})),
            stdout=subprocess.PIPE, stderr=open(os.path.join(dir, "swarm.log"), "a"), text=True)

    def all_connected(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.time()))
            if not r:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            if json.loads(line)["event"] == "all_connected":
                return
        raise SystemExit(f"swarm: not all connected within {timeout} s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def flotilla(bin_dir, admin, *args):
    return [f"{bin_dir}/flotilla", "--no-mux", "--login-dir", admin, "--hub", HUB[0], *args]


# The hub's address once listening (the admin login made by `hubd init` names port 0).
HUB = [""]


def ps_timed(bin_dir, admin):
    """Runs `flotilla ps all`; returns (seconds to first row, seconds to last row, rows)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(flotilla(bin_dir, admin, "ps", "all"), stdout=subprocess.PIPE)
    first, rows, header = None, 0, True
    for line in proc.stdout:
        if header:
            header = False
            continue
        if first is None:
            first = time.perf_counter() - t0
        rows += 1
    last = time.perf_counter() - t0
    if proc.wait(timeout=60) != 0:
        raise SystemExit("flotilla ps failed")
    return first, last, rows


def wait_inventory(bin_dir, admin, want, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(flotilla(bin_dir, admin, "ps", "all", "--all", "--json"),
                             capture_output=True, text=True)
        if out.returncode == 0 and len(json.loads(out.stdout)) == want:
            return
        time.sleep(1)
    raise SystemExit(f"the hub did not list {want} containers within {timeout} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--settle", type=float, default=20.0, help="seconds before reading RSS")
    ap.add_argument("--bin", default=os.path.abspath(TARGET))
    args = ap.parse_args()
    n, c = args.agents, args.containers
    top = tempfile.mkdtemp(prefix="flotilla-workloads-bench-")
    data, swarm_dir = os.path.join(top, "hub"), os.path.join(top, "agents")
    os.makedirs(swarm_dir)
    init = json.loads(subprocess.run([f"{args.bin}/hubd", "--data-dir", data, "init", "--listen", "127.0.0.1:0", "--json"],
                                     check=True, capture_output=True, text=True).stdout)
    admin = init["admin_dir"]
    hub = Hub(data, args.bin, None)
    listen = hub.addr
    HUB[0] = listen
    token = json.loads(subprocess.run([f"{args.bin}/hubd", "--data-dir", data, "token", "create", "--role", "agent",
                                       "--uses", str(n + 10), "--ttl", "2h", "--json"],
                                      check=True, capture_output=True, text=True).stdout)["token"]
    t = time.time()
    sw = Swarm(args.bin, swarm_dir, n, 0, token)
    sw.all_connected(1800)
    print(f"enrolled and connected {n} agents in {time.time() - t:.1f} s", flush=True)
    results = {"machine": os.uname().nodename, "cores": os.cpu_count(), "agents": n, "containers_per_agent": c}

    # Baseline: a fresh hub, the same swarm reporting no containers.
    sw.stop()
    hub.stop()
    hub = Hub(data, args.bin, listen)
    sw = Swarm(args.bin, swarm_dir, n, 0, None)
    sw.all_connected(600)
    time.sleep(args.settle)
    base = rss_kib(hub.proc.pid)
    sw.stop()
    hub.stop()

    hub = Hub(data, args.bin, listen)
    sw = Swarm(args.bin, swarm_dir, n, c, None)
    sw.all_connected(600)
    wait_inventory(args.bin, admin, n * c, 120)
    time.sleep(args.settle)
    rss = rss_kib(hub.proc.pid)
    per = (rss - base) * 1024 / (n * c)
    print(f"hub RSS {rss / 1024:.1f} MiB with {n} × {c} containers, {base / 1024:.1f} MiB with none: "
          f"{per:.0f} bytes per container", flush=True)
    results["hub_rss_kib"], results["hub_base_rss_kib"], results["bytes_per_container"] = rss, base, round(per)

    firsts, lasts = [], []
    for _ in range(args.runs):
        first, last, rows = ps_timed(args.bin, admin)
        want = n * c * 4 // 5  # the swarm stops one container in five; ps lists running ones
        if rows != want:
            raise SystemExit(f"ps listed {rows} rows, expected {want}")
        firsts.append(first)
        lasts.append(last)
    print(f"flotilla ps all, {rows} rows from {n} agents: first row {statistics.median(firsts) * 1000:.0f} ms "
          f"(max {max(firsts) * 1000:.0f}), last row {statistics.median(lasts) * 1000:.0f} ms "
          f"(max {max(lasts) * 1000:.0f}), median of {args.runs}", flush=True)
    results["ps_rows"] = rows
    results["ps_first_row_ms"] = {"median": round(statistics.median(firsts) * 1000, 1), "max": round(max(firsts) * 1000, 1)}
    results["ps_last_row_ms"] = {"median": round(statistics.median(lasts) * 1000, 1), "max": round(max(lasts) * 1000, 1)}
    sw.stop()
    hub.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
