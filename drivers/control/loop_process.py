"""The control loop's own process, and the client that starts it and talks to it.

Why a separate process: the loop must not share a GIL with camera capture, inference or a web server.
It is started with the ``spawn`` (or ``forkserver``) method, never ``fork``, so it is safe to start
from a parent that already runs threads. The arm is built inside the child by a picklable factory, so
serial ports are opened there. Between ticks the child sleeps to the next absolute deadline
(:mod:`drivers.system.realtime`); chunks, stats requests and stop commands arrive over a pipe and are handled right
after the tick's command has been sent. The recent ticks go to a ring in shared memory
(:mod:`drivers.control.trace_ring`) that the client reads without asking: a trace is too large for the pipe, and the
loop would wait for a busy parent to read it. The e-stop has paths of its own, read before every tick (and before
every message), so it takes effect at the next tick whatever else is queued or busy:

- a counter in shared memory that :meth:`ControlLoopClient.estop` bumps (no pipe, no lock that other requests
  hold);
- with ``estop_socket``, a Unix socket this process listens on itself (mode 0660, ``estop_group``): *connecting*
  to it is the e-stop (the reply is one line, ``{"ok": true, "estopped": true}``). It does not pass through the
  parent at all, so no thread or request of the parent — however many clients flood its operator servers — can
  delay it: the loop accepts it at its next tick, at its own (real-time) priority. Nothing is read from the
  client, so a slow or silent one costs nothing.

On leaving the loop for any reason (stop, exception, SIGTERM, the parent going away) the arm is told to
hold and the link is closed; power stays on.

Typical use::

    arm_factory = functools.partial(SimArm, space="ee")
    with ControlLoopClient(arm_factory, LoopConfig(rate_hz=200)) as loop:
        loop.submit(Trajectory.from_chunk(t_obs, 2.0, position=..., rotation=..., gripper=...), t_obs)
        print(loop.stats())
"""

from __future__ import annotations

import ctypes
import gc
import grp
import itertools
import math
import multiprocessing as mp
import os
import signal
import socket
import stat
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from drivers.arm import ArmCapabilities, ArmConfigError, ArmError, ArmFactory
from drivers.control.control_loop import ControlLoop, LoopConfig, LoopStats
from drivers.control.trace_ring import TraceRing
from drivers.control.trajectory import Trajectory, TrajectoryError
from drivers.control.watchdog import Mode
from drivers.system import sdnotify
from drivers.system.realtime import PeriodStats, enable_realtime, sleep_until

_MAX_MESSAGES_PER_TICK = 16


class ControlLoopError(ArmError):
    """The control-loop process failed or does not answer; the message carries its traceback if any."""


# -- the child process ---------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"control loop: signal {signum}")


ESTOP_REPLY = b'{"ok": true, "estopped": true}\n'
_MAX_ACCEPTS_PER_TICK = 64


def listen_estop(path: Path, group: Optional[str] = None) -> socket.socket:
    """The e-stop socket at ``path`` (mode 0660, ``group``), non-blocking. A socket file left by a dead process is
    replaced; anything else at ``path`` is refused. (Whether another daemon lives is the caller's to check first:
    probing this socket would e-stop its arm.)"""
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ArmConfigError(f"{path} exists and is not a socket; remove it or choose another control socket")
        path.unlink()
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    if group is not None:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    listener.listen(128)
    listener.setblocking(False)
    return listener


class _Estop:
    """The child's e-stop inputs: the shared counter (:meth:`pending` is True once per bump) and the e-stop socket
    (each connection accepted is one e-stop; answered and closed at once)."""

    def __init__(self, counter: Any, listener: Optional[socket.socket] = None) -> None:
        self.counter = counter
        self.listener = listener
        self.seen = 0  # the counter starts at 0: an e-stop requested during start-up applies at the first tick

    def pending(self) -> bool:
        requested = False
        if self.counter is not None and self.counter.value != self.seen:
            self.seen = self.counter.value
            requested = True
        for _ in range(_MAX_ACCEPTS_PER_TICK if self.listener is not None else 0):
            try:
                conn, _ = self.listener.accept()  # type: ignore[union-attr]
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # out of file descriptors: the connection waits in the backlog for the next tick
                requested = True  # someone is asking: better stopped than not
                break
            requested = True
            try:
                conn.setblocking(False)
                conn.send(ESTOP_REPLY)
            except OSError:
                pass
            conn.close()
        return requested


