"""graspy's ASA API (the ``grasp`` module), on graspd's shared GRASP core.

An ASA written for graspy imports this module and runs unchanged: the same
functions, signatures, defaults, return shapes, error codes and classes.
Instead of starting a GRASP engine in the ASA's own process, every call goes
to graspd's ASA socket (``GRASP_API_SOCKET``, else ``/run/graspd/api.sock``),
so every ASA of the node shares graspd's discovery and flood caches, its
relaying and its security backend (where graspy would ask for a QUADS
password, graspd's configuration already holds the key).

Calls block, as graspy's do, and are safe from many threads at once: one
connection carries them all, a reader thread hands each answer to its
caller.  Nothing here ever prompts.  When graspd cannot be reached, calls
return the error ``errors.noCore`` (107) and the reason is logged once on
stderr, saying how to start graspd; nothing hangs.

Differences from graspy that an ASA can see are listed in the package's
README ("Running your graspy ASAs on graspd").
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import queue
import random
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

from graspd_asa import core as _core_mod
from graspd_asa import forms as _forms
from graspd_asa.forms import (  # noqa: F401  (graspy's names, re-exported)
    ALL_GRASP_NEIGHBORS_4,
    ALL_GRASP_NEIGHBORS_6,
    B_DISC,
    B_DRY,
    B_NEG,
    B_SYNCH,
    F_DISC,
    F_NEG,
    F_NEG_DRY,
    F_SYNCH,
    GRASP_DEF_LOOPCT,
    GRASP_DEF_MAX_SIZE,
    GRASP_DEF_TIMEOUT,
    GRASP_LISTEN_PORT,
    M_DISCOVERY,
    M_END,
    M_FLOOD,
    M_INVALID,
    M_NEGOTIATE,
    M_NOOP,
    M_REQ_NEG,
    M_REQ_SYN,
    M_RESPONSE,
    M_SYNCH,
    M_WAIT,
    O_ACCEPT,
    O_DECLINE,
    O_DIVERT,
    O_FQDN_LOCATOR,
    O_IPv4_LOCATOR,
    O_IPv6_LOCATOR,
    O_URI_LOCATOR,
    asa_locator,
    objective,
    tagged_objective,
)

_log = logging.getLogger("graspd_asa")

####################################
# Error codes                      #
####################################


class _error_codes:
    """The error codes by name: RFC 8991's 0-38, graspy's 39, and graspd's
    own from 100 (its ASA socket's)."""

    def __init__(self) -> None:
        self.ok = 0
        self.declined = 1
        self.noReply = 2
        self.unspec = 3
        self.ASAfull = 4
        self.dupASA = 5
        self.noASA = 6
        self.notYourASA = 7
        self.notBoth = 8
        self.notDry = 9
        self.notOverlap = 10
        self.objFull = 11
        self.objReg = 12
        self.notYourObj = 13
        self.notObj = 14
        self.notNeg = 15
        self.noSecurity = 16
        self.noDiscReply = 17
        self.sockErrNegRq = 18
        self.noSession = 19
        self.noSocket = 20
        self.loopExhausted = 21
        self.sockErrNegStep = 22
        self.noPeer = 23
        self.CBORfail = 24
        self.invalidNeg = 25
        self.invalidEnd = 26
        self.noNegReply = 27
        self.noValidStep = 28
        self.sockErrWait = 29
        self.sockErrEnd = 30
        self.IDclash = 31
        self.notSynch = 32
        self.notFloodDisc = 33
        self.sockErrSynRq = 34
        self.noListener = 35
        self.noSynchReply = 36
        self.noValidSynch = 37
        self.invalidLoc = 38
        self.sockErr = 39
        self.badRequest = 100
        self.unsupported = 101
        self.notAuthorized = 102
        self.cancelled = 103
        self.tooMany = 104
        self.tooLarge = 105
        self.notHello = 106
        self.noCore = 107


errors = _error_codes()

_GRASPD_TEXTS = {
    100: "Bad request: parameters missing, of the wrong type or out of range",
    101: "Not supported by this GRASP core",
    102: "Not authorized by the GRASP core's policy",
    103: "Cancelled",
    104: "Too many (a limit of the GRASP core)",
    105: "Too large for the GRASP core's limits",
    106: "Not greeted: hello comes first",
    107: "No GRASP core: graspd's ASA socket is not answering",
}


class _Etext(list):
    """graspy's list of error texts (0-39), which also answers graspd's own
    codes (100-107) by index."""

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int) and i in _GRASPD_TEXTS:
            return _GRASPD_TEXTS[i]
        return super().__getitem__(i)


