#!/usr/bin/env python3
"""Fleet-scale benchmark of a real hub: RSS per agent, reconnect storm, idle CPU, agentd footprint.

Drives the release binaries over loopback only: `hubd` and `agentd swarm` (N agents in one process,
each with its own key, certificate and QUIC connection, sending real metrics messages).

    cargo build --release --workspace
    python3 hubd/benches/fleet_bench.py [--sizes 1000,5000,10000,20000] [--restart 5000] [--crash 5000]

`--crash N`: with N agents connected, `kill -9` the hub, start it again on the same port and time
from the new hub listening until every agent is back (stateless resets tell them at once), with
the hub's and the swarm's CPU per reconnect (idle traffic taken out).

`NICE=-10` runs hub and swarm under `nice -n -10`, for a machine shared with other work.

The swarm's agents all dial from 127.0.0.1, where a real fleet dials from one address per host:
the hub runs with `max_handshakes_per_source` raised to 1,000,000 (FLOTILLA_HUB_* environment), so
that the per-address limit binds no more than it would on distinct hosts. `PER_SOURCE=64` measures
the default instead (a whole fleet behind one NAT address).

Every wait is bounded; everything runs on 127.0.0.1 and stops by itself. Prints one line per figure
and a JSON summary at the end.
"""
import argparse, shutil, json, os, select, signal, subprocess, sys, tempfile, time

TARGET = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release")
CLK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def udp_datagrams_sent():
    """UDP datagrams this host has sent (all sockets: on loopback, the swarm's and the hub's)."""
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))["OutDatagrams"]


def cpu_over(pid, seconds):
    """Average cores used by pid over `seconds`."""
    a, t = cpu_s(pid), time.time()
    time.sleep(seconds)
    return (cpu_s(pid) - a) / (time.time() - t)


