#!/usr/bin/env python3
"""Exec through the `flotilla` CLI as an operator types it, against a real hub over loopback.

    cargo build --release --workspace
    python3 hubd/benches/exec_fanout.py [--sizes 1000,5000] [--runs 3] [--bytes 1073741824]

Starts a `hubd`, one `agentd run --exec any` named `one`, then for each size an `agentd swarm
--exec any` of that many agents (one process; identities are reused by the next, larger size, so
`all` is exactly the swarm plus `one`). Measures:

- `flotilla exec one --shell -- 'head -c BYTES /dev/zero' > /dev/null`: wall time, MB/s, and the
  peak RSS of the hub (VmHWM, reset first), the agent and the CLI;
- `flotilla exec all -- true`: wall time until the summary, `--runs` times per size, with the hub's
  RSS and the CPU it used meanwhile.

Every wait is bounded, the whole run stops after `--deadline` seconds, and every process it started
is stopped by pid (SIGTERM, then SIGKILL) before it exits. Prints one line per figure and a JSON
summary at the end.
"""
import argparse, json, os, select, shutil, signal, subprocess, tempfile, threading, time

TARGET = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release")
CLK = os.sysconf("SC_CLK_TCK")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


class Procs:
    """Processes we started, stopped in reverse order."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            self.stop(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--deadline", type=float, default=1200.0, help="seconds for the whole run")
    ap.add_argument("--bin", default=os.path.abspath(TARGET))
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    end = time.time() + args.deadline
    left = lambda: max(1.0, end - time.time())
    b = args.bin
    top = tempfile.mkdtemp(prefix="flotilla-exec-")
    hub_dir, login = os.path.join(top, "hub"), os.path.join(top, "hub", "admin")
    procs = Procs()
    results = {"machine": os.uname().nodename, "cores": os.cpu_count()}

    def run(argv, env=None, timeout=60):
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=min(timeout, left()),
                              env=dict(os.environ, **(env or {}))).stdout

    def exec_cli(cmd):
        """Runs `flotilla exec …`, stdout to /dev/null; returns (seconds, exit code, stderr tail, maxrss KiB)."""
        t0 = time.time()
        p = subprocess.Popen([f"{b}/flotilla", "--login-dir", login, "exec", *cmd], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(top, "cli.err"), "w"))
        deadline = time.time() + min(600, left())
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                p.kill()
                p.wait()
                raise SystemExit(f"flotilla exec {' '.join(cmd)} did not finish in time")
            time.sleep(0.005)
        took = time.time() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        tail = open(os.path.join(top, "cli.err")).read().strip().splitlines()[-1:]
        return took, p.returncode, (tail[0] if tail else ""), usage.ru_maxrss

    try:
        run([f"{b}/hubd", "--data-dir", hub_dir, "init", "--listen", "127.0.0.1:0", "--json"])
        hub = procs.start([f"{b}/hubd", "--data-dir", hub_dir, "run"], env=dict(os.environ, RUST_LOG="warn"),
                          stdout=subprocess.DEVNULL, stderr=open(os.path.join(top, "hub.log"), "w"))
        for _ in range(1500):
            if os.path.exists(os.path.join(hub_dir, "hub.addr")) or hub.poll() is not None:
                break
            time.sleep(0.02)
        if not os.path.exists(os.path.join(hub_dir, "hub.addr")):
            raise SystemExit("hub did not start")
        token = json.loads(run([f"{b}/hubd", "--data-dir", hub_dir, "token", "create", "--role", "agent",
                                "--uses", str(max(sizes + [0]) + 1), "--ttl", "2h", "--json"]))["token"]
        one_dir = os.path.join(top, "one")
        run([f"{b}/agentd", "--data-dir", one_dir, "enroll", "--name", "one"], env={"FLOTILLA_TOKEN": token})
        agent = procs.start([f"{b}/agentd", "--data-dir", one_dir, "run", "--exec", "any"],
                            env=dict(os.environ, RUST_LOG="warn"), stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(top, "one.log"), "w"))
        for _ in range(300):
            if exec_cli(["one", "--", "true"])[1] == 0:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("agent one never ran a command")
        load = open("/proc/loadavg").read().split()[0]
        print(f"machine: {os.cpu_count()} cores, load average {load}; binaries in {b}", flush=True)

        # 1. One agent's output through the hub into /dev/null.
        reset_peak(hub.pid)
        reset_peak(agent.pid)
        hub_before = status_kib(hub.pid, "VmRSS:")
        cmd = ["one", "--shell", "--", f"head -c {args.bytes} /dev/zero"]
        took, code, _, cli_rss = exec_cli(cmd)
        flood = {"bytes": args.bytes, "seconds": round(took, 2), "mb_s": round(args.bytes / took / 1e6),
                 "exit": code, "hub_peak_rss_kib": status_kib(hub.pid, "VmHWM:"), "hub_rss_before_kib": hub_before,
                 "agent_peak_rss_kib": status_kib(agent.pid, "VmHWM:"), "cli_peak_rss_kib": cli_rss}
        print(f"flotilla exec {' '.join(cmd[:2])} -- '{cmd[3]}' > /dev/null: {took:.2f} s, {flood['mb_s']} MB/s "
              f"(exit {code}); peak RSS hub {flood['hub_peak_rss_kib']/1024:.1f} MiB (was {hub_before/1024:.1f}), "
              f"agentd {flood['agent_peak_rss_kib']/1024:.1f} MiB, flotilla {cli_rss/1024:.1f} MiB", flush=True)
        results["flood"] = flood

        # 2. `exec all -- true` on growing swarms.
        swarm_dir = os.path.join(top, "swarm")
        for n in sizes:
            t = time.time()
            sw = procs.start([f"{b}/agentd", "--data-dir", swarm_dir, "swarm", "--exec", "any", "--prefix", "s",
                              "--count", str(n)], env=dict(os.environ, RUST_LOG="error", FLOTILLA_TOKEN=token),
                             stdout=subprocess.PIPE, stderr=open(os.path.join(top, f"swarm-{n}.log"), "w"), text=True)
            deadline = time.time() + min(600, left())
            while True:
                r, _, _ = select.select([sw.stdout], [], [], max(0.0, deadline - time.time()))
                line = sw.stdout.readline() if r else ""
                if not line:
                    raise SystemExit(f"swarm of {n} did not connect within the deadline")
                if json.loads(line).get("event") == "all_connected":
                    break
            up = time.time() - t
            # Keep reading what the swarm reports (reconnects), so its stdout pipe never fills.
            threading.Thread(target=lambda out=sw.stdout: [None for _ in out], daemon=True).start()
            time.sleep(5)  # the first metrics round
            runs = []
            for _ in range(args.runs):
                cpu0 = cpu_s(hub.pid)
                took, code, summary, _ = exec_cli(["all", "--", "true"])
                runs.append({"seconds": round(took, 2), "exit": code, "hub_cpu_s": round(cpu_s(hub.pid) - cpu0, 2),
                             "summary": summary})
            load = open("/proc/loadavg").read().split()[0]
            secs = sorted(r["seconds"] for r in runs)
            print(f"flotilla exec all -- true on {n + 1} agents ({n} swarm + one): "
                  f"{', '.join(f'{s:.2f}' for s in secs)} s (median {secs[len(secs)//2]:.2f}); "
                  f"exit {runs[-1]['exit']}; hub CPU {runs[-1]['hub_cpu_s']} s per run; hub RSS "
                  f"{status_kib(hub.pid, 'VmRSS:')/1024:.0f} MiB; swarm up in {up:.0f} s; load {load}; "
                  f"summary: {runs[-1]['summary']}", flush=True)
            results[f"all_{n + 1}"] = {"runs": runs, "hub_rss_kib": status_kib(hub.pid, "VmRSS:"), "swarm_up_s": round(up, 1)}
            procs.stop(sw)
    finally:
        procs.stop_all()
        shutil.rmtree(top, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