etext = _Etext(
    [
        "OK",
        "Declined",
        "No reply",
        "Unspecified error",
        "ASA registry full",
        "Duplicate ASA name",
        "ASA not registered",
        "ASA registered but not by you",
        "Objective cannot support both negotiation and synchronization",
        "Dry-run allowed only with negotiation",
        "Overlap not supported by this implementation",
        "Objective registry full",
        "Objective already registered",
        "Objective not registered by this ASA",
        "Objective not found",
        "Objective not negotiable",
        "No security",
        "No reply to discovery",
        "Socket error sending negotiation request",
        "No session",
        "No socket",
        "Loop count exhausted",
        "Socket error sending negotiation step",
        "Negotiation peer not listening",
        "CBOR decode failure",
        "Invalid Negotiate message",
        "Invalid end message",
        "No reply to negotiation step",
        "No valid reply to negotiation step",
        "Socket error sending wait message",
        "Socket error sending end message",
        "Incoming request Session ID clash",
        "Not a synchronization objective",
        "Not flooded and no reply to discovery",
        "Socket error sending synch request",
        "Synchronization peer not listening",
        "No reply to synchronization request",
        "No valid reply to synchronization request",
        "Invalid locator",
        "Socket error sending gmessage",
    ]
)

####################################
# Module state                     #
####################################

#: Verbose printing (ttprint), as graspy's test mode; skip_dialogue sets it.
test_mode = False
#: True once connected to a DULL graspd.
DULL = False
#: graspy's CSPRNG, which ASAs use for their own random choices.
_prng = random.SystemRandom()
#: ``::``, which as a flood's source locator means "this link's link-local
#: address, loop count 1".
_unspec_address = ipaddress.IPv6Address("::")
#: Kept for ASA loaders that set it; one graspd serves many ASAs anyway.
_multi_asas = False

_silent = False
_be_dull = False
_grasp_initialised = False

_core: Optional[_core_mod.Core] = None
_core_lock = threading.Lock()
_told: Optional[str] = None
_last_detail = ""
_asas: Dict[int, str] = {}
# The flood entries get_flood returned, by the tagged_objective handed out,
# for expire_flood (graspy matches the very object).
_floods: "weakref.WeakKeyDictionary[tagged_objective, Dict[str, Any]]" = (
    weakref.WeakKeyDictionary()
)
_print_lock = threading.Lock()
_dobubbles = False
_bubbleQ: "queue.Queue[str]" = queue.Queue(100)


class _session_handle:
    """A negotiation session: ``id_value`` (graspd's handle for it on this
    connection) and ``id_source`` (the peer's packed address when this side
    answered a request, else None)."""

    def __init__(self, id_value: int, id_source: Optional[bytes]) -> None:
        self.id_value = id_value
        self.id_source = id_source


class _registered_objective:
    """A read-only view of one registration (``_obj_registry``), from
    graspd's dump."""

    def __init__(self, objective: objective, asa_id: List[Any]) -> None:
        self.objective = objective
        self.asa_id = asa_id
        self.overlap_OK = False
        self.protocol = _forms.IPPROTO_TCP
        self.locators: List[asa_locator] = []
        self.port = 0
        self.discoverable = False
        self.local = False
        self.rapid = False
        self.ttl = 600000
        self.listening = 0
        self.listen_q = None


def __getattr__(name: str) -> Any:
    """The node facts and cache views graspy keeps as module globals, read
    from graspd when asked for."""
    if name in ("_my_address", "_session_locator"):
        c = _connected()
        if c is None:
            raise AttributeError(name)
        return _node_address(c)
    if name == "_relay_needed":
        c = _connected()
        if c is None:
            raise AttributeError(name)
        return bool(c.node.get("relay", False))
    if name == "_obj_registry":
        return tuple(_registry_view())
    if name == "_flood_cache":
        return tuple(_flood_view())
    raise AttributeError("module 'grasp' has no attribute %r" % name)


