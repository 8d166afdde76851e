"""A prefix delegator in the manner of graspy's pfxm3 (the tests' own code):
learns the pool's parameters, then asks the origin for three /56 prefixes
(three threads at once) and for a /40 it must not get.  Prints one JSON line."""

import ipaddress
import json
import threading

import grasp

e, asa = grasp.register_asa("pfx-delegator")
assert not e, grasp.etext[e]
pm = grasp.objective("EX.PrefixManager")
pm.neg = True
assert grasp.register_obj(asa, pm) == 0
params = grasp.objective("EX.PrefixManager.Params")
params.synch = True
e, got = grasp.synchronize(asa, params, None, 5000)
out = {"params": [e, got.value if got else None]}
e, peers = grasp.discover(asa, pm, 1000, flush=True)
out["discover"] = [e, len(peers)]


def ask(length):
    o = grasp.objective("EX.PrefixManager")
    o.neg = True
    o.value = [length, None]
    e, s, answer = grasp.req_negotiate(asa, o, peers[0], 5000)
    if e == grasp.errors.declined:
        return ["declined", answer]
    if e or s is None:
        return ["error", e]
    raw = answer.value[1]
    grasp.end_negotiate(asa, s, True)
    return ["got", str(ipaddress.IPv6Network((raw, answer.value[0]))), type(raw).__name__]


res = [None] * 3
ts = [threading.Thread(target=lambda i=i: res.__setitem__(i, ask(56))) for i in range(3)]
for t in ts:
    t.start()
for t in ts:
    t.join(20)
out["prefixes"] = res
out["too_large"] = ask(40)
print(json.dumps(out))
