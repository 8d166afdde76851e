"""graspy's data classes and their forms on graspd's ASA socket.

Objectives and locators travel to and from graspd in their RFC 8990 wire
form, inside byte strings, so values are byte-exact whatever CBOR library
each side uses.  Byte values follow graspy's tag-24 rule both ways, so they
interwork with graspy peers: a ``bytes`` value that starts with a
well-formed CBOR item is sent as tag 24 around those bytes, and a tag-24
value received is handed over as its bytes.
"""

from __future__ import annotations

import io
import ipaddress
import time
from typing import Any, Dict, Optional, Union

import cbor2

# RFC 8990 numbers (§2.8, §2.9, §2.10).
M_NOOP = 0
M_DISCOVERY = 1
M_RESPONSE = 2
M_REQ_NEG = 3
M_REQ_SYN = 4
M_NEGOTIATE = 5
M_END = 6
M_WAIT = 7
M_SYNCH = 8
M_FLOOD = 9
M_INVALID = 99

O_DIVERT = 100
O_ACCEPT = 101
O_DECLINE = 102
O_IPv6_LOCATOR = 103
O_IPv4_LOCATOR = 104
O_FQDN_LOCATOR = 105
O_URI_LOCATOR = 106

F_DISC = 0  # bit numbers of the objective flags
F_NEG = 1
F_SYNCH = 2
F_NEG_DRY = 3
B_DISC = 1 << F_DISC
B_NEG = 1 << F_NEG
B_SYNCH = 1 << F_SYNCH
B_DRY = 1 << F_NEG_DRY

ALL_GRASP_NEIGHBORS_6 = ipaddress.IPv6Address("ff02::13")
ALL_GRASP_NEIGHBORS_4 = ipaddress.IPv4Address("224.0.0.119")
GRASP_LISTEN_PORT = 7017
GRASP_DEF_TIMEOUT = 60000  # milliseconds
GRASP_DEF_LOOPCT = 6
GRASP_DEF_MAX_SIZE = 2048

IPPROTO_TCP = 6

Address = Union[ipaddress.IPv6Address, ipaddress.IPv4Address]


class objective:
    """A GRASP objective, as graspy has it.

    ``name`` (str), ``discoverable`` (True unless set False: the F_DISC
    bit), ``neg``, ``dry``, ``synch`` (the flags), ``loop_count`` (default
    6) and ``value`` (any CBOR-able Python object, default None)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.discoverable = True
        self.neg = False
        self.dry = False
        self.synch = False
        self.loop_count = GRASP_DEF_LOOPCT
        self.value: Any = None


class asa_locator:
    """Where a peer ASA is, found by discovery or carried by a flood.

    ``locator`` (an ``ipaddress`` address, or a str for an FQDN or URI),
    ``ifi`` (the interface index it was learnt on), ``diverted`` (learnt
    through O_DIVERT), ``protocol`` (6, TCP), ``port`` (7017 by default),
    ``expire`` (the ``int(time.monotonic())`` second it expires, 0 for
    never) and the booleans ``is_ipaddress``, ``is_fqdn`` and ``is_uri``.
    """

    def __init__(self, locator: Any, ifi: Optional[int], diverted: bool) -> None:
        self.locator = locator
        self.ifi = ifi
        self.diverted = diverted
        self.protocol = IPPROTO_TCP
        self.port = GRASP_LISTEN_PORT
        self.expire = 0
        self.is_ipaddress = False
        self.is_fqdn = False
        self.is_uri = False


class tagged_objective:
    """An objective with the locator it was flooded with: ``objective`` and
    ``source`` (an :class:`asa_locator`, or None when flooding one without)."""

    def __init__(self, objective: Any, source: Optional[asa_locator]) -> None:
        self.objective = objective
        self.source = source


def flagword(obj: objective) -> int:
    """The objective's flags as sent (graspy's rule: F_DISC from
    ``discoverable``)."""
    f = B_DISC if getattr(obj, "discoverable", True) else 0
    if obj.neg:
        f |= B_NEG
    if obj.synch:
        f |= B_SYNCH
    if obj.dry:
        f |= B_DRY
    return f


_NO_MARKER = object()


def starts_with_cbor(b: bytes) -> bool:
    """Whether ``b`` begins with one well-formed CBOR item (what graspy's
    tag-24 rule tests, trailing bytes allowed)."""
    try:
        item = cbor2.CBORDecoder(io.BytesIO(b)).decode()
    except Exception:  # any decode failure means "not CBOR"
        return False
    # cbor2 5 hands a lone "break" (0xff) back as a marker, not an item.
    return item is not getattr(cbor2, "break_marker", _NO_MARKER)


def tag24(value: Any) -> Any:
    """graspy's rule for sending: bytes that start with CBOR go as tag 24."""
    if isinstance(value, (bytes, bytearray)) and starts_with_cbor(bytes(value)):
        return cbor2.CBORTag(24, bytes(value))
    return value


def detag(value: Any) -> Any:
    """graspy's rule for receiving: a tag-24 value is handed over as its bytes."""
    if isinstance(value, cbor2.CBORTag) and value.tag == 24 and isinstance(value.value, bytes):
        return value.value
    return value


def objective_to_wire(obj: objective) -> bytes:
    """The objective's RFC 8990 form; raises ValueError (with why) when it
    cannot be one."""
    if not isinstance(getattr(obj, "name", None), str):
        raise ValueError("an objective's name is a str")
    lc = getattr(obj, "loop_count", None)
    if not isinstance(lc, int) or not 0 <= lc <= 255:
        raise ValueError("an objective's loop_count is an int from 0 to 255")
    try:
        return cbor2.dumps([obj.name, flagword(obj), lc, tag24(obj.value)])
    except Exception as e:  # the value is not CBOR-able
        raise ValueError("the objective's value cannot be sent as CBOR: %s" % e) from None


