"""1 GiB agent-to-agent copies through the hub side by side with scp, interleaved round by round:
`transfer_bench --concurrent 1` (a fresh hub and two agents, `flotilla cp src:big.bin dst:one.bin`)
against `scp` to a throwaway sshd account on 127.0.0.1 with its default cipher and with
aes128-gcm@openssh.com, all /dev/shm to /dev/shm; then one `transfer_bench --concurrent 4` run.
Prints every figure, the medians and flotilla's ratio to each scp median, and the CPU time each
spends per GB: flotilla's from its three processes (transfer_bench reads /proc/PID/stat), scp's
from the whole machine's busy time while it runs (ssh, sshd and the kernel; the box is otherwise
idle), since on 2 cores CPU per GB sets the ceiling.

    cargo build --release --workspace && python3 hubd/benches/transfer_vs_scp.py [--rounds 3] [--size-mib 1024]

Needs openssh-server and -client. Run as root it logs in as a throwaway account (see local_sshd.py).
"""
import argparse, os, re, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_sshd import LocalSshd

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--size-mib", type=int, default=1024)
ap.add_argument("--concurrent", type=int, default=4)
ap.add_argument("--port", type=int, default=2296)
args = ap.parse_args()
B = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release")
bench = os.path.join(B, "transfer_bench")
if not os.path.exists(bench):
    sys.exit("target/release/transfer_bench missing: cargo build --release --workspace")
size = args.size_mib * 1024 * 1024


def busy_secs():
    """Whole-machine busy CPU seconds so far (user, nice, system, irq, softirq) from /proc/stat."""
    f = open("/proc/stat").readline().split()[1:]
    return sum(int(f[i]) for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


cpu = {"flotilla cp": [], "scp default": [], "scp aes128-gcm": []}


def flotilla(concurrent):
    out = subprocess.run([bench, "--size-mib", str(args.size_mib), "--concurrent", str(concurrent)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"transfer_bench failed:\n{out.stderr}")
    print("    " + out.stdout.strip().replace("\n", "\n    "))
    if concurrent == 1:
        per = re.search(r"CPU per GB: hub ([0-9.]+) s, source agent ([0-9.]+) s, destination agent ([0-9.]+) s", out.stdout)
        cpu["flotilla cp"].append(sum(float(x) for x in per.groups()))
    return float(re.search(r"1 transfer: +[0-9.]+ s, ([0-9.]+) MB/s", out.stdout).group(1))


sshd = LocalSshd(args.port, prefix="transfer-vs-scp-")
src, dst = f"/dev/shm/scp-src-{os.getpid()}.bin", f"/dev/shm/scp-dst-{os.getpid()}.bin"
try:
    with open(src, "wb") as f:
        for _ in range(0, size, 1 << 24):
            f.write(os.urandom(min(1 << 24, size)))
    os.chmod(src, 0o644)

    def scp(cipher):
        extra = ["-c", cipher] if cipher else []
        t, b = time.perf_counter(), busy_secs()
        subprocess.run(["scp", "-q", "-F", sshd.config] + extra + [src, f"bench:{dst}"], check=True, timeout=600)
        secs, used = time.perf_counter() - t, busy_secs() - b
        subprocess.run(["cmp", src, dst], check=True)
        os.remove(dst)
        mbs = size / 1e6 / secs
        cpu[f"scp {cipher or 'default'}".replace("aes128-gcm@openssh.com", "aes128-gcm")].append(used / (size / 1e9))
        print(f"    scp {cipher or 'default'}: {secs:.2f} s, {mbs:.0f} MB/s, {used / (size / 1e9):.2f} CPU-s per GB (machine)")
        return mbs

    res = {"flotilla cp": [], "scp default": [], "scp aes128-gcm": []}
    for r in range(args.rounds):
        print(f"round {r + 1}, load {os.getloadavg()[0]:.2f}")
        res["flotilla cp"].append(flotilla(1))
        res["scp default"].append(scp(None))
        res["scp aes128-gcm"].append(scp("aes128-gcm@openssh.com"))
    print(f"{args.concurrent} at once, load {os.getloadavg()[0]:.2f}")
    flotilla(args.concurrent)
    med = {k: statistics.median(v) for k, v in res.items()}
    for k, v in res.items():
        print(f"{k:16s} median {med[k]:6.0f} MB/s  ({', '.join(f'{x:.0f}' for x in v)}), "
              f"median {statistics.median(cpu[k]):.2f} CPU-s per GB")
    print(f"flotilla / scp default    {med['flotilla cp'] / med['scp default']:.2f}x (target >= 1.5)")
    print(f"flotilla / scp aes128-gcm {med['flotilla cp'] / med['scp aes128-gcm']:.2f}x (target >= 1.0)")
finally:
    for p in (src, dst):
        if os.path.exists(p):
            os.remove(p)
    sshd.close()
