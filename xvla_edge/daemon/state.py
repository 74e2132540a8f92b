"""The state the parts of the daemon share (:class:`DaemonState`), and the two changes they all make to it: a
fault noted, motion dropped. The parts: :mod:`~xvla_edge.daemon.supervisor` (start, the supervisor's passes,
faults), :mod:`~xvla_edge.daemon.operator` (operator commands, the e-stop's fast path) and
:mod:`~xvla_edge.daemon.views` (status, series, camera frames, health, summary), composed in
:class:`xvla_edge.daemon.service.Daemon`.

Two locks: ``_commands`` runs one operator command at a time (the e-stop never waits for it); ``_state`` is held
briefly around every change of the operator state and the generation of chunks in flight, and is the e-stop's
only wait. A fault's recording is written by the supervisor thread at the end of its pass (``_dump_due``), so
a command thread never waits for the disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from drivers.control.control_loop import LoopStats
from drivers.control.loop_process import ControlLoopClient
from drivers.control.seam import SeamMeter
from runtime.policy import Policy
from runtime.remote.client import RemotePolicy
from runtime.types import Observation
from xvla_edge.daemon.cameras import Camera
from xvla_edge.daemon.chunking import Chunking
from xvla_edge.daemon.config import RobotConfig
from xvla_edge.daemon.control import ControlServer
from xvla_edge.daemon.health import HealthServer
from xvla_edge.daemon.metrics import PREFIX_REASONS, DaemonMetrics
from xvla_edge.daemon.recorder import Recorder

FAULT_MODES = ("fault", "estopped", "link_lost")
log = logging.getLogger("xvla.daemon")


class DaemonState:
    """What the supervisor, the operator commands and the views of one daemon share. ``policy`` and ``cameras``
    (slot → camera) may be given ready-made (tests, the demo); otherwise they are built from ``config``."""

    def __init__(
        self,
        config: RobotConfig,
        *,
        policy: Optional[Union[Policy, RemotePolicy]] = None,
        cameras: Optional[Dict[int, Camera]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.policy = policy
        self.cameras = cameras
        self.clock = clock
        self.metrics = DaemonMetrics(cameras=[cam.name for cam in config.cameras])
        self.recorder = Recorder(config.recorder.seconds, config.recorder.directory, bundle=config.source)
        self.loop: Optional[ControlLoopClient] = None
        self.health_server: Optional[HealthServer] = None
        self.latencies: deque = deque(maxlen=10_000)
        self.chunking: Optional[Chunking] = None  # the mode, the latency estimate, the executing chunk (start())
        self.seams: Optional[SeamMeter] = None  # hand-overs waiting for their seam (start())
        self.seam_values: deque = deque(maxlen=10_000)  # the seams measured (drivers/control/seam.py)
        self._prefix_refused = {reason: 0 for reason in PREFIX_REASONS}  # real-time chunking, by reason
        self.stats: Optional[LoopStats] = None
        self._future: Optional[Future] = None
        self._future_obs: Optional[Observation] = None
        self._future_started = 0.0
        self._executing_end: Optional[float] = None
        self._stale: Dict[str, float] = {}
        self._camera_stalls = 0
        self._inference_errors = 0
        self._failures_in_a_row = 0
        self._last_error: Tuple[float, str] = (-np.inf, "")
        self._last_reconnect = -np.inf
        self._retry_at = -np.inf
        self._outage_since: Optional[float] = None
        self._last_trace = -np.inf
        self._mode = "idle"
        self._started = 0.0
        # operator state (xvla_edge.daemon.control): changed by commands, read by the supervisor
        self.instruction = config.instruction
        self.control_server: Optional[ControlServer] = None
        self._operator = "running" if config.operator.autostart else "stopped"
        self._episode: Dict[str, Optional[float]] = {"number": 1 if config.operator.autostart else 0,
                                                     "started": None, "ends": None}
        self._generation = 0  # bumped by hold, stop and e-stop: older chunks are dropped
        self._future_generation = 0
        self._estops = 0  # e-stops so far: a clear-estop that raced with a new one keeps it
        self._cleared_at_tick = -1  # the loop's tick count when the last clear-estop was seen to hold
        self._faults: deque = deque(maxlen=20)
        self._dump_due: Optional[str] = None  # a fault's recording, written by the supervisor thread
        self._commands = threading.Lock()  # one operator command at a time (the e-stop never waits for it)
        self._state = threading.Lock()  # operator state changes: held briefly, the e-stop's only wait

    def _drop_motion(self, operator: str) -> None:
        """Under ``_state``: the operator state becomes ``operator`` and chunks in flight are dropped; the caller
        then tells the loop to hold (outside the lock: an e-stop never waits for the pipe)."""
        self._operator = operator
        self._executing_end = None
        self._generation += 1

    def _adopt_loop_estop(self, stats: LoopStats) -> None:
        """An e-stop latched in the loop (its e-stop socket, or the controller's own input) becomes the operator
        state, once, also while a lost link decides the loop's mode; stats from before a clear-estop that succeeded
        do not count."""
        if not (stats.estop_latched or stats.mode == "estopped"):
            return
        with self._state:
            if self._operator != "estopped" and stats.timing.get("ticks", 0) > self._cleared_at_tick:
                self._drop_motion("estopped")
                self._estops += 1
                log.info("e-stop latched in the control loop (its e-stop socket or the controller's input)",
                         extra={"event": "estop_seen"})

    def _fault(self, reason: str) -> None:
        """Note a fault (any thread); its recording (``recorder.on_fault``) is written by the supervisor at the end
        of its pass, so a command thread never waits for the disk."""
        self._last_error = (self.clock(), reason)
        self._faults.append((time.time(), reason))
        log.warning(reason, extra={"event": "fault"})
        if self.config.recorder.on_fault and self._dump_due is None:
            self._dump_due = reason
