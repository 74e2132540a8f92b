"""The running daemon's control API: what an operator may ask, when, and the Unix socket that takes it.

Commands (:data:`COMMANDS`), each answered with the resulting state or a refusal naming why:

| command | does | refused when |
|---|---|---|
| ``status`` | mode, operator state, bundle, instruction, episode, health, recent faults, latency and ticks | never |
| ``instruction TEXT`` | the next chunk is computed for TEXT (logged; observation records carry it) | not an instruction by :func:`xvla.instruction.check_instruction` (blank, over 1024 characters, control characters, not valid Unicode) |
| ``start [SECONDS]`` | a new episode: inference runs (until SECONDS pass, then the arm holds) | e-stopped; an episode running |
| ``stop`` | ends the episode: the arm holds, no inference | no episode |
| ``hold`` | pauses the episode: the arm holds, no inference | not running |
| ``resume`` | continues a held episode | e-stopped; not held |
| ``estop`` | latches the e-stop: the control loop sees it before its next tick, whatever else is queued | never |
| ``clear-estop`` | releases it; the arm holds (``resume`` to go on) | not e-stopped; the arm still reports it |
| ``record`` | dumps the recorder | the recorder's directory cannot be written |

A hold, stop or e-stop drops the executing chunk and any chunk computed from an observation taken before it.
Nothing here commands the arm directly: the control loop and its safety envelope do, as always.

Transport: one JSON object per line on a Unix socket (``[operator].socket``), e.g.
``{"command": "instruction", "text": "put the cup in the sink"}`` → ``{"ok": true, "state": {...}}`` or
``{"ok": false, "error": "...", "state": {...}}``; replies come in the order of the requests on a connection.
Who may connect is decided by the socket file's permissions (mode 0660, group ``[operator].socket_group``): the
operating system refuses everyone else.

The e-stop gets through whatever else is happening. Its first path bypasses this process altogether: the
control-loop process listens on the e-stop socket beside the control socket (:func:`estop_socket_path`,
``control-estop.sock`` for ``control.sock``; same mode and group), where *connecting* is the e-stop, taken at the
loop's next tick at its own priority (:mod:`drivers.control.loop_process`); :func:`estop` (``xvla-edge ctl estop``) uses
it, and the control socket when it is missing. On the control socket itself, one I/O thread serves every
connection (no thread per client; a listen backlog of :data:`BACKLOG`): it reads each request line as it
arrives and runs an ``estop`` on the spot, while other commands wait their turn for one worker thread (at most :data:`MAX_QUEUED`; beyond that
they are refused as busy, never queued without bound). Connections are bounded (:data:`MAX_CONNECTIONS`: the
longest idle one is closed to make room, so a new client — an e-stop — is never refused) and closed after
:data:`IDLE_TIMEOUT_S` without a request. A client that goes away before its reply costs one log line (at most
one per ten seconds however many do). :func:`send` retries a connection refused for a full backlog until its
deadline.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import queue
import selectors
import socket
import stat
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional

from xvla.errors import InputError, XVLAError
from xvla.instruction import check_instruction as instruction_rule
from xvla_edge.daemon.logs import Throttled

COMMANDS = ("status", "instruction", "start", "stop", "hold", "resume", "estop", "clear-estop", "record")
MAX_LINE_BYTES = 64 * 1024
MAX_EPISODE_S = 24 * 3600.0
URGENT = ("estop",)  # run by the I/O thread the moment the line arrives
BACKLOG = 128
MAX_CONNECTIONS = 128
MAX_QUEUED = 64  # commands waiting for the worker
MAX_PENDING_PER_CONNECTION = 16  # requests of one connection not answered yet
IDLE_TIMEOUT_S = 30.0
log = logging.getLogger("xvla.daemon.control")


class CommandRefused(XVLAError, ValueError):
    """A command that makes no sense in the daemon's present state (or with these arguments)."""


def check_instruction(text: Any) -> str:
    """A usable instruction (stripped), or :class:`CommandRefused` saying why not."""
    try:
        return instruction_rule(text).strip()
    except InputError as exc:
        raise CommandRefused(str(exc)) from None


