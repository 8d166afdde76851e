"""Every function of graspy's API through these modules, against a real
graspd: return shapes and error paths as graspy documents them (a table),
including timeouts, declines, an unknown session and a stopped listener.
This process's ``grasp`` talks to graspd A; the bank (tests/asas/bank.py)
answers on graspd B."""

import ipaddress
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

import conftest

_state = {}


@pytest.fixture(scope="module")
def node():
    """graspd A for this process's grasp, with the bank on B."""
    with tempfile.TemporaryDirectory(prefix="graspd-asa-") as d:
        gen = conftest._netns_pair(False, Path(d))
        a, b = next(gen)
        bank = conftest.Asa("bank.py", b)
        assert bank.proc.stdout.readline().strip() == "bank: ready"
        os.environ["GRASP_API_SOCKET"] = a.socket
        import grasp

        e, h = grasp.register_asa("table")
        assert e == 0
        _state.update(grasp=grasp, h=h)
        yield grasp, h
        bank.stop()
        gen.close()
        os.environ.pop("GRASP_API_SOCKET", None)


def obj(grasp, name, neg=False, synch=False, dry=False, value=None, lc=6):
    o = grasp.objective(name)
    o.neg, o.synch, o.dry, o.value, o.loop_count = neg, synch, dry, value, lc
    return o


def test_registration(node):
    grasp, h = node
    e, h2 = grasp.register_asa("table-2")
    assert e == 0 and isinstance(h2, int) and h2 != h
    assert grasp.register_asa("table-2") == (grasp.errors.dupASA, None)
    assert grasp.register_asa(42) == (grasp.errors.unspec, None)
    assert grasp.deregister_asa(h2, "not-its-name") == grasp.errors.notYourASA
    assert grasp.deregister_asa(987654, "table-2") == grasp.errors.noASA
    assert grasp.register_obj(h, obj(grasp, "EX.both", neg=True, synch=True)) == grasp.errors.notBoth
    assert grasp.register_obj(h, obj(grasp, "EX.dry", dry=True)) == grasp.errors.notDry
    o = obj(grasp, "EX.mine", synch=True, value=1)
    assert grasp.register_obj(h, o, ttl=30000, discoverable=True) == 0
    assert grasp.register_obj(h, o) == grasp.errors.objReg
    assert grasp.register_obj(h2, o) == grasp.errors.objReg
    assert grasp.register_obj(987654, obj(grasp, "EX.x", synch=True)) == grasp.errors.noASA
    o2 = obj(grasp, "EX.shared", synch=True)
    assert grasp.register_obj(h, o2, overlap=True) == 0
    assert grasp.register_obj(h2, o2, overlap=True) == 0
    assert grasp.deregister_obj(h, obj(grasp, "EX.never", synch=True)) in (
        grasp.errors.notYourObj,
        grasp.errors.notObj,
    )
    assert grasp.deregister_asa(h2, "table-2") == 0
    assert grasp.deregister_asa(h2, "table-2") == grasp.errors.noASA
    # The registry view: ours, with our handle.
    mine = [x for x in grasp._obj_registry if x.objective.name == "EX.mine"]
    assert len(mine) == 1 and h in mine[0].asa_id and mine[0].objective.value == 1
    assert mine[0].discoverable is True and mine[0].ttl == 30000


def test_discovery(node):
    grasp, h = node
    ex3 = obj(grasp, "EX3", neg=True)
    assert grasp.register_obj(h, ex3, overlap=True) == 0
    e, ll = grasp.discover(h, ex3, 1000, flush=True)
    assert e == 0 and len(ll) == 1
    loc = ll[0]
    assert isinstance(loc, grasp.asa_locator)
    assert loc.locator == ipaddress.IPv6Address("fd00:1::2") and loc.is_ipaddress
    assert not loc.is_fqdn and not loc.is_uri and not loc.diverted
    assert loc.protocol == 6 and isinstance(loc.port, int) and loc.port > 0
    assert isinstance(loc.ifi, int)  # the scope, for a link-local locator
    assert loc.expire > int(time.monotonic())  # graspy: monotonic seconds
    # Cached: at once.
    t0 = time.monotonic()
    e, again = grasp.discover(h, ex3, 1000)
    assert e == 0 and len(again) == 1 and time.monotonic() - t0 < 0.2
    # Nobody: graspy waits the whole timeout and answers ok with nothing.
    t0 = time.monotonic()
    assert grasp.discover(h, obj(grasp, "EX.nobody", synch=True, lc=2), 300) == (0, [])
    assert time.monotonic() - t0 >= 0.28
    _state["peer"] = loc


