"""graspy's RFC 8991 flavour of the ASA API (the ``graspi`` module), on graspd.

The same as :mod:`grasp` except that ``request_negotiate`` and
``negotiate_step`` return RFC 8991's 4-tuples ``(errorcode, session_handle,
objective, reason)``, separating a decline's reason from the objective.
Everything else is ``grasp``'s; names graspi does not export (gsend,
grecv, req_negotiate, the constants) are reached as ``graspi.grasp.X``.
"""

import typing as _t

import grasp
from grasp import (  # noqa: F401  (graspy's graspi exports exactly these)
    asa_locator,
    deregister_asa,
    deregister_obj,
    discover,
    dump_all,
    end_negotiate,
    errors,
    etext,
    expire_flood,
    flood,
    get_flood,
    init_bubble_text,
    listen_negotiate,
    listen_synchronize,
    negotiate_wait,
    objective,
    register_asa,
    register_obj,
    send_invalid,
    skip_dialogue,
    stop_negotiate,
    stop_synchronize,
    synchronize,
    tagged_objective,
    tprint,
    ttprint,
)

_Step = _t.Tuple[int, _t.Any, _t.Any, _t.Optional[str]]


def _four(e: int, s: _t.Any, r: _t.Any) -> _Step:
    if e == errors.ok:
        return e, s, r, None
    if e == errors.declined:
        return e, None, None, r
    if e == errors.noReply and s is not None:
        return e, s, None, None  # noloop: the raw channel's session
    return e, None, None, None


def request_negotiate(
    asa_handle: int,
    obj: objective,
    peer: _t.Optional[asa_locator],
    timeout: _t.Optional[int],
    noloop: bool = False,
) -> _Step:
    """Starts a negotiation; returns (errorcode, session_handle, objective,
    reason): (0, None, obj, None) accepted, (0, handle, their_obj, None) go
    on, (declined, None, None, reason), (errorcode, None, None, None).
    ``noloop`` (graspy's raw channel, an extension here) gives (noReply,
    handle, None, None)."""
    return _four(*grasp.req_negotiate(asa_handle, obj, peer, timeout, noloop))


def negotiate_step(
    asa_handle: int, shandle: _t.Any, obj: objective, timeout: _t.Optional[int]
) -> _Step:
    """Sends the next offer; returns as request_negotiate does."""
    return _four(*grasp.negotiate_step(asa_handle, shandle, obj, timeout))


_most = [
    "objective",
    "asa_locator",
    "tagged_objective",
    "register_asa",
    "deregister_asa",
    "register_obj",
    "deregister_obj",
    "discover",
    "negotiate_wait",
    "end_negotiate",
    "listen_negotiate",
    "stop_negotiate",
    "send_invalid",
    "synchronize",
    "listen_synchronize",
    "stop_synchronize",
    "flood",
    "get_flood",
    "expire_flood",
    "skip_dialogue",
    "tprint",
    "ttprint",
    "init_bubble_text",
    "dump_all",
    "errors",
    "etext",
]
__all__ = _most + ["request_negotiate", "negotiate_step"]