####################################
# The connection                   #
####################################


def _connect() -> Optional[_core_mod.Core]:
    """The connection, made (or made again, if graspd went away) now."""
    global _core, _grasp_initialised, DULL, _told
    with _core_lock:
        if _core is not None and _core.dead is None:
            return _core
        if _core is not None:
            _asas.clear()
        path = _core_mod.socket_path(_be_dull)
        try:
            _core = _core_mod.Core(path, dull=_be_dull)
        except _core_mod.ConnectError as e:
            _core = None
            if _told != str(e):
                _told = str(e)
                _log.error("%s", e)
            return None
        _grasp_initialised = True
        DULL = bool(_core.node.get("dull", False))
        _told = None
        return _core


def _connected() -> Optional[_core_mod.Core]:
    """The connection if there is one (connecting if never tried)."""
    if _core is None:
        return _connect()
    return _core


def _initialise_grasp() -> None:
    """Connects to graspd now (graspy starts its engine here)."""
    _connect()


def _call(method: str, params: Dict[str, Any]) -> Tuple[int, Any]:
    """One call to graspd: (error code, result)."""
    global _last_detail
    c = _core
    if c is None:
        return errors.noCore, None
    code, detail, result = c.call(method, params)
    if code:
        _last_detail = detail
        if c.dead is not None and _told != c.dead:
            _tell(c.dead)
        ttprint("graspd:", method, "->", code, detail)
    return code, result


def _tell(why: str) -> None:
    global _told
    _told = why
    _log.error("%s", why)


def _node_address(c: _core_mod.Core) -> Any:
    try:
        return _forms.locator_from_wire(c.node["locator"], 0, False).locator
    except Exception:  # hello without a locator: no address to give
        return _unspec_address


def _ms(timeout: Any, default: int) -> int:
    """A timeout in ms as graspy reads it: None or 0 means the default."""
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        return default
    return int(timeout)


def _sid(shandle: Any) -> Optional[int]:
    if isinstance(shandle, _session_handle) and isinstance(shandle.id_value, int):
        return shandle.id_value
    return None


def _obj(obj: Any) -> Optional[bytes]:
    global _last_detail
    try:
        return _forms.objective_to_wire(obj)
    except (ValueError, AttributeError) as e:
        _last_detail = str(e)
        ttprint("objective refused:", e)
        return None


def _to_peer(asa_handle: int, o: bytes, loc: Any, timeout: Any) -> Optional[Dict[str, Any]]:
    """The params of a call to a peer (synchronize, request_negotiate): the
    peer locator if given (else graspd finds one); None when ``loc`` is not
    a locator."""
    params: Dict[str, Any] = {
        "asa": asa_handle,
        "objective": o,
        "timeout_ms": _ms(timeout, GRASP_DEF_TIMEOUT),
    }
    if loc is not None:
        try:
            params["peer"] = _forms.peer_form(loc)
        except (ValueError, AttributeError) as e:
            ttprint("locator refused:", e)
            return None
    return params


####################################
# The API                          #
####################################


def skip_dialogue(
    testing: Any = False,
    selfing: Any = False,
    diagnosing: Any = True,
    quadsing: Any = True,
    be_dull: Any = False,
    silent: Any = False,
    figging: Any = True,
) -> None:
    """Sets the options graspy's start-up dialogue would ask for; call it
    before the first register_asa (later it does nothing).

    ``testing`` turns on test mode (ttprint prints), ``be_dull`` uses the
    node's DULL graspd (``GRASP_DULL_API_SOCKET``), ``silent`` stops tprint.
    ``selfing``, ``diagnosing``, ``quadsing`` and ``figging`` are graspd's
    configuration now.  Nothing is ever asked: "ask" counts as the default.
    """
    global test_mode, _be_dull, _silent
    if _grasp_initialised:
        return
    test_mode = testing is True
    _be_dull = be_dull is True
    _silent = silent is True