def test_negotiation_shapes(node):
    grasp, h = node
    import graspi

    peer = _state["peer"]
    ex3 = obj(grasp, "EX3", neg=True, value=["NZD", 50])
    assert grasp.req_negotiate(h, ex3, peer, 3000) == (0, None, ex3)  # accepted: own objective
    ex3.value = ["EUR", 50]
    assert grasp.req_negotiate(h, ex3, peer, 3000) == (1, None, "Currency not accepted")
    assert graspi.request_negotiate(h, ex3, peer, 3000) == (1, None, None, "Currency not accepted")
    ex3.value = ["NZD", 300]
    e, s, offer = grasp.req_negotiate(h, ex3, None, 3000)  # no peer: discovered
    assert e == 0 and isinstance(s, grasp._session_handle) and s.id_source is None
    assert isinstance(offer, grasp.objective) and offer.name == "EX3" and offer.value == ["NZD", 150]
    assert offer.neg is True and offer.synch is False
    # A step with loop count 1 is not sent.
    offer.loop_count = 1
    assert grasp.negotiate_step(h, s, offer, 1000) == (grasp.errors.loopExhausted, None, None)
    assert grasp.end_negotiate(h, s, True) == grasp.errors.noSession  # already over
    ex3.value = ["NZD", 300]
    e, s, offer = grasp.req_negotiate(h, ex3, peer, 3000)
    assert e == 0 and grasp.negotiate_wait(h, s, 1000) == 0
    assert grasp.send_invalid(h, s, "test") == 0
    # Sessions nobody has.
    ghost = grasp._session_handle(424242, None)
    assert grasp.negotiate_step(h, ghost, ex3, 100) == (grasp.errors.noSession, None, None)
    assert graspi.negotiate_step(h, ghost, ex3, 100) == (grasp.errors.noSession, None, None, None)
    assert grasp.negotiate_wait(h, ghost, 100) == grasp.errors.noSession
    assert grasp.end_negotiate(h, ghost, False, "no") == grasp.errors.noSession
    assert grasp.send_invalid(h, ghost) == grasp.errors.noSession
    assert grasp.gsend(h, ghost, "x") == grasp.errors.noSession
    assert grasp.grecv(h, ghost, 100) == (grasp.errors.noSession, None)
    assert grasp.negotiate_step(h, None, ex3, 100) == (grasp.errors.noSession, None, None)
    # Not negotiable.
    syn = obj(grasp, "EX.mine", synch=True)
    assert grasp.req_negotiate(h, syn, peer, 100) == (grasp.errors.notNeg, None, None)
    assert grasp.listen_negotiate(h, syn) == (grasp.errors.notNeg, None, None)


def test_a_peer_too_slow(node):
    grasp, h = node
    slow = obj(grasp, "EX.slow", neg=True)
    assert grasp.register_obj(h, slow) == 0
    e, ll = grasp.discover(h, slow, 1000)
    assert e == 0 and ll
    t0 = time.monotonic()
    assert grasp.req_negotiate(h, slow, ll[0], 300) == (grasp.errors.noNegReply, None, None)
    assert 0.25 < time.monotonic() - t0 < 1.4


