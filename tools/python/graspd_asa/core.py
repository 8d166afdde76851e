"""One connection to graspd's ASA socket, shared by every thread of the process.

The ASA protocol (``tools/asa-api/asa-protocol.cddl`` in the repository) runs
over a Unix stream socket: each frame is a 4-byte big-endian length and one
CBOR item.  Requests are ``[0, id, method, params]``; graspd answers each with
``[1, id, err, result]``, in any order, so many threads may have calls
outstanding on the one socket at once.  Whoever reads the socket hands each
answer to the thread waiting for its id (on a lock of its own).  A call
that is the only one outstanding reads its answer itself: a lone thread so
sends and reads with no thread switch in between (a reader thread there
added two wake-ups to every call, a tenth of its time on a small machine).
When calls overlap, the reader thread reads for all of them, as long as
any waits: handing the reading from caller to caller would cost a wake-up
at each hand-over.

When graspd goes away (it stopped, or closed the connection), every
outstanding call and every later one answers :data:`NO_CORE` at once, with
a detail saying what happened: nothing hangs.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import cbor2

from . import __version__

#: The protocol version this client speaks.
PROTOCOL_VERSION = 1
#: Where graspd's ASA socket is when ``GRASP_API_SOCKET`` is not set.
DEFAULT_SOCKET = "/run/graspd/api.sock"
#: Where a DULL graspd's ASA socket is when ``GRASP_DULL_API_SOCKET`` is not set.
DEFAULT_DULL_SOCKET = "/run/graspd/dull.sock"
#: The error code of a call that could not reach graspd (the engine's
#: ``ErrorCode::NoCore``).
NO_CORE = 107
#: The largest frame this client takes from graspd (hello says so).
MAX_FRAME = 1 << 20
#: The features this client uses (hello's ``features``).
FEATURES = ["raw-channel", "dump"]

_HEADER = struct.Struct(">I")
#: How long the reader thread goes on reading after the last overlapping
#: call was answered, in ms.
_LINGER_MS = 2

#: A call's outcome: the error code (0 for success), graspd's detail for
#: people (empty on success) and the result.
Answer = Tuple[int, str, Any]


class ConnectError(Exception):
    """graspd could not be reached or refused the greeting; the message says
    what to do."""


def socket_path(dull: bool) -> str:
    """The socket to use: ``GRASP_API_SOCKET`` (``GRASP_DULL_API_SOCKET`` for
    DULL), else the default path."""
    if dull:
        return os.environ.get("GRASP_DULL_API_SOCKET") or DEFAULT_DULL_SOCKET
    return os.environ.get("GRASP_API_SOCKET") or DEFAULT_SOCKET


class _Slot:
    """Where one call's answer arrives.  Its caller waits on ``lock``; the
    lock is released (``signalled``) when ``answer`` is set (``done``), or
    to ask the caller to read the socket itself."""

    __slots__ = ("lock", "answer", "done", "signalled")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.answer: Answer = (NO_CORE, "no answer", None)
        self.done = False
        self.signalled = False


class Core:
    """A connected, greeted client of one graspd's ASA socket."""

    def __init__(self, path: str, dull: bool = False, client: str = "") -> None:
        """Connects to ``path`` and says hello; raises :class:`ConnectError`
        with what to do when graspd is not there, refuses, or (``dull``) is
        not a DULL instance."""
        self.path = path
        self._pending: Dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        # Held by the caller that is reading the socket.
        self._read_lock = threading.Lock()
        # Guards the slots' signalled flags.
        self._mu = threading.Lock()
        # Bytes read and not yet a whole frame.
        self._buf = bytearray()
        self._dead: Optional[str] = None
        self.max_frame = MAX_FRAME
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise ConnectError(_how_to_start(path, dull, e)) from None
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        # The reader thread's wake-up (never outstanding itself).
        self._reader_wake = _Slot()
        threading.Thread(target=self._serve, name="graspd-asa-reader", daemon=True).start()
        code, detail, result = self.call(
            "hello",
            {
                "versions": [PROTOCOL_VERSION],
                "features": FEATURES,
                "max_frame": MAX_FRAME,
                "client": client
                or "graspd-asa %s python %d.%d pid %d"
                % (__version__, sys.version_info[0], sys.version_info[1], os.getpid()),
            },
        )
        if code != 0 or not isinstance(result, dict):
            self.close()
            raise ConnectError(
                "graspd at %s refused hello: %s (error %d)" % (path, detail, code)
            )
        self.max_frame = min(int(result.get("max_frame", 65536)), MAX_FRAME)
        #: hello's node facts (locator, interfaces, relay, dull, security, ...).
        self.node: Dict[str, Any] = result.get("node") or {}
        #: hello's limits.
        self.limits: Dict[str, Any] = result.get("limits") or {}
        if dull and not self.node.get("dull"):
            self.close()
            raise ConnectError(
                "the graspd at %s is not a DULL instance; run a second graspd with "
                "`dull = true` and its own `[api] socket` on the link, and set "
                "GRASP_DULL_API_SOCKET to that socket (default %s)"
                % (path, DEFAULT_DULL_SOCKET)
            )

    def call(self, method: str, params: Dict[str, Any]) -> Answer:
        """Sends one request and blocks until graspd answers it (or goes)."""
        if self._dead is not None:
            return (NO_CORE, self._dead, None)
        rid = next(self._ids)
        slot = _Slot()
        self._pending[rid] = slot
        if self._dead is not None:
            # The reader failed everything just before the slot went in.
            self._fail(self._dead)
        body = cbor2.dumps([0, rid, method, params])
        if len(body) > self.max_frame:
            self._pending.pop(rid, None)
            return (
                105,
                "the request is %d bytes; graspd takes %d" % (len(body), self.max_frame),
                None,
            )
        try:
            with self._send_lock:
                self._sock.sendall(_HEADER.pack(len(body)) + body)
        except (BrokenPipeError, ConnectionResetError):
            self._fail(self._closed())
        except OSError as e:
            self._fail("graspd's ASA socket %s: %s" % (self.path, e))
        # Alone, the caller reads its answer itself; with company, the
        # reader thread reads for all.
        alone = len(self._pending) == 1
        if not alone:
            self._signal(self._reader_wake)
        try:
            while not slot.done:
                if alone and self._read_lock.acquire(blocking=False):
                    try:
                        self._read_until(lambda: slot.done)
                    finally:
                        self._read_lock.release()
                        self._pass_reading()
                else:
                    # Someone reads: wait for the answer.
                    slot.lock.acquire()
                    with self._mu:
                        slot.signalled = False
        except BaseException:
            # Interrupted (KeyboardInterrupt): graspd drops the call.
            if self._pending.pop(rid, None) is not None:
                self._send_quietly([3, rid])
            raise
        return slot.answer

    def close(self) -> None:
        """Closes the connection; graspd deregisters this process's ASAs."""
        self._fail("the connection to graspd was closed by this process")
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    @property
    def dead(self) -> Optional[str]:
        """Why the connection is gone, or None while it works."""
        return self._dead

    def _send_quietly(self, frame: List[Any]) -> None:
        body = cbor2.dumps(frame)
        try:
            with self._send_lock:
                self._sock.sendall(_HEADER.pack(len(body)) + body)
        except OSError:
            pass

    def _closed(self) -> str:
        return "graspd closed the ASA socket %s (is it still running?)" % self.path

    def _signal(self, slot: _Slot) -> None:
        """Wakes ``slot``'s caller (once, however often it is signalled)."""
        with self._mu:
            if not slot.signalled:
                slot.signalled = True
                slot.lock.release()

    def _answer(self, slot: _Slot, answer: Answer) -> None:
        slot.answer = answer
        slot.done = True
        self._signal(slot)

    def _pass_reading(self) -> None:
        """After a caller stops reading: the reader thread reads on while
        calls are outstanding."""
        if self._pending:
            self._signal(self._reader_wake)

    def _serve(self) -> None:
        """The reader thread: reads while calls wait and no caller reads,
        and for a moment after (:data:`_LINGER_MS`): overlapping calls
        tend to keep coming, and a lone caller that found the reading taken
        waits for this thread."""
        wake = self._reader_wake
        while self._dead is None:
            wake.lock.acquire()
            with self._mu:
                wake.signalled = False
            # Checked again after each stop: a call may have come just as
            # the reading stopped.
            while self._pending and self._dead is None and self._read_lock.acquire(blocking=False):
                try:
                    while self._dead is None and (self._pending or self._poll.poll(_LINGER_MS)):
                        if not self._read_once():
                            break
                finally:
                    self._read_lock.release()

    def _fail(self, why: str) -> None:
        if self._dead is None:
            self._dead = why
        for rid in list(self._pending):
            slot = self._pending.pop(rid, None)
            if slot is not None:
                self._answer(slot, (NO_CORE, self._dead, None))
        # The reader thread ends.
        self._signal(self._reader_wake)

    def _read_until(self, done: Callable[[], bool]) -> None:
        """Reads until ``done()`` (the caller holds the read lock)."""
        while not done() and self._read_once():
            pass

    def _read_once(self) -> bool:
        """Waits for bytes, reads them and hands out the answers of the
        frames they complete (the caller holds the read lock); False when
        the connection is unusable.  A frame cut short by an interruption
        stays in the buffer for the next reader."""
        if self._dead is not None:
            self._fail(self._dead)
            return False
        try:
            # Waiting in poll, not in recv: a thread asleep in recv is
            # also woken each time graspd reads a request ("room to
            # write"), for nothing; poll wakes for data only.
            self._poll.poll()
            data = self._sock.recv(1 << 16)
        except OSError as e:
            self._fail("graspd's ASA socket %s: %s" % (self.path, e))
            return False
        if not data:
            self._fail(self._closed())
            return False
        buf = self._buf
        buf += data
        while len(buf) >= 4:
            (n,) = _HEADER.unpack_from(buf)
            if n > self.max_frame:
                self._fail("graspd sent a frame of %d bytes (at most %d)" % (n, self.max_frame))
                return False
            if len(buf) < 4 + n:
                break
            body = bytes(buf[4 : 4 + n])
            del buf[: 4 + n]
            why = self._take(body)
            if why:
                self._fail(why)
                return False
        return True

    def _take(self, body: bytes) -> Optional[str]:
        """Hands one frame's answer to its caller; says why the connection
        is unusable, if it is."""
        try:
            frame = cbor2.loads(body)
        except Exception as e:  # graspd's bytes, not this process's fault
            return "graspd sent what is not CBOR: %s" % e
        if not isinstance(frame, list) or len(frame) != 4:
            return "graspd sent what is not an ASA protocol frame"
        kind = frame[0]
        if kind == 1:
            slot = self._pending.pop(frame[1], None)
            if slot is None:
                return None  # cancelled by its caller
            err = frame[2]
            if err is None:
                self._answer(slot, (0, "", frame[3]))
            elif isinstance(err, list) and len(err) == 3:
                self._answer(slot, (int(err[0]), str(err[2]), frame[3]))
            else:
                self._answer(slot, (3, "graspd sent a malformed error", None))
        elif kind == 2 and frame[1] == 0 and frame[2] == "closing":
            err = frame[3]
            if isinstance(err, list) and len(err) == 3:
                self._dead = "graspd closed the connection: %s (%s)" % (err[2], err[1])
        # Other events belong to subscriptions, which this client never makes.
        return None


def _how_to_start(path: str, dull: bool, e: OSError) -> str:
    var = "GRASP_DULL_API_SOCKET" if dull else "GRASP_API_SOCKET"
    what = "a DULL graspd (`dull = true`)" if dull else "graspd"
    return (
        "cannot reach graspd's ASA socket %s: %s. Start %s with `[api] socket = \"%s\"` "
        "in its graspd.toml (for example `graspd --config /etc/graspd.toml`), or set %s "
        "to the socket of a graspd that runs; check that this user may open it "
        "(graspd's `[[api.allow]]` rules)." % (path, e.strerror or e, what, path, var)
    )