def register_asa(asa_name: str) -> Tuple[int, Optional[int]]:
    """Registers an ASA; returns (errorcode, asa_handle)."""
    c = _connect()
    if c is None:
        return errors.noCore, None
    if not isinstance(asa_name, str):
        return errors.unspec, None
    e, r = _call("register_asa", {"name": asa_name})
    if e:
        return e, None
    handle = r["asa"]
    _asas[handle] = asa_name
    return errors.ok, handle


def deregister_asa(asa_handle: int, asa_name: str) -> int:
    """Deregisters an ASA and every objective it registered; returns errorcode."""
    name = _asas.get(asa_handle)
    if name is None:
        return errors.noASA
    if name != asa_name:
        return errors.notYourASA
    e, _ = _call("deregister_asa", {"asa": asa_handle})
    if not e or e == errors.noASA:
        _asas.pop(asa_handle, None)
    return e


def register_obj(
    asa_handle: int,
    obj: objective,
    ttl: Optional[int] = None,
    discoverable: bool = False,
    overlap: bool = False,
    local: bool = False,
    rapid: bool = False,
    locators: List[asa_locator] = [],  # noqa: B006  (graspy's signature)
) -> int:
    """Registers an objective of the ASA; returns errorcode.

    ``ttl`` is how long discoverers may cache the answer (ms, default
    600000), ``discoverable`` answers discovery before the first listen,
    ``overlap`` lets other ASAs register it too, ``local`` answers with
    the link-local address, ``rapid`` puts the value in discovery responses
    (graspy's rapid synchronization), ``locators`` are answered instead of
    graspd's own address."""
    if getattr(obj, "synch", False) and (obj.neg or obj.dry):
        return errors.notBoth
    if getattr(obj, "dry", False) and not obj.neg:
        return errors.notDry
    o = _obj(obj)
    if o is None:
        return errors.unspec
    params: Dict[str, Any] = {
        "asa": asa_handle,
        "objective": o,
        "discoverable": bool(discoverable),
        "overlap": bool(overlap),
        "local": bool(local),
        "rapid": bool(rapid),
    }
    if isinstance(ttl, int) and ttl > 0:
        params["ttl_ms"] = ttl
    if locators:
        try:
            params["locators"] = [_forms.locator_to_wire(x) for x in locators]
        except (ValueError, AttributeError):
            return errors.invalidLoc
    e, _ = _call("register_objective", params)
    return e


def deregister_obj(asa_handle: int, obj: objective) -> int:
    """Deregisters an objective of the ASA; returns errorcode."""
    e, _ = _call("deregister_objective", {"asa": asa_handle, "name": obj.name})
    return e


def discover(
    asa_handle: int,
    obj: objective,
    timeout: Optional[int],
    flush: bool = False,
    minimum_TTL: int = -1,
    relay_ifi: Any = False,
    relay_shandle: Any = None,
) -> Tuple[int, List[asa_locator]]:
    """Finds peers offering the objective; returns (errorcode, [asa_locator]).

    Cached answers come at once; otherwise it waits the whole timeout (ms,
    at least 100 per loop count) collecting every answer, as graspy does.
    ``flush`` (or ``minimum_TTL=0``) forgets the cached answers first;
    ``minimum_TTL`` > 0 drops those expiring sooner than that (ms).
    ``relay_ifi`` and ``relay_shandle`` are graspy's own (graspd relays)."""
    if DULL:
        obj.loop_count = 1  # graspy mutates the caller's objective in DULL
    o = _obj(obj)
    if o is None:
        return errors.unspec, []
    floor = 100 * max(int(obj.loop_count), 1)
    params: Dict[str, Any] = {
        "asa": asa_handle,
        "objective": o,
        "timeout_ms": max(_ms(timeout, floor), floor),
        "flush": bool(flush) or minimum_TTL == 0,
    }
    if isinstance(minimum_TTL, int) and minimum_TTL > 0:
        params["min_ttl_ms"] = minimum_TTL
    e, r = _call("discover", params)
    if e:
        return e, []
    return errors.ok, [_forms.located(f) for f in r or []]