def check_seconds(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_EPISODE_S:
        raise CommandRefused(f"start: seconds = {value!r}; expected a number in (0, {MAX_EPISODE_S:g}]")
    return float(value)


Execute = Callable[[Dict[str, Any]], Dict[str, Any]]


class _Connection:
    """One client: bytes read but not yet a full line, reply slots in request order, bytes to write."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.slots: Deque[List[Optional[bytes]]] = deque()
        self.outbox = bytearray()
        self.active = time.monotonic()
        self.closing = False  # the client is done sending (or must be cut off): close once answered
        self.events = selectors.EVENT_READ  # what the selector watches for (0: not registered)

    @property
    def idle(self) -> bool:
        return not self.slots and not self.outbox


def estop_socket_path(control_socket: Path) -> Path:
    """Where the control loop listens for e-stops, beside ``control_socket`` (``control.sock`` → ``control-estop.sock``)."""
    control_socket = Path(control_socket)
    return control_socket.with_name(f"{control_socket.stem}-estop{control_socket.suffix}")


def claim(path: Path) -> None:
    """Make ``path`` free for a new control socket: a socket file left by a dead daemon is removed; a live daemon's
    (it accepts a connection) or anything that is not a socket is refused with ``OSError``."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket; remove it or choose another [operator].socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: left by a daemon that died
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another daemon is listening on this control socket")


class ControlServer:
    """The control socket at ``path`` (mode 0660, group ``group``), answering ``execute(request) -> reply`` (see the
    module docstring for its threads and bounds). A stale socket file is replaced; one a live daemon listens on is
    refused."""

    def __init__(self, path: Path, execute: Execute, group: Optional[str] = None) -> None:
        self.path = Path(path)
        self.execute = execute
        claim(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # the socket file is created 0660
        try:
            self._listener.bind(str(self.path))
        finally:
            os.umask(old)
        if group is not None:
            os.chown(self.path, -1, grp.getgrnam(group).gr_gid)
        self._listener.listen(BACKLOG)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._connections: Dict[int, _Connection] = {}
        self._work: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._done: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._stop = False
        self._dropped = Throttled(log, "control_client_gone")
        self._io = threading.Thread(target=self._serve, name="xvla-control", daemon=True)
        self._worker = threading.Thread(target=self._work_loop, name="xvla-control-worker", daemon=True)
        self._io.start()
        self._worker.start()

    # -- the I/O thread -----------------------------------------------------------------------------------

    def _serve(self) -> None:
        expired = time.monotonic()
        while not self._stop:
            for key, mask in self._selector.select(timeout=1.0):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    self._collect()
                else:
                    conn = self._connections.get(key.fd)
                    if conn is not None and mask & selectors.EVENT_READ:
                        self._read(conn)
                    if conn is not None and key.fd in self._connections and mask & selectors.EVENT_WRITE:
                        self._flush(conn)
            now = time.monotonic()
            if now - expired >= 1.0:
                self._expire(now)
                expired = now

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: make room, the client retries
                log.warning("control socket: accept failed: %s", exc, extra={"event": "control_accept_error"})
                self._evict()
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                self._evict()
            sock.setblocking(False)
            self._connections[sock.fileno()] = _Connection(sock)
            self._selector.register(sock, selectors.EVENT_READ)

    def _evict(self) -> None:
        """Close the connection that has been idle longest (one with nothing pending if there is one)."""
        if self._connections:
            oldest = min(self._connections.values(), key=lambda c: (not c.idle, c.active))
            self._close(oldest)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client is done sending: answer what it asked, then close
            conn.closing = True
            self._flush(conn)
            return
        conn.active = time.monotonic()
        conn.inbox += data
        while not conn.closing:
            end = conn.inbox.find(b"\n")
            if (end if end >= 0 else len(conn.inbox)) > MAX_LINE_BYTES:
                self._reply(conn, self._slot(conn), {"ok": False, "error": f"request longer than {MAX_LINE_BYTES} bytes"})
                conn.closing = True
                self._flush(conn)
                return
            if end < 0:
                return
            line = bytes(conn.inbox[:end])
            del conn.inbox[: end + 1]
            self._request(conn, line)

    def _request(self, conn: _Connection, line: bytes) -> None:
        slot = self._slot(conn)
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                raise ValueError('expected an object with a "command"')
        except (ValueError, RecursionError) as exc:
            self._reply(conn, slot, {"ok": False, "error": f"not a JSON request line ({exc})"})
            return
        if request["command"] in URGENT:
            self._reply(conn, slot, self._run(request))
        elif len(conn.slots) > MAX_PENDING_PER_CONNECTION or self._work.qsize() >= MAX_QUEUED:
            self._reply(conn, slot, {"ok": False, "error": f"busy: {self._work.qsize()} commands are waiting; "
                                                           "try again (an estop is never queued)"})
        else:
            self._work.put((conn, slot, request))

    def _slot(self, conn: _Connection) -> List[Optional[bytes]]:
        slot: List[Optional[bytes]] = [None]
        conn.slots.append(slot)
        return slot

    def _reply(self, conn: _Connection, slot: List[Optional[bytes]], reply: Dict[str, Any]) -> None:
        slot[0] = json.dumps(reply, default=str).encode() + b"\n"
        while conn.slots and conn.slots[0][0] is not None:
            conn.outbox += conn.slots.popleft()[0]  # type: ignore[operator]
        self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        """Write what can be written; then watch the socket for what this connection waits for (reading until
        the client is done, writing while replies are left), or close it when nothing is left."""
        if conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._dropped("control client went away before its reply")
                self._close(conn)
                return
            del conn.outbox[:sent]
            conn.active = time.monotonic()
        if conn.closing and conn.idle:
            self._close(conn)
            return
        events = (0 if conn.closing else selectors.EVENT_READ) | (selectors.EVENT_WRITE if conn.outbox else 0)
        if events != conn.events:
            if conn.events and events:
                self._selector.modify(conn.sock, events)
            elif events:
                self._selector.register(conn.sock, events)
            else:  # waiting for the worker's reply only
                self._selector.unregister(conn.sock)
            conn.events = events

    def _collect(self) -> None:
        """Replies the worker finished (it wakes this thread through the socket pair)."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                conn, slot, reply = self._done.get_nowait()
            except queue.Empty:
                return
            if conn.sock.fileno() in self._connections:  # else closed meanwhile (its fileno is -1)
                self._reply(conn, slot, reply)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._connections.values() if c.idle and now - c.active > IDLE_TIMEOUT_S]:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if self._connections.pop(conn.sock.fileno(), None) is not None and conn.events:
            self._selector.unregister(conn.sock)
        conn.events = 0
        conn.sock.close()
        conn.slots.clear()

    # -- the worker thread ----------------------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            conn, slot, request = item
            self._done.put((conn, slot, self._run(request)))
            try:
                self._wake_w.send(b"\0")
            except OSError:  # closing
                return

    def _run(self, request: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return self.execute(request)
        except Exception as exc:  # noqa: BLE001 - a command must never take the socket down with it
            log.exception("control command %s failed", request.get("command"), extra={"event": "command_error"})
            return {"ok": False, "error": f"{request.get('command')} failed in the daemon: {type(exc).__name__}: {exc}"}

    # -- life cycle -------------------------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Open client connections (for tests and status)."""
        return len(self._connections)

    def close(self) -> None:
        self._stop = True
        self._work.put(None)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._io.join(5.0)
        self._worker.join(5.0)
        for conn in list(self._connections.values()):
            self._close(conn)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _connect(path: Path, deadline: float) -> socket.socket:
    """A connection to the Unix socket at ``path``; a full backlog (``EAGAIN``) is tried again until ``deadline``."""
    pause = 0.001
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            s.connect(str(path))
            return s
        except OSError as exc:
            s.close()
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def _reply(s: socket.socket, path: Path, deadline: float) -> Dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        s.settimeout(max(deadline - time.monotonic(), 0.001))
        part = s.recv(65536)
        if not part:
            break
        data += part
    if not data:
        raise OSError(f"{path}: the daemon closed the connection without a reply")
    return json.loads(data)


def send(path: Path, request: Dict[str, Any], timeout: float = 10.0) -> Dict[str, Any]:
    """One request to the control socket at ``path``; its reply. A connection refused because the daemon's
    backlog is full (``EAGAIN``) is tried again until ``timeout`` seconds have passed. Raises ``OSError`` if it
    cannot connect (``FileNotFoundError``/``ConnectionRefusedError``: no daemon) or gets no reply in time."""
    deadline = time.monotonic() + timeout
    with _connect(Path(path), deadline) as s:
        s.sendall(json.dumps(request).encode() + b"\n")
        return _reply(s, Path(path), deadline)


def estop(path: Path, timeout: float = 10.0) -> Dict[str, Any]:
    """E-stop the daemon whose control socket is ``path``: through the control loop's e-stop socket (connecting is
    the e-stop), or, when that is missing (a daemon of an older version, or its loop gone), the control socket's
    ``estop`` command. The reply; ``OSError`` as :func:`send`."""
    deadline = time.monotonic() + timeout
    try:
        s = _connect(estop_socket_path(path), deadline)
    except (FileNotFoundError, ConnectionRefusedError):
        return send(path, {"command": "estop"}, timeout=max(deadline - time.monotonic(), 0.001))
    with s:
        return _reply(s, estop_socket_path(path), deadline)
