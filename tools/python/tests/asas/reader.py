"""A DULL flood reader in the manner of graspy's BRSKI pledge (the tests'
own code): waits (bounded) for the announcer's floods, expires one, and
prints one JSON line of what it saw."""

import json
import time

import graspi

grasp = graspi.grasp
graspi.skip_dialogue(selfing=True, be_dull=True)
e, asa = graspi.register_asa("pledge")
assert not e, graspi.etext[e]
out = {"dull": grasp.DULL}
for name in ("AN_join_registrar", "AN_proxy"):
    o = graspi.objective(name)
    o.synch = True
    deadline = time.monotonic() + 15
    while True:
        e, tagged = graspi.get_flood(asa, o)
        if (not e and tagged) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out[name] = [
        [t.objective.value, t.objective.loop_count, str(t.source.locator), t.source.port, t.source.ifi is not None]
        for t in tagged or []
    ]
    if name == "AN_proxy" and tagged:
        t = tagged[0]
        out["expire"] = graspi.expire_flood(asa, t)
        out["expired_locally"] = t.source.expire <= int(time.monotonic())
o = graspi.objective("AN_join_registrar")
o.synch = True
e, got = graspi.synchronize(asa, o, None, 2000)
out["sync"] = [e, got.value if got else None]
print(json.dumps(out))