def _negotiation(e: int, r: Any, obj: objective, shandle: Any = None) -> Tuple[int, Any, Any]:
    """graspy's 3-tuple for a negotiation step's outcome: a step keeps the
    session's handle (a requester's has no id_source, as in graspy)."""
    if e:
        return e, None, None
    outcome = r.get("outcome")
    if outcome == "accepted":
        return errors.ok, None, obj
    if outcome == "declined":
        return errors.declined, None, r.get("reason")
    if outcome == "step":
        if shandle is None or _sid(shandle) != r["session"]:
            shandle = _session_handle(r["session"], None)
        return errors.ok, shandle, _forms.objective_from_wire(r["objective"])
    if "session" in r:  # noloop: the raw channel is open
        return errors.noReply, _session_handle(r["session"], None), None
    return errors.unspec, None, None


def req_negotiate(
    asa_handle: int,
    obj: objective,
    peer: Optional[asa_locator],
    timeout: Optional[int],
    noloop: bool = False,
) -> Tuple[int, Any, Any]:
    """Starts a negotiation; returns (errorcode, session_handle, objective).

    (0, None, obj): the peer accepted; (0, handle, their_obj): go on with
    negotiate_step; (declined, None, reason); (errorcode, None, None).
    With ``noloop`` the request opens graspy's raw channel instead:
    (noReply, handle, None), then gsend/grecv.  ``peer`` None discovers
    one first; ``timeout`` in ms (default 60000)."""
    if not (getattr(obj, "neg", False) or getattr(obj, "dry", False)):
        return errors.notNeg, None, None
    o = _obj(obj)
    if o is None:
        return errors.unspec, None, None
    params = _to_peer(asa_handle, o, peer, timeout)
    if params is None:
        return errors.invalidLoc, None, None
    if noloop:
        params["noloop"] = True
    e, r = _call("request_negotiate", params)
    return _negotiation(e, r, obj)


def negotiate_step(
    asa_handle: int, shandle: Any, obj: objective, timeout: Optional[int]
) -> Tuple[int, Any, Any]:
    """Sends the next offer; returns as req_negotiate does."""
    if not getattr(obj, "neg", False):
        return errors.notNeg, None, None
    sid = _sid(shandle)
    if sid is None:
        return errors.noSession, None, None
    o = _obj(obj)
    if o is None:
        return errors.unspec, None, None
    e, r = _call(
        "negotiate_step",
        {
            "asa": asa_handle,
            "session": sid,
            "objective": o,
            "timeout_ms": _ms(timeout, GRASP_DEF_TIMEOUT),
        },
    )
    return _negotiation(e, r, obj, shandle)


def negotiate_wait(asa_handle: int, shandle: Any, timeout: Optional[int]) -> int:
    """Asks the peer to wait (M_WAIT) ``timeout`` ms; returns errorcode."""
    sid = _sid(shandle)
    if sid is None:
        return errors.noSession
    e, _ = _call(
        "negotiate_wait",
        {"asa": asa_handle, "session": sid, "wait_ms": _ms(timeout, GRASP_DEF_TIMEOUT)},
    )
    return e


def end_negotiate(asa_handle: int, shandle: Any, result: bool, reason: Optional[str] = None) -> int:
    """Ends the session, accepting (``result`` True) or declining with an
    optional reason; returns errorcode."""
    sid = _sid(shandle)
    if sid is None:
        return errors.noSession
    params: Dict[str, Any] = {"asa": asa_handle, "session": sid, "accept": bool(result)}
    if not result and isinstance(reason, str):
        params["reason"] = reason
    e, _ = _call("end_negotiate", params)
    return e


def send_invalid(asa_handle: int, shandle: Any, info: Any = "No information") -> int:
    """Sends M_INVALID with ``info`` and ends the session; returns errorcode."""
    sid = _sid(shandle)
    if sid is None:
        return errors.noSession
    e, _ = _call("send_invalid", {"asa": asa_handle, "session": sid, "info": info})
    return e


