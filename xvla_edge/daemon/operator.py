"""The daemon's operator commands (``xvla-edge ctl``, the status page's buttons; see
:mod:`xvla_edge.daemon.control`): :meth:`OperatorCommands.execute` runs one at a time, except the e-stop,
whose own path never waits for another command: it tells the loop first, then changes the state under
``_state`` (see :mod:`xvla_edge.daemon.state`)."""

from __future__ import annotations

import time
from typing import Dict

from drivers.control.loop_process import ControlLoopError
from xvla_edge.daemon.control import COMMANDS, CommandRefused, check_instruction, check_seconds
from xvla_edge.daemon.recorder import RecorderError
from xvla_edge.daemon.state import DaemonState, log


class OperatorCommands(DaemonState):
    """The operator commands of :class:`~xvla_edge.daemon.service.Daemon` (``_cmd_`` + the command's name)."""

    def execute(self, request: Dict[str, object]) -> Dict[str, object]:
        """Run one operator command (any thread; one at a time, except ``estop``, which never waits for another
        command); the reply with the resulting state."""
        name = request.get("command")
        if name == "estop":
            return self._estop()
        with self._commands:
            try:
                handler = getattr(self, "_cmd_" + str(name).replace("-", "_"), None)
                if handler is None:
                    raise CommandRefused(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
                result = handler(request)
            except CommandRefused as exc:
                log.info("command %s refused: %s", name, exc, extra={"event": "command_refused", "command": name})
                return {"ok": False, "error": str(exc), "state": self.status()}
            except ControlLoopError as exc:
                return {"ok": False, "error": f"the control loop does not answer: {exc}", "state": self.status()}
            if name != "status":
                log.info("command %s", name, extra={"event": "command", "command": name, **(result or {})})
            return {"ok": True, "state": self.status(), **({"result": result} if result else {})}

    def _cmd_status(self, request: Dict[str, object]) -> None:
        return None

    def _cmd_instruction(self, request: Dict[str, object]) -> Dict[str, object]:
        text = check_instruction(request.get("text"))
        previous, self.instruction = self.instruction, text
        return {"instruction": text, "previous": previous}

    def _cmd_start(self, request: Dict[str, object]) -> Dict[str, object]:
        seconds = check_seconds(request.get("seconds"))
        with self._state:
            if self._operator == "estopped":
                raise CommandRefused("start: the e-stop is latched; clear-estop first")
            if self._operator in ("running", "held"):
                raise CommandRefused(f"start: episode {self._episode['number']} is {self._operator}; stop it first")
            now = self.clock()
            self._episode = {"number": (self._episode["number"] or 0) + 1, "started": now,
                             "ends": None if seconds is None else now + seconds}
            self._operator = "running"
            return {"episode": self._episode["number"], "seconds": seconds}

    def _cmd_stop(self, request: Dict[str, object]) -> Dict[str, object]:
        with self._state:
            if self._operator not in ("running", "held"):
                raise CommandRefused(f"stop: no episode is running (operator state {self._operator})")
            self._drop_motion("stopped")
        self.loop.hold()  # type: ignore[union-attr]
        return {"episode": self._episode["number"]}

    def _cmd_hold(self, request: Dict[str, object]) -> None:
        with self._state:
            if self._operator != "running":
                raise CommandRefused(f"hold: nothing is running (operator state {self._operator})")
            self._drop_motion("held")
        self.loop.hold()  # type: ignore[union-attr]

    def _cmd_resume(self, request: Dict[str, object]) -> None:
        with self._state:
            if self._operator == "estopped":
                raise CommandRefused("resume: the e-stop is latched; clear-estop first")
            if self._operator != "held":
                raise CommandRefused(f"resume: nothing is held (operator state {self._operator}"
                                     + ("; start an episode" if self._operator == "stopped" else "") + ")")
            self._operator = "running"

    def _estop(self) -> Dict[str, object]:
        """The e-stop's own path (any thread, never behind another command): the loop first, then the state."""
        error = None
        try:
            self.loop.estop()  # type: ignore[union-attr]  # a counter the loop reads before its next tick
        except ControlLoopError as exc:  # the loop is gone: the controller's deadman holds the arm
            error = f"the control loop does not answer: {exc}"
        with self._state:
            self._drop_motion("estopped")
            self._estops += 1
        self._fault("e-stop by the operator")
        log.info("command estop", extra={"event": "command", "command": "estop"})
        if error is not None:
            return {"ok": False, "error": error, "state": self.status()}
        return {"ok": True, "state": self.status()}

    def _cmd_clear_estop(self, request: Dict[str, object]) -> None:
        loop = self.loop
        assert loop is not None
        self._adopt_loop_estop(loop.stats())  # `ctl estop` latches the loop first: the supervisor may not have seen it
        with self._state:
            if self._operator != "estopped":
                raise CommandRefused(f"clear-estop: the e-stop is not latched (operator state {self._operator})")
            estops = self._estops
        loop.clear_estop()
        ticks = loop.stats().timing.get("ticks", 0)  # answered after the clear: the loop handles messages in order
        end = time.monotonic() + 2.0
        stats = loop.stats()
        while stats.timing.get("ticks", 0) < ticks + 2 and time.monotonic() < end:  # ticks that saw the clear
            time.sleep(0.005)
            stats = loop.stats()
        with self._state:
            if self._estops != estops:  # a new e-stop while clearing: it stays latched, in the loop too
                loop.estop()
                raise CommandRefused("clear-estop: another e-stop arrived while clearing; it stays latched")
            if stats.mode == "estopped":
                raise CommandRefused("clear-estop: the arm still reports its e-stop"
                                     + (f" ({stats.last_error})" if stats.last_error else "")
                                     + "; release it there first")
            self._operator = "held"
            self._cleared_at_tick = int(stats.timing.get("ticks", 0))

    def _cmd_record(self, request: Dict[str, object]) -> Dict[str, object]:
        try:
            return {"path": str(self.recorder.dump("request"))}
        except RecorderError as exc:
            raise CommandRefused(f"record: {exc}") from None
