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
| ``estop`` | latches the e-stop, sent to the arm from the caller's thread at once | never |
| ``clear-estop`` | releases it; the arm holds (``resume`` to go on) | not e-stopped; the arm still reports it |
| ``record`` | dumps the recorder | never |

A hold, stop or e-stop drops the executing chunk and any chunk computed from an observation taken before it.
Nothing here commands the arm directly: the control loop and its safety envelope do, as always.

Transport: one JSON object per line on a Unix socket (``[operator].socket``), e.g.
``{"command": "instruction", "text": "put the cup in the sink"}`` → ``{"ok": true, "state": {...}}`` or
``{"ok": false, "error": "...", "state": {...}}``. Who may connect is decided by the socket file's
permissions (mode 0660, group ``[operator].socket_group``): the operating system refuses everyone else.
"""

from __future__ import annotations

import grp
import json
import os
import socket
import socketserver
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from xvla.errors import InputError, XVLAError
from xvla.instruction import check_instruction as instruction_rule

COMMANDS = ("status", "instruction", "start", "stop", "hold", "resume", "estop", "clear-estop", "record")
MAX_LINE_BYTES = 64 * 1024
MAX_EPISODE_S = 24 * 3600.0


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


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        while True:
            line = self.rfile.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                self._reply({"ok": False, "error": f"request longer than {MAX_LINE_BYTES} bytes"})
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                    raise ValueError("expected an object with a \"command\"")
            except (ValueError, RecursionError) as exc:
                self._reply({"ok": False, "error": f"not a JSON request line ({exc})"})
                continue
            self._reply(server.execute(request))

    def _reply(self, reply: Dict[str, Any]) -> None:
        self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
        self.wfile.flush()


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The control socket at ``path`` (mode 0660, group ``group``), serving ``execute(request) -> reply`` on a
    thread per connection. A stale socket file is replaced; one a live daemon listens on is refused."""

    daemon_threads = True

    def __init__(self, path: Path, execute: Callable[[Dict[str, Any]], Dict[str, Any]],
                 group: Optional[str] = None) -> None:
        self.path = Path(path)
        self.execute = execute  # type: ignore[assignment]
        self._remove_stale()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o117)  # the socket file is created 0660
        try:
            super().__init__(str(self.path), _Handler)
        finally:
            os.umask(old)
        if group is not None:
            os.chown(self.path, -1, grp.getgrnam(group).gr_gid)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="xvla-control", daemon=True)
        self._thread.start()

    def _remove_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{self.path} exists and is not a socket; remove it or choose another [operator].socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: left by a daemon that died
            return
        finally:
            probe.close()
        raise OSError(f"{self.path}: another daemon is listening on this control socket")

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def send(path: Path, request: Dict[str, Any], timeout: float = 10.0) -> Dict[str, Any]:
    """One request to the control socket at ``path``; its reply. Raises ``OSError`` if it cannot connect."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = s.recv(65536)
            if not part:
                break
            data += part
    if not data:
        raise OSError(f"{path}: the daemon closed the connection without a reply")
    return json.loads(data)