def listen_negotiate(asa_handle: int, obj: objective) -> Tuple[int, Any, Any]:
    """Waits for a negotiation request for the objective; returns
    (errorcode, session_handle, requested_objective).  Several threads may
    listen at once; stop_negotiate ends every wait (with ``cancelled``)."""
    if not (getattr(obj, "neg", False) and getattr(obj, "discoverable", True)):
        return errors.notNeg, None, None
    e, r = _call("listen_negotiate", {"asa": asa_handle, "name": obj.name})
    if e:
        return e, None, None
    peer = r.get("peer")
    src = _forms.packed(_forms.located(peer)) if peer else None
    return errors.ok, _session_handle(r["session"], src), _forms.objective_from_wire(r["objective"])


def stop_negotiate(asa_handle: int, obj: objective) -> int:
    """Stops listening for the objective; returns errorcode."""
    e, _ = _call("stop_negotiate", {"asa": asa_handle, "name": obj.name})
    return e


def gsend(asa_handle: int, shandle: Any, message: Any) -> int:
    """Sends one raw CBOR item on a raw-channel session; returns errorcode."""
    sid = _sid(shandle)
    if sid is None:
        return errors.noSession
    try:
        data = _forms.encode_value(message)
    except ValueError:
        return errors.sockErr
    e, _ = _call("gsend", {"asa": asa_handle, "session": sid, "data": data})
    return e


def grecv(asa_handle: int, shandle: Any, timeout: Optional[int]) -> Tuple[int, Any]:
    """Receives one raw CBOR item on a raw-channel session; returns
    (errorcode, object); noReply when ``timeout`` ms pass first."""
    sid = _sid(shandle)
    if sid is None:
        return errors.noSession, None
    e, r = _call(
        "grecv",
        {"asa": asa_handle, "session": sid, "timeout_ms": _ms(timeout, GRASP_DEF_TIMEOUT)},
    )
    if e:
        return e, None
    try:
        return errors.ok, _forms.decode_value(r)
    except Exception:  # the peer's bytes
        return errors.CBORfail, None


def synchronize(
    asa_handle: int, obj: objective, loc: Optional[asa_locator], timeout: Optional[int]
) -> Tuple[int, Any]:
    """Gets the objective's value: from ``loc``, else from the flood cache,
    else from a peer found by discovery; returns (errorcode, objective)."""
    if not getattr(obj, "synch", False):
        return errors.notSynch, None
    o = _obj(obj)
    if o is None:
        return errors.unspec, None
    params = _to_peer(asa_handle, o, loc, timeout)
    if params is None:
        return errors.invalidLoc, None
    e, r = _call("synchronize", params)
    if e:
        return e, None
    return errors.ok, _forms.objective_from_wire(r)


def listen_synchronize(asa_handle: int, obj: objective) -> int:
    """Answers synchronization requests with the objective's value (call
    again to change the value); returns errorcode at once."""
    if not (getattr(obj, "synch", False) and getattr(obj, "discoverable", True)):
        return errors.notSynch
    o = _obj(obj)
    if o is None:
        return errors.unspec
    e, _ = _call("listen_synchronize", {"asa": asa_handle, "objective": o})
    return e


def stop_synchronize(asa_handle: int, obj: objective) -> int:
    """Stops answering synchronization requests; returns errorcode."""
    e, _ = _call("stop_synchronize", {"asa": asa_handle, "name": obj.name})
    return e


def flood(asa_handle: int, ttl: int, *tagged_obj: Any) -> int:
    """Floods objectives with their source locators: ``flood(h, ttl, t1,
    t2, ...)`` or ``flood(h, ttl, [t1, t2, ...])``; ``ttl`` in ms (0:
    forever); returns errorcode.

    As in graspy, a first source locator of ``::`` (or DULL) floods on the
    link only: the first objective's loop count becomes 1."""
    if len(tagged_obj) == 1 and isinstance(tagged_obj[0], list):
        tagged = tagged_obj[0]
    else:
        tagged = list(tagged_obj)
    if not tagged or not all(isinstance(t, tagged_objective) for t in tagged):
        return errors.unspec
    if not isinstance(ttl, int) or ttl < 0:
        return errors.unspec
    first = tagged[0]
    if DULL or (
        first.source is not None
        and isinstance(first.source, asa_locator)
        and first.source.locator == _unspec_address
    ):
        first.objective.loop_count = 1
    forms = []
    for t in tagged:
        if not getattr(t.objective, "synch", False):
            return errors.notSynch
        o = _obj(t.objective)
        if o is None:
            return errors.unspec
        form: Dict[str, Any] = {"objective": o}
        if t.source is not None:
            try:
                form["locator"] = _forms.locator_to_wire(t.source)
            except (ValueError, AttributeError):
                return errors.invalidLoc
        forms.append(form)
    e, _ = _call("flood", {"asa": asa_handle, "ttl_ms": ttl, "tagged": forms})
    return e