def objective_from_wire(b: bytes) -> objective:
    """An objective from its RFC 8990 form (graspy's reading: the
    discoverable flag is not read back, the value is detagged)."""
    item = cbor2.loads(b)
    if not isinstance(item, list) or len(item) < 3 or not isinstance(item[0], str):
        raise ValueError("not an objective")
    o = objective(item[0])
    flags = int(item[1])
    o.neg = bool(flags & B_NEG)
    o.synch = bool(flags & B_SYNCH)
    o.dry = bool(flags & B_DRY)
    o.loop_count = int(item[2])
    o.value = detag(item[3]) if len(item) > 3 else None
    return o


def locator_to_wire(loc: asa_locator) -> bytes:
    """A locator option for the locator; raises ValueError when it is not one."""
    if not isinstance(loc, asa_locator):
        raise ValueError("a locator is an asa_locator")
    a = loc.locator
    proto, port = loc.protocol, loc.port
    if isinstance(a, ipaddress.IPv6Address):
        opt = [O_IPv6_LOCATOR, a.packed, proto, port]
    elif isinstance(a, ipaddress.IPv4Address):
        opt = [O_IPv4_LOCATOR, a.packed, proto, port]
    elif isinstance(a, str) and a:
        opt = [O_URI_LOCATOR if loc.is_uri else O_FQDN_LOCATOR, a, proto, port]
    else:
        raise ValueError("the locator is neither an ipaddress address nor a name")
    if not isinstance(proto, int) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError("a locator's protocol and port are ints")
    return cbor2.dumps(opt)


def locator_from_wire(b: bytes, ifi: Optional[int], diverted: bool) -> asa_locator:
    """An asa_locator from a locator option."""
    opt = cbor2.loads(b)
    if not isinstance(opt, list) or len(opt) < 2:
        raise ValueError("not a locator option")
    kind, addr = opt[0], opt[1]
    if kind == O_IPv6_LOCATOR and isinstance(addr, bytes) and len(addr) == 16:
        loc = asa_locator(ipaddress.IPv6Address(addr), ifi, diverted)
        loc.is_ipaddress = True
    elif kind == O_IPv4_LOCATOR and isinstance(addr, bytes) and len(addr) == 4:
        loc = asa_locator(ipaddress.IPv4Address(addr), ifi, diverted)
        loc.is_ipaddress = True
    elif kind in (O_FQDN_LOCATOR, O_URI_LOCATOR) and isinstance(addr, str):
        loc = asa_locator(addr, ifi, diverted)
        loc.is_fqdn = kind == O_FQDN_LOCATOR
        loc.is_uri = kind == O_URI_LOCATOR
    else:
        raise ValueError("not a locator option")
    if len(opt) > 2:
        loc.protocol = opt[2]
    if len(opt) > 3:
        loc.port = opt[3]
    return loc


def expire_of(ttl_ms: Optional[int]) -> int:
    """graspy's expiry: the monotonic second it ends, 0 for never."""
    if ttl_ms is None:
        return 0
    return int(time.monotonic() + ttl_ms / 1000)


def located(form: Dict[str, Any]) -> asa_locator:
    """An asa_locator from graspd's asa-locator map."""
    loc = locator_from_wire(
        form["locator"], form.get("ifindex", 0), bool(form.get("diverted", False))
    )
    loc.expire = expire_of(form.get("ttl_ms"))
    return loc


def peer_form(loc: asa_locator) -> Dict[str, Any]:
    """graspd's asa-locator map for a peer the ASA names."""
    form: Dict[str, Any] = {"locator": locator_to_wire(loc)}
    if isinstance(loc.ifi, int) and loc.ifi > 0:
        form["ifindex"] = loc.ifi
    if loc.diverted:
        form["diverted"] = True
    return form


def flooded(entry: Dict[str, Any]) -> tagged_objective:
    """A tagged_objective from graspd's flood-entry map (graspy's shape: the
    source is always an asa_locator, its locator None when the flood had
    none)."""
    obj = objective_from_wire(entry["objective"])
    ifi = entry.get("ifindex")
    if "locator" in entry:
        src = locator_from_wire(entry["locator"], ifi, False)
    else:
        src = asa_locator(None, None, False)
    src.expire = expire_of(entry.get("ttl_ms"))
    return tagged_objective(obj, src)


def tagged_form(t: tagged_objective) -> Dict[str, Any]:
    """graspd's tagged-objective map."""
    form: Dict[str, Any] = {"objective": objective_to_wire(t.objective)}
    if t.source is not None:
        form["locator"] = locator_to_wire(t.source)
    return form


def packed(loc: Optional[asa_locator]) -> Optional[bytes]:
    """The packed address of a locator, as graspy's session handles keep it."""
    if loc is not None and loc.is_ipaddress:
        return loc.locator.packed
    return None


def decode_value(b: bytes) -> Any:
    """One CBOR item's bytes as a Python object (the raw channel)."""
    return cbor2.loads(b)


def encode_value(v: Any) -> bytes:
    """A Python object as one CBOR item's bytes; ValueError when it cannot be."""
    try:
        return cbor2.dumps(v)
    except Exception as e:
        raise ValueError("cannot be sent as CBOR: %s" % e) from None

