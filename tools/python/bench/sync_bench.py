"""Synchronizations (or negotiations answered by an immediate accept) a
second from a Python ASA, with 1 or more threads, against grasp-bench's
peer: through whichever ``grasp`` module is on the path, this package's
(graspd's ASA socket) or graspy's own (its own engine in this process).
Prints one line: rate, p50 and p99 latency.  Bounded by --seconds.

  python sync_bench.py --peer fd00:1::2 --port 7300 --seconds 10 --threads 4 [--negotiate]
"""

import argparse
import ipaddress
import os
import sys
import threading
import time

import grasp

p = argparse.ArgumentParser()
p.add_argument("--peer", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--seconds", type=float, default=10)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--negotiate", action="store_true")
p.add_argument("--label", default="")
a = p.parse_args()

if hasattr(grasp, "skip_dialogue"):
    grasp.skip_dialogue(testing=False, selfing=False, diagnosing=False)
e, asa = grasp.register_asa("sync-bench-%d" % os.getpid())
assert not e, grasp.etext[e]
o = grasp.objective("EX.bench")
o.value = {"a": 1}
if a.negotiate:
    o.neg = True
    e = grasp.register_obj(asa, o)
    assert not e, grasp.etext[e]
else:
    o.synch = True
peer = grasp.asa_locator(ipaddress.IPv6Address(a.peer), 0, False)
peer.is_ipaddress = True
peer.port = a.port

lat = [[] for _ in range(a.threads)]
errs = [0] * a.threads
deadline = time.monotonic() + a.seconds


def run(i):
    mine = lat[i]
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            return
        if a.negotiate:
            e, s, _ = grasp.req_negotiate(asa, o, peer, 5000)
            ok = e == 0 and s is None
        else:
            e, _ = grasp.synchronize(asa, o, peer, 5000)
            ok = e == 0
        if ok:
            mine.append(time.monotonic() - t0)
        else:
            errs[i] += 1


start = time.monotonic()
ts = [threading.Thread(target=run, args=(i,)) for i in range(a.threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
took = time.monotonic() - start
all_lat = sorted(x for m in lat for x in m)
n = len(all_lat)
if n == 0:
    print("%s: nothing succeeded (%d errors)" % (a.label, sum(errs)))
    sys.exit(1)
what = "negotiations" if a.negotiate else "syncs"
print(
    "%s, %d thread(s): %d %s in %.2f s = %.0f/s; p50 %.0f us, p99 %.0f us; errors %d"
    % (a.label, a.threads, n, what, took, n / took, all_lat[n // 2] * 1e6, all_lat[min(n - 1, n * 99 // 100)] * 1e6, sum(errs)),
    flush=True,
)
os._exit(0)  # graspy's threads never end
