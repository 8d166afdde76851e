"""A banker in the manner of graspy's Briggs (the tests' own code): floods
EX1, answers EX2 by rapid synchronization and negotiates loans of EX3, each
request in a thread of its own.  Runs until stopped.

Policy: other currencies than NZD are declined; up to 100 is accepted; over
2000 is declined (a non-ASCII reason); otherwise it counter-offers half,
asking the requester to wait first when the sum is over 500.  An
objective's value may arrive as CBOR bytes (graspy's tag-24 rule)."""

import sys
import threading
import time

import cbor2
import graspi

grasp = graspi.grasp


def fail(what, e):
    print("bank:", what, graspi.etext[e], flush=True)
    sys.exit(1)


e, asa = graspi.register_asa("bank")
if e:
    fail("register_asa", e)

ex1 = graspi.objective("EX1")
ex1.synch = True
ex1.loop_count = 4
ex2 = graspi.objective("EX2")
ex2.synch = True
ex2.loop_count = 4
ex2.value = [1, "two", 3]
ex3 = graspi.objective("EX3")
ex3.neg = True
ex3.dry = True
ex3.value = ["NZD", 0]
for o, kw in ((ex1, {}), (ex2, {"rapid": True}), (ex3, {"overlap": True})):
    e = graspi.register_obj(asa, o, **kw)
    if e:
        fail("register_obj " + o.name, e)
e = graspi.listen_synchronize(asa, ex2)
if e:
    fail("listen_synchronize", e)


def flooder():
    while True:
        ex1.value = "the bank is open, %d" % int(time.time())
        graspi.flood(asa, 5000, [graspi.tagged_objective(ex1, None)])
        time.sleep(0.5)


def amount_of(obj):
    v = obj.value
    if isinstance(v, bytes):
        v = cbor2.loads(v)
    return v[0], v[1]


def negotiate(s, answer):
    waited = False
    while True:
        cur, amount = amount_of(answer)
        if cur != "NZD":
            graspi.end_negotiate(asa, s, False, reason="Currency not accepted")
            return
        if amount <= 100:
            graspi.end_negotiate(asa, s, True)
            return
        if amount > 2000:
            graspi.end_negotiate(asa, s, False, "Недостаточно средств")
            return
        if amount > 500 and not waited:
            waited = True
            if graspi.negotiate_wait(asa, s, 3000):
                return
            time.sleep(0.4)
        answer.value = ["NZD", amount // 2]
        e, s2, reply, reason = graspi.negotiate_step(asa, s, answer, 3000)
        if e == graspi.errors.loopExhausted:
            graspi.end_negotiate(asa, s, False, "Loop count exhausted")
            return
        if e or s2 is None:
            return  # accepted or declined by the requester, or gone
        answer = reply


# EX.slow: answered (accepted) 1.5 s late, for requesters' timeouts.
slow = graspi.objective("EX.slow")
slow.neg = True
if graspi.register_obj(asa, slow):
    fail("register_obj EX.slow", 3)


def slow_listener():
    while True:
        e, s, _ = graspi.listen_negotiate(asa, slow)
        if e:
            return
        time.sleep(1.5)
        graspi.end_negotiate(asa, s, True)


threading.Thread(target=flooder, daemon=True).start()
threading.Thread(target=slow_listener, daemon=True).start()
print("bank: ready", flush=True)
while True:
    e, s, answer = graspi.listen_negotiate(asa, ex3)
    if e:
        fail("listen_negotiate", e)
    threading.Thread(target=negotiate, args=(s, answer), daemon=True).start()