def _serve(conn: Any, arm_factory: ArmFactory, config: LoopConfig, estop: Any = None,
           estop_socket: Optional[str] = None, estop_group: Optional[str] = None,
           trace: Optional[TraceRing] = None) -> None:
    """Entry point of the control-loop process; ``estop``: the shared e-stop counter; ``estop_socket``: the path
    of the e-stop socket to listen on (None: none); ``trace``: the shared ring the ticks are recorded in."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it then stops us
    loop: Optional[ControlLoop] = None
    listener: Optional[socket.socket] = None
    try:
        if estop_socket is not None:
            listener = listen_estop(Path(estop_socket), estop_group)
        scheduler = enable_realtime(config.realtime_priority, config.cpu)
        loop = ControlLoop(arm_factory(), config, trace)
        conn.send(("ready", loop.start()))
        gc.collect()
        gc.freeze()  # keep start-up objects out of the collector's way during the loop
        _run(loop, conn, scheduler, estop=_Estop(estop, listener))
    except BaseException:  # noqa: B902 - report anything, then hold in finally
        try:
            conn.send(("error", traceback.format_exc()))
        except (OSError, ValueError):
            pass
    finally:
        if loop is not None:
            loop.shutdown()
        if listener is not None:
            listener.close()
            try:
                os.unlink(str(estop_socket))
            except OSError:
                pass
        conn.close()


def _run(
    loop: ControlLoop,
    conn: Any,
    scheduler: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = sleep_until,
    estop: Optional[_Estop] = None,
) -> None:
    """Tick at the control rate until told to stop. ``clock`` and ``sleep`` (an absolute-deadline sleep)
    are injectable so tests can force overruns without a loaded machine; ``estop`` is read before each tick."""
    estop = estop or _Estop(None)
    config = loop.config
    period = config.period
    timer = PeriodStats(period, max(int(config.stats_window_s * config.rate_hz), 1))
    interval = sdnotify.watchdog_interval()  # under systemd with WatchdogSec: ping at half the interval
    ping_every = None if interval is None else interval / 2
    next_ping = clock()
    deadline = clock() + period
    while True:
        sleep(deadline)
        wake = clock()
        if estop.pending():
            loop.estop()
        loop.tick(wake)
        if ping_every is not None and wake >= next_ping:
            sdnotify.watchdog_ping()  # from the tick itself: a stuck loop stops the pings and systemd restarts us
            next_ping = wake + ping_every
        keep_going = _handle_messages(loop, conn, timer, scheduler, clock, estop)
        done = clock()
        deadline += period
        missed = 0
        if done > deadline:
            missed = int((done - deadline) // period) + 1
            deadline += missed * period
        timer.record(wake, done - wake, missed)
        if not keep_going:
            return


def _handle_messages(
    loop: ControlLoop, conn: Any, timer: PeriodStats, scheduler: str, clock: Callable[[], float], estop: _Estop
) -> bool:
    """Handle pending client messages; False when the loop must stop. An e-stop requested before a message was
    sent is applied before that message (a chunk submitted after an e-stop is refused, a clear follows it)."""
    for _ in range(_MAX_MESSAGES_PER_TICK):
        try:
            if not conn.poll():
                return True
            message = conn.recv()
        except (EOFError, OSError):
            return False  # the parent is gone
        if estop.pending():
            loop.estop()
        kind = message[0]
        if kind == "submit":
            # "now" is read here, after the message arrived, so it is never before the client's obs_timestamp
            loop.submit(message[1], message[2], clock())
        elif kind == "hold":
            loop.hold()
        elif kind == "clear_estop":
            loop.clear_estop()
        elif kind == "reconnect":
            loop.reconnect()
        elif kind in ("stats", "stop"):
            conn.send(("reply", message[1], loop.stats(timer.summary(), scheduler, timer.interval_histogram())))
            if kind == "stop":
                return False
        elif kind == "timing":
            conn.send(("reply", message[1], {"interval_error": timer.interval_errors(), "timing": timer.summary()}))
        elif kind == "executing":
            conn.send(("reply", message[1], loop.executing()))
        else:
            raise ControlLoopError(f"unknown control-loop message {kind!r}")
    return True


# -- the parent side -------------------------------------------------------------------------------------


class ControlLoopClient:
    """Starts the control-loop process and talks to it. Thread-safe; use as a context manager.

    ``arm_factory`` must be picklable (a class or ``functools.partial``; no lambdas) and is called in the
    child. ``start_method`` is ``"spawn"`` (default) or ``"forkserver"``. ``estop_socket``: a path the child
    listens on for e-stops (see the module docstring), group ``estop_group``.
    """

    def __init__(
        self, arm_factory: ArmFactory, config: Optional[LoopConfig] = None, *, start_method: str = "spawn",
        estop_socket: Optional[Path] = None, estop_group: Optional[str] = None,
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ArmConfigError(f"start_method: expected 'spawn' or 'forkserver', got {start_method!r}")
        self.config = config or LoopConfig()
        self._factory = arm_factory
        self._estop_socket = None if estop_socket is None else str(estop_socket)
        self._estop_group = estop_group
        self._ctx = mp.get_context(start_method)
        self._lock = threading.Lock()
        self._estop = self._ctx.RawValue(ctypes.c_uint64, 0)  # bumped by estop(), read by the child every tick
        self._estop_lock = threading.Lock()  # only between e-stops: never held by anything that waits
        self._trace = TraceRing.shared(self._ctx, self.config.trace_length, [m.value for m in Mode])
        self._ids = itertools.count()
        self._conn: Any = None
        self._process: Optional[mp.process.BaseProcess] = None
        self._caps: Optional[ArmCapabilities] = None
        self._error = ""

    def start(self, timeout: float = 30.0) -> ArmCapabilities:
        """Start the process; returns the controller's capabilities once the arm is connected."""
        if self._process is not None:
            raise ControlLoopError("control loop already started")
        self._conn, child = self._ctx.Pipe(duplex=True)
        self._process = self._ctx.Process(
            target=_serve, name="xvla-control-loop", daemon=True,
            args=(child, self._factory, self.config, self._estop, self._estop_socket, self._estop_group, self._trace)
        )
        try:
            self._process.start()
        except Exception as exc:  # typically a factory that cannot be pickled (a lambda, a local class)
            self._process = None
            self._kill()
            raise ControlLoopError(f"cannot start the control loop (is the arm factory picklable?): {exc}") from exc
        finally:
            child.close()
        try:
            if not self._conn.poll(timeout):
                raise ControlLoopError(f"control loop did not start within {timeout} s")
            kind, payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            kind, payload = "error", f"the process exited during start-up ({exc!r})"
        except ControlLoopError:
            self._kill()
            raise
        if kind != "ready":
            self._kill()
            raise ControlLoopError(f"control loop failed to start:\n{payload}")
        self._caps = payload
        return payload

    @property
    def capabilities(self) -> ArmCapabilities:
        if self._caps is None:
            raise ControlLoopError("control loop not started")
        return self._caps

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def exitcode(self) -> Optional[int]:
        """The process's exit code once it has exited (negative: the signal that killed it), else None."""
        return None if self._process is None else self._process.exitcode

    def submit(self, trajectory: Trajectory, obs_timestamp: float) -> None:
        """Hand a chunk to the loop (returns at once; acceptance shows in :meth:`stats` events).

        ``obs_timestamp`` is the ``time.monotonic()`` of the observation the chunk was predicted from.
        Raises ``TrajectoryError`` when the chunk does not fit the arm.
        """
        caps = self.capabilities
        if (trajectory.space, trajectory.n_arms) != (caps.space, caps.n_arms) or (
            caps.space == "joint" and trajectory.n_joints != caps.n_joints
        ):
            raise TrajectoryError(
                f"trajectory is {trajectory.space!r} with {trajectory.n_arms} arm(s) and {trajectory.n_joints} "
                f"joint(s); the arm takes {caps.space!r} with {caps.n_arms} arm(s) and {caps.n_joints} joint(s)"
            )
        if not math.isfinite(obs_timestamp):
            raise TrajectoryError(f"obs_timestamp must be finite, got {obs_timestamp!r}")
        self._send(("submit", trajectory, float(obs_timestamp)))

    def hold(self) -> None:
        """Drop the executing trajectory: the arm holds its last safe command until the next chunk."""
        self._send(("hold",))

    def estop(self) -> None:
        """Latch the e-stop: the arm holds and chunks are refused until :meth:`clear_estop`. Returns at once from
        any thread, whatever other request is waiting for the loop: the child sees it before its next tick."""
        with self._estop_lock:
            self._estop.value += 1
        if not self.running:  # nobody reads the counter: the caller must know (the controller's deadman holds)
            raise ControlLoopError(f"control loop is not running{self._error_suffix()}")

    def clear_estop(self) -> None:
        self._send(("clear_estop",))

    def reconnect(self) -> None:
        """Ask the loop to handshake with the controller again (after link loss or a deadman timeout)."""
        self._send(("reconnect",))

    def stats(self, timeout: float = 2.0) -> LoopStats:
        return self._request("stats", timeout)

    def trace(self) -> Dict[str, Any]:
        """The recent ticks' commanded and measured values (see :meth:`ControlLoop.trace`), read from the memory the
        loop writes them to: nothing is asked of the loop, so no number of readers can delay a tick."""
        if self._caps is None:
            raise ControlLoopError("control loop not started")
        return self._trace.read()

    def executing(self, timeout: float = 2.0) -> Optional[Trajectory]:
        """The trajectory the arm is commanded along from now on (:meth:`ControlLoop.executing`), or None."""
        return self._request("executing", timeout)

    def timing(self, timeout: float = 2.0) -> Dict[str, Any]:
        """``interval_error`` (the stats window's tick-interval errors, seconds, oldest first) and ``timing``
        (:meth:`~drivers.system.realtime.PeriodStats.summary` of that window), taken at the same moment."""
        return self._request("timing", timeout)

    def stop(self, timeout: float = 5.0) -> Optional[LoopStats]:
        """Stop the loop (the arm holds) and wait for the process; returns the final stats if it answered."""
        if self._process is None:
            return None
        final = None
        try:
            if self._process.is_alive():
                final = self._request("stop", timeout)
        except ControlLoopError:
            pass
        self._process.join(timeout)
        self._kill()
        return final

    def __enter__(self) -> "ControlLoopClient":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _send(self, message: tuple) -> None:
        with self._lock:
            if self._conn is None:
                raise ControlLoopError("control loop not started")
            try:
                self._conn.send(message)
            except (OSError, ValueError) as exc:
                raise ControlLoopError(f"control loop pipe failed: {exc}{self._error_suffix()}") from exc

    def _request(self, kind: str, timeout: float) -> Any:
        with self._lock:
            if self._conn is None:
                raise ControlLoopError("control loop not started")
            request_id = next(self._ids)
            try:
                self._conn.send((kind, request_id))
                deadline = time.monotonic() + timeout
                while self._conn.poll(max(deadline - time.monotonic(), 0.0)):
                    reply = self._conn.recv()
                    if reply[0] == "error":
                        self._error = reply[1]
                        break
                    if reply[0] == "reply" and reply[1] == request_id:
                        return reply[2]
            except (EOFError, OSError) as exc:
                raise ControlLoopError(f"control loop pipe failed: {exc}{self._error_suffix()}") from exc
        raise ControlLoopError(f"control loop did not answer {kind!r} within {timeout} s{self._error_suffix()}")

    def _error_suffix(self) -> str:
        """The child's last words, if it sent any (read from the pipe when not read yet)."""
        try:
            while not self._error and self._conn is not None and self._conn.poll():
                reply = self._conn.recv()
                if reply[0] == "error":
                    self._error = reply[1]
        except (EOFError, OSError):
            pass
        return f"; it failed with:\n{self._error}" if self._error else ""

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.terminate()  # SIGTERM: the child holds the arm before exiting
            self._process.join(2.0)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._process = None