def get_flood(asa_handle: int, obj: objective) -> Tuple[int, Any]:
    """The unexpired flooded values of the objective; returns (errorcode,
    [tagged_objective])."""
    if not getattr(obj, "synch", False):
        return errors.notSynch, None
    e, r = _call("get_flood", {"asa": asa_handle, "name": obj.name})
    if e:
        return e, None
    out = []
    for entry in r or []:
        t = _forms.flooded(entry)
        _floods[t] = entry
        out.append(t)
    return errors.ok, out


def expire_flood(asa_handle: int, tagged_obj: tagged_objective) -> int:
    """Expires a flooded value get_flood returned (that very object; one
    flooded forever cannot be); returns errorcode."""
    if asa_handle not in _asas:
        return errors.noASA
    entry = _floods.get(tagged_obj) if isinstance(tagged_obj, tagged_objective) else None
    src = getattr(tagged_obj, "source", None)
    if entry is None or src is None or not src.expire > 0:
        return errors.ok  # graspy: nothing matches, nothing happens
    e, _ = _call("expire_flood", {"asa": asa_handle, "entry": entry})
    if not e:
        src.expire = int(time.monotonic()) - 1
    return e


####################################
# Utilities                        #
####################################


def tname(x: Any) -> str:
    """The name of x's type (graspy's helper)."""
    return type(x).__name__


