"""A DULL flood announcer in the manner of graspy's BRSKI registrar (the
tests' own code): floods AN_join_registrar on the link, with its own
address as locator and, in a second objective, the `::` link-local marker.
Runs until stopped."""

import time

import graspi

grasp = graspi.grasp
graspi.skip_dialogue(selfing=True, be_dull=True)
e, asa = graspi.register_asa("registrar")
assert not e, graspi.etext[e]
reg = graspi.objective("AN_join_registrar")
reg.synch = True
reg.value = "EST-TLS"
ll = graspi.objective("AN_proxy")
ll.synch = True
ll.value = ""
for o in (reg, ll):
    e = graspi.register_obj(asa, o)
    assert not e, graspi.etext[e]
mine = graspi.asa_locator(grasp._my_address, None, False)
mine.is_ipaddress = True
mine.port = 80
here = graspi.asa_locator(grasp._unspec_address, None, False)
here.is_ipaddress = True
here.port = 443
print("announcer: ready", grasp.DULL, flush=True)
while True:
    e = graspi.flood(asa, 3000, [graspi.tagged_objective(reg, mine)])
    assert not e, graspi.etext[e]
    e = graspi.flood(asa, 3000, graspi.tagged_objective(ll, here))
    assert not e, graspi.etext[e]
    time.sleep(0.5)
