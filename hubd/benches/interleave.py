"""Commands timed alternately, so that they share the machine's state: the A/B harness behind the
"which change did what" figures in docs/benchmarks.md.

    python3 hubd/benches/interleave.py ROUNDS PER NAME=COMMAND...

Each round runs every command PER times in a row, in the order given; ROUNDS 300 and PER 1
alternates run by run. Prints p10, p50 and p90 of the wall time per command, spawn and reap
included (as a shell loop sees it). A command that exits non-zero stops the run.
"""
import shlex, subprocess, sys, time

if len(sys.argv) < 4:
    sys.exit(__doc__)
rounds, per = int(sys.argv[1]), int(sys.argv[2])
cmds = [(a.split("=", 1)[0], shlex.split(a.split("=", 1)[1])) for a in sys.argv[3:]]
res = {n: [] for n, _ in cmds}
for _ in range(rounds):
    for name, argv in cmds:
        for _ in range(per):
            t = time.perf_counter()
            done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            res[name].append(time.perf_counter() - t)
            if done.returncode != 0:
                sys.exit(f"{name}: exit status {done.returncode}")
for name, v in res.items():
    v.sort()
    at = lambda q: v[int((len(v) - 1) * q)] * 1e3
    print(f"{name:20s} p50 {at(.5):6.3f}  p10 {at(.1):6.3f}  p90 {at(.9):6.3f} ms ({len(v)} runs)")
