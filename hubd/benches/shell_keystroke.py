"""Keystroke round trip: a key typed into `flotilla shell` (through a real hub to a real agent) and
into `ssh -tt` (to a throwaway sshd on 127.0.0.1, see local_sshd.py), until its echo is back,
interleaved in one run.

Both clients run on a PTY of this script's (so both put it in raw mode, as for a person), both
run `cat` on a PTY on the far side as the same account (local_sshd.py's throwaway account with a
plain /bin/sh when run as root), so the echo comes from the far PTY's line discipline: what is
timed is the two transports, not a program. One key is in flight at a time; every 40 keys a
newline (not timed) keeps the line short.

    cargo build --release --workspace && python3 hubd/benches/shell_keystroke.py [--keys 1000]

`--baseline-bin-dir DIR` adds a third client: another build's flotilla through its own hub and
agent (same account, same machine), so that a change is measured against the build before it in
the same run, both beside ssh.

`--perf` also attaches `perf stat` (software counters only) to every process on the way during
the timed keys and prints, per keystroke, each one's CPU time and context switches (a process
that sleeps between keys switches out once per wake-up): the per-hop breakdown in docs/shell.md.
"""
import argparse, os, select, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_sshd import LocalSshd

ap = argparse.ArgumentParser()
ap.add_argument("--keys", type=int, default=1000, help="timed keys per client")
ap.add_argument("--port", type=int, default=2298)
ap.add_argument("--bin-dir", help="where hubd, agentd and flotilla are (default target/release)")
ap.add_argument("--baseline-bin-dir", help="another build's hubd, agentd and flotilla, timed too")
ap.add_argument("--perf", action="store_true", help="CPU time and context switches per key per process")
args = ap.parse_args()
B = args.bin_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release")
sshd = LocalSshd(args.port, prefix="shell-keys-")
d = sshd.dir
user = sshd.user or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
daemons = []


processes = {}  # for --perf: name -> pids


