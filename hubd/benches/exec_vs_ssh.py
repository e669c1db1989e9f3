"""exec latency side by side: `flotilla exec` through `flotilla mux`, `flotilla --no-mux exec`,
`ssh` over a ControlMaster and a new `ssh` connection, interleaved, against a throwaway sshd on
127.0.0.1 (needs openssh-server and -client; see local_sshd.py) and a real hub with one agent.

    cargo build --release --workspace && python3 hubd/benches/exec_vs_ssh.py [--runs 200] [--floor]

`--floor` then times the same exec from inside one process (tui/benches/mux_floor.rs), which shows
what the hub, agent and mux cost apart from starting a client.
"""
import argparse, os, shutil, subprocess, sys, time, signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_sshd import LocalSshd

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=200)
ap.add_argument("--port", type=int, default=2299)
ap.add_argument("--floor", action="store_true",
                help="also time exec round trips through the mux from one process (tui/benches/mux_floor.rs)")
args = ap.parse_args()
B = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release")
print(f"client: {B}/flotilla")
sshd = LocalSshd(args.port, prefix="exec-vs-ssh-")
# Every run uses a copy: `--floor` runs `cargo bench`, which may relink target/release/flotilla
# while the stack is up.
CLIENT = f"{sshd.dir}/flotilla"
shutil.copy2(f"{B}/flotilla", CLIENT)
d = sshd.dir
SSH = sshd.ssh
hub = f"{d}/hub"
subprocess.run([f"{B}/hubd", "init", "--data-dir", hub, "--listen", "127.0.0.1:0"], check=True, capture_output=True)
hp = subprocess.Popen([f"{B}/hubd", "--data-dir", hub, "run"], stderr=subprocess.DEVNULL)
while not os.path.exists(f"{hub}/hub.addr"): time.sleep(0.05)
tok = subprocess.run([f"{B}/hubd", "--data-dir", hub, "token", "create", "--role", "agent", "--uses", "1"], check=True, capture_output=True, text=True).stdout.strip()
subprocess.run([f"{B}/agentd", "--data-dir", f"{d}/a", "enroll", "--name", "one", "--token", tok], check=True, capture_output=True)
ap = subprocess.Popen([f"{B}/agentd", "--data-dir", f"{d}/a", "run", "--exec", "any"], stderr=subprocess.DEVNULL)
login = f"{hub}/admin"
sock = f"{d}/mux.sock"
mp = subprocess.Popen([CLIENT, "--login-dir", login, "--mux-socket", sock, "mux"], stderr=subprocess.DEVNULL)
fl = [CLIENT, "--login-dir", login, "--mux-socket", sock]
for _ in range(200):
    if subprocess.run(fl + ["exec", "one", "--", "true"], capture_output=True).returncode == 0: break
    time.sleep(0.05)
assert subprocess.run(fl + ["mux", "--check"], capture_output=True).returncode == 0
cm = f"{d}/cm.sock"
sp = subprocess.Popen(SSH + ["-M", "-S", cm, "-N", "bench"])
while not os.path.exists(cm): time.sleep(0.05)
cmds = {
    "flotilla exec via mux": fl + ["exec", "one", "--", "true"],
    "flotilla exec --no-mux": fl + ["--no-mux", "exec", "one", "--", "true"],
    "ssh ControlMaster": SSH + ["-S", cm, "bench", "true"],
    # Process start alone, for reference: what each client costs before it says a word.
    "flotilla --version": fl + ["--version"],
    "ssh -V": ["ssh", "-V"],
    # What this harness costs to start and reap any process.
    "/usr/bin/true": ["/usr/bin/true"],
}
res = {k: [] for k in cmds}
for i in range(args.runs):
    for k, c in cmds.items():
        t = time.perf_counter(); r = subprocess.run(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); res[k].append(time.perf_counter() - t)
        assert r.returncode == 0, (k, r.returncode)
new = []
for i in range(30):
    t = time.perf_counter(); subprocess.run(SSH + ["bench", "true"], check=True); new.append(time.perf_counter() - t)
res["ssh new connection"] = new
for k, v in res.items():
    v.sort(); print(f"{k:26s} p50 {v[len(v)//2]*1e3:7.2f} ms  p99 {v[int(len(v)*0.99)-1]*1e3:7.2f} ms  ({len(v)} runs)")
if args.floor:
    # The exec round trip with no client process to start: the least a one-shot command can cost.
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    subprocess.run(["cargo", "bench", "-q", "-p", "flotilla-tui", "--bench", "mux_floor", "--",
                    sock, "one", str(args.runs)], cwd=root, check=True)
print("load", os.getloadavg())
for p in (sp, mp, ap, hp):
    p.send_signal(signal.SIGTERM); p.wait(timeout=30)
sshd.close()
