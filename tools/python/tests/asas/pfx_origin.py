"""A prefix-pool origin in the manner of graspy's pfxm3 (RFC 8992 style;
the tests' own code): publishes its parameters by synchronization and
delegates prefixes of 2001:db8:100::/40 by negotiation.  A prefix travels as
its packed bytes, which start with a CBOR item (0x20), so graspy's tag-24
rule carries them.  Runs until stopped."""

import ipaddress
import threading

import grasp

POOL = ipaddress.IPv6Network("2001:db8:100::/40")
e, asa = grasp.register_asa("pfx-origin")
assert not e, grasp.etext[e]
pm = grasp.objective("EX.PrefixManager")
pm.neg = True
params = grasp.objective("EX.PrefixManager.Params")
params.synch = True
params.value = {"pool": str(POOL), "shortest": 48}
for o in (pm, params):
    assert grasp.register_obj(asa, o) == 0
assert grasp.listen_synchronize(asa, params) == 0
lock = threading.Lock()
given = set()


def delegate(s, req):
    length, _ = req.value
    if length < params.value["shortest"]:
        grasp.end_negotiate(asa, s, False, "Request too large")
        return
    with lock:
        pick = next(n for n in POOL.subnets(new_prefix=length) if n not in given)
        given.add(pick)
    req.value = [length, pick.network_address.packed]
    e, s2, answer = grasp.negotiate_step(asa, s, req, 3000)
    if e or s2 is not None:  # not accepted: give it back
        with lock:
            given.discard(pick)
        if s2 is not None:
            grasp.end_negotiate(asa, s2, False, "One offer only")


print("origin: ready", flush=True)
while True:
    e, s, req = grasp.listen_negotiate(asa, pm)
    assert not e, grasp.etext[e]
    threading.Thread(target=delegate, args=(s, req), daemon=True).start()
