"""The wire forms: objectives, locators and graspy's tag-24 rule."""

import ipaddress

import cbor2

from graspd_asa import forms


def obj(name, value, **flags):
    o = forms.objective(name)
    for k, v in flags.items():
        setattr(o, k, v)
    o.value = value
    return o


def test_objective_round_trip_and_flags():
    o = obj("EX.a", {"k": [1, None, "x"], 7: b"\xff"}, neg=True, dry=True)
    b = forms.objective_to_wire(o)
    assert cbor2.loads(b) == ["EX.a", 1 | 2 | 8, 6, {"k": [1, None, "x"], 7: b"\xff"}]
    back = forms.objective_from_wire(b)
    assert (back.name, back.neg, back.dry, back.synch, back.loop_count) == ("EX.a", True, True, False, 6)
    assert back.discoverable is True  # graspy does not read the bit back
    und = obj("EX.b", None, synch=True)
    und.discoverable = False
    assert cbor2.loads(forms.objective_to_wire(und))[1] == 4


def test_tag24_both_ways():
    # Bytes that start with a CBOR item go as tag 24, trailing bytes and all
    # (graspy's rule: a PEM key starting with '-' is the integer -14).
    for v in (cbor2.dumps([1, 2]), b"-----BEGIN", b"\x01", b"\xf6"):
        item = cbor2.loads(forms.objective_to_wire(obj("EX.t", v, synch=True)))
        assert item[3] == cbor2.CBORTag(24, v)
    # Bytes that do not, as they are.
    for v in (b"", b"\xff\xff", b"\x1c"):
        assert cbor2.loads(forms.objective_to_wire(obj("EX.t", v, synch=True)))[3] == v
    # Received: tag 24 handed over as its bytes.
    wire = cbor2.dumps(["EX.t", 5, 3, cbor2.CBORTag(24, b"\x82\x01\x02")])
    assert forms.objective_from_wire(wire).value == b"\x82\x01\x02"


def test_objectives_that_cannot_go():
    for bad in (obj(3, 1), obj("EX", object())):
        try:
            forms.objective_to_wire(bad)
            raise AssertionError("sent")
        except ValueError:
            pass
    o = obj("EX", 1)
    o.loop_count = 256
    try:
        forms.objective_to_wire(o)
        raise AssertionError("sent")
    except ValueError as e:
        assert "loop_count" in str(e)


def test_locators():
    loc = forms.asa_locator(ipaddress.IPv6Address("fd00:1::2"), 3, False)
    loc.is_ipaddress, loc.port = True, 5000
    b = forms.locator_to_wire(loc)
    assert cbor2.loads(b) == [103, ipaddress.IPv6Address("fd00:1::2").packed, 6, 5000]
    back = forms.locator_from_wire(b, 3, True)
    assert back.locator == loc.locator and back.port == 5000 and back.ifi == 3 and back.diverted
    v4 = forms.asa_locator(ipaddress.IPv4Address("169.254.1.2"), None, False)
    assert cbor2.loads(forms.locator_to_wire(v4))[0] == 104
    name = forms.asa_locator("registrar.example", None, False)
    assert cbor2.loads(forms.locator_to_wire(name))[:2] == [105, "registrar.example"]
    name.is_uri = True
    assert cbor2.loads(forms.locator_to_wire(name))[0] == 106
    fq = forms.locator_from_wire(cbor2.dumps([105, "x.example", 6, 80]), 0, False)
    assert fq.is_fqdn and not fq.is_ipaddress and fq.locator == "x.example"
    for bad in (forms.asa_locator(None, None, False), "fd00::1"):
        try:
            forms.locator_to_wire(bad)
            raise AssertionError("sent")
        except ValueError:
            pass
    # A flood entry without a locator: graspy's empty source.
    t = forms.flooded({"objective": forms.objective_to_wire(obj("EX.f", 1, synch=True)), "initiator": bytes(16)})
    assert t.source.locator is None and t.source.expire == 0 and t.source.port == 7017
