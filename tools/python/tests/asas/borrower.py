"""A borrower in the manner of graspy's Gray (the tests' own code): reads
the bank's flood of EX1, synchronizes EX2 (answered in the bank's discovery
response: rapid), and negotiates loans of EX3 through each kind of outcome,
then ten at once from threads.  Prints one JSON line of what happened."""

import json
import sys
import threading
import time

import cbor2
import graspi

e, asa = graspi.register_asa("borrower")
assert not e, graspi.etext[e]
ex3 = graspi.objective("EX3")
ex3.neg = True
e = graspi.register_obj(asa, ex3, overlap=True)
assert not e, graspi.etext[e]
out = {}

# EX1: the bank floods it; wait (bounded) until it is in the flood cache.
ex1 = graspi.objective("EX1")
ex1.synch = True
deadline = time.monotonic() + 15
while True:
    e, tagged = graspi.get_flood(asa, ex1)
    if (not e and tagged) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
out["get_flood"] = [e, [(t.objective.value[:17], t.objective.loop_count, t.source.locator, t.source.expire > 0) for t in tagged or []]]
e, got = graspi.synchronize(asa, ex1, None, 5000)
out["sync_ex1"] = [e, got.value[:17] if got else None]

ex2 = graspi.objective("EX2")
ex2.synch = True
e, got = graspi.synchronize(asa, ex2, None, 5000)
out["sync_ex2"] = [e, got.value if got else None]
nonsense = graspi.objective("Nonsense")
out["sync_nonsense"] = graspi.synchronize(asa, nonsense, None, 5000)[0]

e, peers = graspi.discover(asa, ex3, 1000)
out["discover"] = [e, len(peers)]
if e or not peers:
    print(json.dumps(out))
    sys.exit(0)
peer = peers[0]


def borrow(cur, amount, floor, loop_count=6, as_bytes=False):
    """One negotiation; returns what it came to."""
    o = graspi.objective("EX3")
    o.neg = True
    o.loop_count = loop_count
    o.value = cbor2.dumps([cur, amount]) if as_bytes else [cur, amount]
    t0 = time.monotonic()
    e, s, answer, reason = graspi.request_negotiate(asa, o, peer, 5000)
    while True:
        if e == graspi.errors.declined:
            return ["declined", reason]
        if e:
            return ["error", graspi.etext[e]]
        if s is None:
            return ["accepted", amount]
        offer = answer.value[1]
        if offer >= floor:
            graspi.end_negotiate(asa, s, True)
            return ["we accepted", offer, round(time.monotonic() - t0, 1) >= 0.3]
        answer.value = ["NZD", (offer + amount) // 2]
        amount = answer.value[1]
        e, s, answer, reason = graspi.negotiate_step(asa, s, answer, 5000)


out["small"] = borrow("NZD", 80, 0)
out["small_bytes"] = borrow("NZD", 90, 0, as_bytes=True)
out["usd"] = borrow("USD", 80, 0)
out["counter"] = borrow("NZD", 300, 100)
out["waited"] = borrow("NZD", 800, 300)
out["too_much"] = borrow("NZD", 5000, 0)
out["exhausted"] = borrow("NZD", 400, 399, loop_count=4)

results = [None] * 10


def one(i):
    results[i] = borrow("NZD", 200 + 10 * i, 50)


threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
for t in threads:
    t.start()
for t in threads:
    t.join(30)
out["concurrent"] = results
print(json.dumps(out, default=str))
