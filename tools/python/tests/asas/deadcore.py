"""Waits in listen_negotiate while the test stops graspd; then prints one
JSON line of what each call answered (the tests' own code)."""

import json
import sys
import threading
import time

import grasp

e, asa = grasp.register_asa("deadcore")
assert not e, grasp.etext[e]
o = grasp.objective("EX.dead")
o.neg = True
assert grasp.register_obj(asa, o) == 0
got = []
t = threading.Thread(target=lambda: got.append(grasp.listen_negotiate(asa, o)))
t.start()
time.sleep(0.2)
print("deadcore: listening", flush=True)
sys.stdin.readline()  # the test stops graspd, then says go
t0 = time.monotonic()
t.join(10)
out = {
    "listen": got,
    "register_obj": grasp.register_obj(asa, grasp.objective("EX.later")),
    "discover": grasp.discover(asa, o, 1000),
    "register_asa": grasp.register_asa("again"),
    "seconds": time.monotonic() - t0,
}
print(json.dumps(out))