class Hub:
    def __init__(self, data, bin_dir, listen):
        self.data, self.bin = data, bin_dir
        env = dict(os.environ, RUST_LOG="warn", FLOTILLA_HUB_MAX_HANDSHAKES_PER_SOURCE=os.environ.get("PER_SOURCE", "1000000"))
        args = [f"{bin_dir}/hubd", "--data-dir", data, "run"] + (["--listen", listen] if listen else [])
        addr_file = os.path.join(data, "hub.addr")
        if os.path.exists(addr_file):
            os.remove(addr_file)
        self.started = time.time()
        self.proc = subprocess.Popen(niced(args), env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "..", "hub.log"), "a"))
        deadline = time.time() + 30
        while not os.path.exists(addr_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("hub did not start; see hub.log")
            time.sleep(0.005)
        self.listening = time.time()
        self.addr = open(addr_file).read().strip()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def niced(args):
    """`args` under `nice -n $NICE` when NICE is set: on a machine shared with other work, the
    bench's own processes then get the cores they would have on a quiet one."""
    nice = os.environ.get("NICE")
    return (["nice", "-n", nice] if nice else []) + args


def hubd(bin_dir, data, *args):
    return subprocess.run([f"{bin_dir}/hubd", "--data-dir", data, *args], check=True, capture_output=True, text=True).stdout


class Swarm:
    def __init__(self, bin_dir, dir, count, token):
        self.proc = subprocess.Popen(
            niced([f"{bin_dir}/agentd", "--data-dir", dir, "swarm", "--count", str(count)]),
            env=dict(os.environ, RUST_LOG=os.environ.get("SWARM_LOG", "error"), **({"FLOTILLA_TOKEN": token} if token else {})),
            stdout=subprocess.PIPE, stderr=open(os.path.join(dir, "swarm.log"), "a"), text=True)

    def next_event(self, name, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.time()))
            if not r:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            ev = json.loads(line)
            if ev["event"] == name:
                return ev
        raise SystemExit(f"swarm: no {name} event within {timeout} s")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000,10000,20000")
    ap.add_argument("--restart", type=int, default=5000)
    ap.add_argument("--crash", type=int, default=0, help="kill -9 the hub under this many agents and time their return")
    ap.add_argument("--idle-window", type=float, default=30.0)
    ap.add_argument("--bin", default=os.path.abspath(TARGET))
    ap.add_argument("--skip-agentd", action="store_true", help="skip the 75 s agentd-alone measurement")
    ap.add_argument("--reuse", metavar="DIR", help="a previous run's directory: its hub and enrolled swarm are reused, no enrolment")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    top = args.reuse or tempfile.mkdtemp(prefix="flotilla-bench-")
    data, swarm_dir = os.path.join(top, "hub"), os.path.join(top, "agents")
    results = {"machine": os.uname().nodename, "cores": os.cpu_count()}
    if args.reuse:
        listen = open(os.path.join(data, "hub.addr")).read().strip()
        token = None  # the swarm's agents are enrolled already
    else:
        os.makedirs(swarm_dir)
        hubd(args.bin, data, "init", "--listen", "127.0.0.1:0")
        hub = Hub(data, args.bin, None)
        listen = hub.addr
        token = json.loads(hubd(args.bin, data, "token", "create", "--role", "agent", "--uses", str(max(sizes + [args.restart]) + 10), "--ttl", "2h", "--json"))["token"]

        # Enrol the largest swarm once (identities are reused by the smaller runs).
        t = time.time()
        sw = Swarm(args.bin, swarm_dir, max(sizes + [args.restart]), token)
        sw.next_event("all_connected", 1800)
        results["enrol_and_connect_s"] = round(time.time() - t, 1)
        sw.stop()
        hub.stop()

    for n in sizes:
        hub = Hub(data, args.bin, listen)
        time.sleep(2)
        base = rss_kib(hub.proc.pid)
        sw = Swarm(args.bin, swarm_dir, n, token)
        sw.next_event("all_connected", 600)
        time.sleep(10)  # let the first metrics round and allocator settle
        rss = rss_kib(hub.proc.pid)
        sent, t = udp_datagrams_sent(), time.time()
        hub_cpu = cpu_over(hub.proc.pid, args.idle_window)
        per_agent_s = (udp_datagrams_sent() - sent) / (time.time() - t) / n
        swarm_cpu = cpu_s(sw.proc.pid)
        per_agent = (rss - base) / n
        print(f"{n:>6} agents: hub RSS {rss/1024:.1f} MiB (idle hub {base/1024:.1f} MiB) = {per_agent:.1f} KiB per agent; "
              f"hub CPU {hub_cpu*100:.1f}% of a core with metrics every 5 s; "
              f"{per_agent_s:.2f} datagrams per agent and second, both ways together", flush=True)
        results[f"agents_{n}"] = {"hub_rss_kib": rss, "hub_base_rss_kib": base, "kib_per_agent": round(per_agent, 1), "hub_cpu_cores": round(hub_cpu, 3), "datagrams_per_agent_s": round(per_agent_s, 3)}
        if n == args.restart:
            # Graceful restart with the swarm connected: time from the new hub's start to all back.
            ts = time.time()
            hub.stop()
            t0 = time.time()
            stop_s = t0 - ts
            hub = Hub(data, args.bin, listen)
            peak, last = 0.0, (cpu_s(hub.proc.pid), time.time())
            deadline = time.time() + 120
            sw.proc.stdout  # events are line-buffered JSON
            while time.time() < deadline:
                r, _, _ = select.select([sw.proc.stdout], [], [], 0.2)
                now = (cpu_s(hub.proc.pid), time.time())
                peak = max(peak, (now[0] - last[0]) / max(1e-3, now[1] - last[1]))
                last = now
                if r:
                    ev = json.loads(sw.proc.stdout.readline())
                    if ev["event"] == "all_connected":
                        took = ev["at_ms"] / 1000 - t0
                        print(f"restart: {n} agents reconnected {took:.2f} s after the hub started (the old hub took {stop_s:.2f} s to stop); peak hub CPU {peak*100:.0f}%; admission curve in {swarm_dir}/swarm.log", flush=True)
                        results["restart"] = {"agents": n, "seconds": round(took, 2), "stop_seconds": round(stop_s, 2), "peak_hub_cpu_cores": round(peak, 2)}
                        break
        if n == args.crash:
            # Idle CPU first, to take the steady metrics and keep-alive traffic out of the figures.
            idle_sw = cpu_over(sw.proc.pid, 3)
            hub.proc.kill()
            hub.proc.wait(timeout=30)
            hub = Hub(data, args.bin, listen)
            t0 = hub.listening
            hub0, sw0 = cpu_s(hub.proc.pid), cpu_s(sw.proc.pid)
            ev = sw.next_event("all_connected", 120)
            took = ev["at_ms"] / 1000 - t0
            hub_ms = (cpu_s(hub.proc.pid) - hub0 - hub_cpu * took) * 1000 / n
            sw_ms = (cpu_s(sw.proc.pid) - sw0 - idle_sw * took) * 1000 / n
            print(f"crash: {n} agents back {took:.2f} s after the restarted hub listened (kill -9, same port); "
                  f"CPU per reconnect: hub {hub_ms:.2f} ms, swarm {sw_ms:.2f} ms", flush=True)
            results["crash"] = {"agents": n, "seconds": round(took, 2), "hub_ms_per_reconnect": round(hub_ms, 3), "swarm_ms_per_reconnect": round(sw_ms, 3)}
        sw.stop()
        hub.stop()

    if args.skip_agentd:
        print(json.dumps(results))
        return
    # agentd on its own, real collector, 5 s interval.
    hub = Hub(data, args.bin, listen)
    adir = os.path.join(top, "solo")
    if token is None or os.path.exists(adir):
        shutil.rmtree(adir, ignore_errors=True)
        token = json.loads(hubd(args.bin, data, "token", "create", "--role", "agent", "--uses", "1", "--json"))["token"]
    subprocess.run([f"{args.bin}/agentd", "--data-dir", adir, "enroll", "--name", "solo"], check=True, capture_output=True, env=dict(os.environ, FLOTILLA_TOKEN=token))
    agent = subprocess.Popen([f"{args.bin}/agentd", "--data-dir", adir, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(15)
    cpu = cpu_over(agent.pid, 60)
    rss = rss_kib(agent.pid)
    print(f"agentd alone: RSS {rss/1024:.1f} MiB, CPU {cpu*100:.2f}% of a core at the 5 s interval", flush=True)
    results["agentd"] = {"rss_kib": rss, "cpu_cores": round(cpu, 4)}
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    hub.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
