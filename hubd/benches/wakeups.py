"""Context switches (voluntary + involuntary) of every thread of each PID over SECONDS: wake-ups of an idle process."""
import sys, time, os
secs = float(sys.argv[1]); pids = sys.argv[2:]
def count(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        for line in open(f"/proc/{pid}/task/{t}/status"):
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total
a = {p: count(p) for p in pids}; time.sleep(secs); b = {p: count(p) for p in pids}
for p in pids: print(f"pid {p}: {(b[p]-a[p])/secs:.1f} wake-ups/s")