def test_listen_and_stop(node):
    grasp, h = node
    o = obj(grasp, "EX.listened", neg=True)
    assert grasp.register_obj(h, o) == 0
    got = []
    threads = [threading.Thread(target=lambda: got.append(grasp.listen_negotiate(h, o))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert grasp.stop_negotiate(h, o) == 0
    for t in threads:
        t.join(5)
    # Unlike graspy, stop_negotiate ends the waits: cancelled.
    assert got == [(grasp.errors.cancelled, None, None)] * 3


def test_synchronization_and_flooding(node):
    grasp, h = node
    ex2 = obj(grasp, "EX2", synch=True)
    e, got = grasp.synchronize(h, ex2, None, 3000)
    assert e == 0 and got.value == [1, "two", 3] and got is not ex2
    assert grasp.synchronize(h, obj(grasp, "EX3", neg=True), None, 100) == (grasp.errors.notSynch, None)
    t0 = time.monotonic()
    assert grasp.synchronize(h, obj(grasp, "EX.none", synch=True, lc=2), None, 500) == (
        grasp.errors.notFloodDisc,
        None,
    )
    assert time.monotonic() - t0 < 5
    mine = obj(grasp, "EX.mine", synch=True, value="v1")
    assert grasp.listen_synchronize(h, mine) == 0
    mine.value = "v2"
    assert grasp.listen_synchronize(h, mine) == 0  # again: the new value
    assert grasp.stop_synchronize(h, mine) == 0
    assert grasp.listen_synchronize(h, obj(grasp, "EX3", neg=True)) == grasp.errors.notSynch
    # Flooding: both call forms; errors.
    f = obj(grasp, "EX.flood", synch=True, value=b"\x82\x01\x02", lc=3)
    assert grasp.register_obj(h, f) == 0
    here = grasp.asa_locator(ipaddress.IPv6Address("fd00:1::1"), None, False)
    here.is_ipaddress, here.port = True, 5000
    assert grasp.flood(h, 10000, grasp.tagged_objective(f, here)) == 0
    assert grasp.flood(h, 10000, [grasp.tagged_objective(f, None)]) == 0
    assert grasp.flood(h, 10000, "junk") == grasp.errors.unspec
    assert grasp.flood(h, 10000) == grasp.errors.unspec
    bad = grasp.asa_locator(None, None, False)
    assert grasp.flood(h, 10000, grasp.tagged_objective(f, bad)) == grasp.errors.invalidLoc
    neg = obj(grasp, "EX3", neg=True)
    assert grasp.flood(h, 10000, grasp.tagged_objective(neg, None)) == grasp.errors.notSynch
    # Our own floods are in the node's cache; the bytes value (CBOR inside) is bytes again.
    e, tagged = grasp.get_flood(h, f)
    assert e == 0 and len(tagged) == 2
    assert all(t.objective.value == b"\x82\x01\x02" for t in tagged)
    withloc = [t for t in tagged if t.source.locator is not None][0]
    assert withloc.source.locator == ipaddress.IPv6Address("fd00:1::1") and withloc.source.port == 5000
    bare = [t for t in tagged if t.source.locator is None][0]
    assert bare.source.protocol == 6 and bare.source.port == 7017  # graspy's defaults
    assert grasp.get_flood(h, neg) == (grasp.errors.notSynch, None)
    # expire_flood: that very object; a look-alike does nothing.
    look_alike = grasp.tagged_objective(f, withloc.source)
    assert grasp.expire_flood(h, look_alike) == 0
    assert len(grasp.get_flood(h, f)[1]) == 2
    assert grasp.expire_flood(h, withloc) == 0
    assert withloc.source.expire <= int(time.monotonic())
    e, left = grasp.get_flood(h, f)
    assert e == 0 and [t.source.locator for t in left] == [None]
    assert grasp.expire_flood(987654, bare) == grasp.errors.noASA
    assert any(t.objective.name == "EX.flood" for t in grasp._flood_cache)


def test_module_attributes(node, capsys):
    grasp, h = node
    import graspi

    assert graspi.grasp is grasp
    assert not hasattr(grasp, "checkrun") and not hasattr(graspi, "checkrun")
    assert not hasattr(graspi, "_prng") and not hasattr(graspi, "req_negotiate")
    assert grasp._my_address == ipaddress.IPv6Address("fd00:1::1")
    assert grasp._session_locator == grasp._my_address
    assert grasp._unspec_address.packed == bytes(16)
    assert isinstance(grasp._relay_needed, bool)
    assert 0 <= grasp._prng.randint(0, 3) <= 3
    assert grasp.GRASP_DEF_MAX_SIZE == 2048 and grasp.O_IPv6_LOCATOR == 103
    assert grasp.etext[grasp.errors.noListener] == "Synchronization peer not listening"
    assert grasp.etext[107].startswith("No GRASP core") and len(grasp.etext) == 40
    assert grasp.tname(b"") == "bytes"
    grasp.tprint("hello", 1)
    grasp.ttprint("not in test mode")
    out = capsys.readouterr().out
    assert out.startswith("_MainThread %d hello 1" % threading.get_ident())
    assert "not in test mode" not in out
    grasp.dump_all(partial=True)
    out = capsys.readouterr().out
    assert "\nObjective registry contents:\n---------------------------\n" in out
    assert "EX.mine ASA: [%d] Listen: 0 Port 0 Neg: False Synch: True" % h in out
    assert "\nFlood cache contents:\n--------------------\n" in out
    grasp.dump_all()
    out = capsys.readouterr().out
    assert "My address: fd00:1::1" in out and "table handle: %d" % h in out
    assert "Discovery cache contents:" in out and "EX3 locators:" in out
