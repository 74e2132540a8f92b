"""Run a byte-protocol device emulator in its own process behind a pseudo-terminal.

The emulator process opens a pty pair in raw mode, prints the slave path (``/dev/pts/N``) on its
first stdout line and serves the device on the master end; the code under test opens that path with
pyserial like a real port. Control commands (fault injection, snapshots) travel as JSON lines:
``["command", {args}]`` on stdin, ``["ok", result]`` or ``["error", text]`` back on stdout.
Used by the xvla-serial, Dynamixel, Feetech and Piper emulators; :class:`EmulatorProcess` drives it from tests.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any, Protocol

from drivers.errors import ArmError

_REPO_ROOT = Path(__file__).resolve().parents[2]


class Device(Protocol):
    """An emulated device: consumes host bytes, queues replies in ``outbox``, moves on ``tick``."""

    outbox: list[tuple[float, bytes]]  # (monotonic due time, bytes to write), in due order

    def feed(self, data: bytes, now: float) -> None: ...

    def tick(self, now: float) -> None: ...

    def control(self, command: str, args: dict[str, Any]) -> Any: ...


class EmulatorError(ArmError, RuntimeError):
    """The emulator process failed to start, died, or rejected a control command."""


def open_raw_pty() -> tuple[int, int, str]:
    """A pty pair with the slave in raw mode (no echo, no newline translation): (master, slave, path)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


def flip_random_bit(data: bytes, rng: random.Random) -> bytes:
    """``data`` with one bit, chosen by ``rng``, flipped: a reply corrupted on the wire (fault injection)."""
    index = rng.randrange(len(data))
    return data[:index] + bytes([data[index] ^ (1 << rng.randrange(8))]) + data[index + 1 :]


def _reply(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _control(device: Device, line: str) -> bool:
    """Run one JSON control line; False when it asks to stop."""
    try:
        command, args = json.loads(line)
    except (ValueError, TypeError):
        _reply(["error", f"not a JSON [command, args] line: {line.strip()!r}"])
        return True
    if command == "stop":
        _reply(["ok", None])
        return False
    try:
        _reply(["ok", device.control(command, args)])
    except Exception as exc:  # report any control failure to the caller instead of dying
        _reply(["error", f"{type(exc).__name__}: {exc}"])
    return True


def serve(device: Device, fd: int, *, control_fd: int | None = None, tick_s: float = 0.001) -> None:
    """Serve ``device`` on ``fd`` (a pty master or a socket), taking control lines from ``control_fd``
    (default stdin), until a ``stop`` line or EOF there."""
    pending = bytearray()
    stdin = sys.stdin.fileno() if control_fd is None else control_fd
    lines = b""
    while True:
        now = time.monotonic()
        timeout = tick_s if not device.outbox else max(0.0, min(tick_s, device.outbox[0][0] - now))
        readable, _, _ = select.select([fd, stdin], [fd] if pending else [], [], timeout)
        now = time.monotonic()
        if fd in readable:
            try:
                device.feed(os.read(fd, 4096), now)
            except BlockingIOError:
                pass
        if stdin in readable:
            chunk = os.read(stdin, 65536)
            if not chunk:
                return
            lines += chunk
            while b"\n" in lines:
                line, lines = lines.split(b"\n", 1)
                if not _control(device, line.decode()):
                    return
        device.tick(now)
        while device.outbox and device.outbox[0][0] <= now:
            pending += device.outbox.pop(0)[1]
        if pending:
            try:
                del pending[: os.write(fd, pending)]
            except BlockingIOError:
                pass


def run(device: Device) -> None:
    """Entry-point body: open a pty, print its path, serve ``device`` until stopped."""
    master, _slave, path = open_raw_pty()  # keep the slave fd open so the master never reads EOF
    print(path, flush=True)
    try:
        serve(device, master)
    except (KeyboardInterrupt, BrokenPipeError):  # Ctrl-C, or whoever reads our stdout went away
        pass


class EmulatorProcess:
    """An emulator started as ``python -m <module> <args>``; a context manager.

    ``port`` is the pty path once started; :meth:`call` sends one control command.
    """

    def __init__(self, module: str, args: list[str], *, start_timeout_s: float = 30.0) -> None:
        self._cmd = [sys.executable, "-m", module, *args]
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = ""

    def start(self) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self.port = self._readline(self._start_timeout_s, "its pty path")
        return self.port

    @property
    def pid(self) -> int:
        """The emulator process's id (for memory and fault tests)."""
        return self._running("its pid").pid

    def call(self, command: str, timeout_s: float = 10.0, **args: Any) -> Any:
        """Run a control command in the emulator and return its result."""
        proc = self._running(command)
        assert proc.stdin is not None
        proc.stdin.write((json.dumps([command, args]) + "\n").encode())
        proc.stdin.flush()
        status, result = json.loads(self._readline(timeout_s, f"an answer to {command!r}"))
        if status != "ok":
            raise EmulatorError(f"emulator command {command!r} failed: {result}")
        return result

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(b'["stop", {}]\n')
                proc.stdin.close()
            proc.wait(5.0)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _running(self, what: str) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise EmulatorError(f"emulator {self._cmd[2]} is not running ({what})")
        return self._proc

    def _readline(self, timeout_s: float, what: str) -> str:
        proc = self._running(what)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise EmulatorError(f"emulator {self._cmd[2]} did not send {what} within {timeout_s} s")
        return line.decode().strip()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