def fleet(bins, name):
    """A hub and one agent from `bins`; returns the admin login directory."""
    hub = f"{d}/{name}-hub"
    subprocess.run([f"{bins}/hubd", "init", "--data-dir", hub, "--listen", "127.0.0.1:0"], check=True,
                   capture_output=True)
    daemons.append(subprocess.Popen([f"{bins}/hubd", "--data-dir", hub, "run"], stderr=subprocess.DEVNULL))
    processes[f"{name}: hubd"] = [daemons[-1].pid]
    while not os.path.exists(f"{hub}/hub.addr"): time.sleep(0.05)
    tok = subprocess.run([f"{bins}/hubd", "--data-dir", hub, "token", "create", "--role", "agent", "--uses", "1"],
                         check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([f"{bins}/agentd", "--data-dir", f"{d}/{name}-a", "enroll", "--name", "one", "--token", tok],
                   check=True, capture_output=True)
    open(f"{d}/{name}-a/agent.toml", "w").write(f'shell = "on"\nshell_user = "{user}"\n')
    daemons.append(subprocess.Popen([f"{bins}/agentd", "--data-dir", f"{d}/{name}-a", "run"],
                                    stderr=subprocess.DEVNULL))
    processes[f"{name}: agentd"] = [daemons[-1].pid]
    login = f"{hub}/admin"
    for _ in range(200):
        r = subprocess.run([f"{bins}/flotilla", "--no-mux", "--login-dir", login, "shell", "one", "--", "true"],
                           capture_output=True)
        if r.returncode == 0: break
        time.sleep(0.05)
    return login


class OnPty:
    """A client on a PTY of ours, as in a terminal; `key` times one key's echo."""

    def __init__(self, argv):
        self.master, slave = os.openpty()
        os.set_blocking(self.master, True)
        env = dict(os.environ, TERM="xterm")
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.seen = b""

    def wait_for(self, needle, deadline_s=20):
        end = time.monotonic() + deadline_s
        while needle not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {needle!r}; seen {self.seen[-200:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                self.seen += os.read(self.master, 65536)
        self.seen = self.seen[self.seen.index(needle) + len(needle):]

    def key(self, b):
        t = time.perf_counter()
        os.write(self.master, b)
        self.wait_for(b)
        return time.perf_counter() - t

    def close(self):
        os.write(self.master, b"\x04")  # ^D: cat ends, and with it the session
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)


# Start every client and check each echoes before timing anything.
def flotilla_client(bins, name):
    login = fleet(bins, name)
    client = OnPty([f"{bins}/flotilla", "--no-mux", "--login-dir", login, "shell", "one", "--", "cat"])
    processes[f"{name}: flotilla"] = [client.proc.pid]
    return client


clients = {"flotilla shell (hub)": flotilla_client(B, "this")}
if args.baseline_bin_dir:
    clients["flotilla (baseline)"] = flotilla_client(args.baseline_bin_dir, "base")
clients["ssh -tt"] = OnPty(sshd.ssh + ["-tt", "bench", "cat"])
processes["ssh"] = [clients["ssh -tt"].proc.pid]


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        out += map(int, kids)
        todo += map(int, kids)
    return out


def start_perf():
    """perf stat on each process on the way (the sshd session's own processes, not cat)."""
    comm = lambda p: open(f"/proc/{p}/comm").read().strip()
    processes["sshd"] = [p for p in descendants(sshd.proc.pid) if comm(p).startswith("sshd")]
    return {name: subprocess.Popen(["perf", "stat", "-x", ",", "-e", "task-clock,context-switches",
                                    "-p", ",".join(map(str, pids)), "-o", f"{d}/perf.{i}"],
                                   stderr=subprocess.DEVNULL)
            for i, (name, pids) in enumerate(processes.items())}


def report_perf(perf, keys):
    for p in perf.values():
        p.send_signal(signal.SIGINT)
    for p in perf.values():
        p.wait(timeout=30)
    print(f"per key ({keys} keys per client), perf stat software counters:")
    for i, name in enumerate(perf):
        vals = {}
        for l in open(f"{d}/perf.{i}"):
            f = l.strip().split(",")
            if len(f) > 2 and f[0][:1].isdigit():
                vals[f[2]] = float(f[0])
        print(f"  {name:22s} cpu {vals.get('task-clock', 0) * 1e3 / keys:7.1f} us  "
              f"context switches {vals.get('context-switches', 0) / keys:5.2f}")

def newline(c, line):
    # The echo of the newline, then cat's copy of the line: nothing of it is left to be mistaken
    # for a later key's echo.
    os.write(c.master, b"\r")
    c.wait_for(b"\r\n")
    c.wait_for(line + b"\r\n")


for c in clients.values():
    c.key(b"w")  # first echo: the session is up
    newline(c, b"w")
res = {k: [] for k in clients}
perf = start_perf() if args.perf else None
if perf:
    time.sleep(1)  # perf attached
keys = b"abcdefghijklmnopqrstuvwxyz0123456789"
line = b""
for i in range(args.keys):
    k = keys[i % len(keys):i % len(keys) + 1]
    line += k
    for name, c in clients.items():
        res[name].append(c.key(k))
    if len(line) == 40:
        for c in clients.values():
            newline(c, line)
        line = b""
if perf:
    report_perf(perf, args.keys)
for name, c in clients.items():
    c.close()
for name, v in res.items():
    v.sort()
    print(f"{name:22s} p50 {v[len(v)//2]*1e3:6.3f} ms  p90 {v[int(len(v)*0.9)]*1e3:6.3f} ms  "
          f"p99 {v[int(len(v)*0.99)-1]*1e3:6.3f} ms  ({len(v)} keys)")
print("load", os.getloadavg())
for p in reversed(daemons):
    p.send_signal(signal.SIGTERM); p.wait(timeout=30)
sshd.close()
