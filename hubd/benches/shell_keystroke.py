"""Keystroke round trip: a key typed into `flotilla shell` (through a real hub to a real agent) and
into `ssh -tt` (to a throwaway sshd on 127.0.0.1, see local_sshd.py), until its echo is back,
interleaved in one run.

Both clients run on a PTY of this script's (so both put it in raw mode, as for a person), both
run `cat` on a PTY on the far side as the same account (local_sshd.py's throwaway account with a
plain /bin/sh when run as root), so the echo comes from the far PTY's line discipline: what is
timed is the two transports, not a program. One key is in flight at a time; every 40 keys a
newline (not timed) keeps the line short.

    cargo build --release --workspace && python3 hubd/benches/shell_keystroke.py [--keys 1000]
"""
import argparse, os, select, signal, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_sshd import LocalSshd

ap = argparse.ArgumentParser()
ap.add_argument("--keys", type=int, default=1000, help="timed keys per client")
ap.add_argument("--port", type=int, default=2298)
ap.add_argument("--bin-dir", help="where hubd, agentd and flotilla are (default target/release)")
args = ap.parse_args()
B = args.bin_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release")
sshd = LocalSshd(args.port, prefix="shell-keys-")
d = sshd.dir
hub = f"{d}/hub"
subprocess.run([f"{B}/hubd", "init", "--data-dir", hub, "--listen", "127.0.0.1:0"], check=True, capture_output=True)
hp = subprocess.Popen([f"{B}/hubd", "--data-dir", hub, "run"], stderr=subprocess.DEVNULL)
while not os.path.exists(f"{hub}/hub.addr"): time.sleep(0.05)
tok = subprocess.run([f"{B}/hubd", "--data-dir", hub, "token", "create", "--role", "agent", "--uses", "1"],
                     check=True, capture_output=True, text=True).stdout.strip()
subprocess.run([f"{B}/agentd", "--data-dir", f"{d}/a", "enroll", "--name", "one", "--token", tok],
               check=True, capture_output=True)
user = sshd.user or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
open(f"{d}/a/agent.toml", "w").write(f'shell = "on"\nshell_user = "{user}"\n')
agent = subprocess.Popen([f"{B}/agentd", "--data-dir", f"{d}/a", "run"], stderr=subprocess.DEVNULL)
login = f"{hub}/admin"


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


# Start both and check each echoes before timing anything.
for _ in range(200):
    r = subprocess.run([f"{B}/flotilla", "--no-mux", "--login-dir", login, "shell", "one", "--", "true"],
                       capture_output=True)
    if r.returncode == 0: break
    time.sleep(0.05)
clients = {
    "flotilla shell (hub)": OnPty([f"{B}/flotilla", "--no-mux", "--login-dir", login, "shell", "one", "--", "cat"]),
    "ssh -tt": OnPty(sshd.ssh + ["-tt", "bench", "cat"]),
}

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
for name, c in clients.items():
    c.close()
for name, v in res.items():
    v.sort()
    print(f"{name:22s} p50 {v[len(v)//2]*1e3:6.3f} ms  p90 {v[int(len(v)*0.9)]*1e3:6.3f} ms  "
          f"p99 {v[int(len(v)*0.99)-1]*1e3:6.3f} ms  ({len(v)} keys)")
print("load", os.getloadavg())
for p in (agent, hp):
    p.send_signal(signal.SIGTERM); p.wait(timeout=30)
sshd.close()