def _hexit(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.hex()
    if isinstance(x, list):
        return [_hexit(y) for y in x]
    return x


def tprint(*whatever: Any, ttp: bool = False) -> None:
    """Thread-safe print, prefixed with the thread's class name and id (bytes
    in hex in test mode); also feeds the bubble window."""
    if _silent:
        return
    t = threading.current_thread()
    with _print_lock:
        s = ""
        parts = []
        for x in whatever:
            try:
                xx = _hexit(copy.deepcopy(x)) if test_mode else x
            except Exception:  # cannot be copied (a CBORTag, say): as it is
                xx = x
            try:
                parts.append(str(xx))
            except Exception:  # cannot be shown
                parts.append("[unprintable]")
        s = " ".join(parts)
        print(type(t).__name__, threading.get_ident(), s, "", flush=True)
        if _dobubbles and not ttp:
            try:
                _bubbleQ.put_nowait(s if len(s) <= 200 else s[:200] + " ...")
            except queue.Full:
                pass


def ttprint(*whatever: Any) -> None:
    """tprint in test mode only."""
    if test_mode:
        tprint(*whatever, ttp=True)


def init_bubble_text(cap: str) -> None:
    """Shows tprint's output in a window of speech bubbles (tkinter) labelled
    ``cap``, as graspy does; without tkinter or a display it says so and
    tprint goes on printing."""
    global _dobubbles
    if _dobubbles:
        return
    _dobubbles = True
    threading.Thread(target=_bubbles, args=(cap,), name="bubbles", daemon=True).start()


def _bubbles(cap: str) -> None:
    global _dobubbles
    try:
        import tkinter as tk

        root = tk.Tk(className=(" " + cap) if cap[:1].isupper() else (cap or " GRASP"))
        root.geometry("500x500")
        colour = "#%02x%02x%02x" % tuple(random.randrange(1, 255) for _ in range(3))
        can = tk.Canvas(root, background=colour)
        can.pack(fill=tk.BOTH, expand=1)
        root.update()
    except Exception:  # no tkinter, or no display
        _dobubbles = False
        tprint("Could not start Tkinter")
        return
    bubbles: List[Tuple[int, int]] = []
    while True:
        try:
            text = _bubbleQ.get(timeout=0.1)
        except queue.Empty:
            text = None
        try:
            if text is not None:
                for items in bubbles:
                    for i in items:
                        can.move(i, 0, -60)
                x = random.randrange(240, 270)
                label = can.create_text(x - 180, 390, text=text, anchor=tk.NW, width=350)
                x0, y0, x1, y1 = can.bbox(label)
                box = can.create_rectangle(x0 - 8, y0 - 6, x1 + 8, y1 + 6, fill="white", outline="black")
                can.tag_raise(label)
                bubbles.append((box, label))
                if len(bubbles) > 8:
                    for i in bubbles.pop(0):
                        can.delete(i)
            root.update_idletasks()
            root.update()
        except Exception:  # somebody closed the window
            break
    _dobubbles = False
    tprint("Bubbles over")


def _registry_view() -> List[_registered_objective]:
    d = _dump()
    out = []
    for o in d.get("objectives", []) if d else []:
        owners = [a.get("asa", a.get("name")) for a in o.get("owners", [])]
        v = _registered_objective(_forms.objective_from_wire(o["objective"]), owners)
        v.overlap_OK = bool(o.get("overlap"))
        v.discoverable = bool(o.get("discoverable"))
        v.local = bool(o.get("local"))
        v.rapid = bool(o.get("rapid"))
        v.ttl = int(o.get("ttl_ms", 600000))
        v.listening = int(bool(o.get("listen_negotiate")) or bool(o.get("listen_synchronize")))
        v.locators = [_forms.locator_from_wire(x, 0, False) for x in o.get("locators", [])]
        out.append(v)
    return out


def _flood_view() -> List[tagged_objective]:
    d = _dump()
    return [_forms.flooded(e) for e in d.get("flood_cache", [])] if d else []


def _dump() -> Optional[Dict[str, Any]]:
    """graspd's dump, read through any ASA of this process (None without one)."""
    for h in list(_asas):
        e, r = _call("dump", {"asa": h})
        if not e:
            return r
    return None


def dump_all(partial: bool = False) -> None:
    """Prints, in graspy's layout, what graspd holds that this process may
    read: node facts, ASAs, objective registry, discovery cache and flood
    cache (``partial``: the objective registry and flood cache only)."""
    c = _connected()
    d = _dump()
    if c is None or d is None:
        print("dump_all: no ASA of this process is registered with graspd")
        return
    if not partial:
        print("\nThread count:", threading.active_count(), "\n------------")
        print("\nMy address:", str(_node_address(c)), "\n----------")
        print("\nSession locator:", str(_node_address(c)), "\n---------------")
        print("\nLink local zone index(es):\n-------------------------")
        for i in c.node.get("interfaces", []):
            print([i.get("index"), ipaddress.IPv6Address(i.get("link_local"))])
        print("\nASA registry contents:\n---------------------")
        for a in d.get("asas", []):
            print(a.get("name"), "handle:", a.get("asa", "(another process)"))
    print("\nObjective registry contents:\n---------------------------")
    for x in _registry_view():
        o = x.objective
        print(o.name, "ASA:", x.asa_id, "Listen:", x.listening, "Port", x.port, "Neg:", o.neg,
              "Synch:", o.synch, "Count:", o.loop_count, "Value:", o.value)
        if x.locators:
            print("Predefined locators:", x.locators)
    if not partial:
        print("\nDiscovery cache contents:\n------------------------")
        for entry in d.get("discovery_cache", []):
            print(entry.get("name"), "locators:")
            for f in entry.get("locators", []):
                y = _forms.located(f)
                print(y.locator, y.protocol, y.port, "Diverted:", y.diverted, "Expiry:", y.expire)
    print("\nFlood cache contents:\n--------------------")
    for t in _flood_view():
        x = t.objective
        s = t.source or asa_locator(None, None, False)
        print(x.name, "count:", x.loop_count, "value:", x.value,
              "source:", s.locator, s.protocol, s.port, s.expire)
