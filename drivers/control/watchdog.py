"""Which mode the control loop is in, decided once per tick from facts it observed.

=============  ==================================================  ==========================================
Mode           When                                                What the loop sends
=============  ==================================================  ==========================================
``link_lost``  the arm raised ``ArmLinkError``                     nothing (the controller's deadman holds);
                                                                   left only by a reconnect
``estopped``   e-stop requested, or the controller reports ESTOP   nothing after ``arm.estop()``; latched
                                                                   until :meth:`Watchdog.clear_estop`
``fault``      the controller reports a hardware fault or its      nothing after ``arm.hold()``; left when
               deadman timeout                                     the flags clear
``idle``       connected, no trajectory (none yet, or dropped)     the last safe command (hold)
``holding``    the trajectory ended before now (stale)             its last waypoint, through the safety
                                                                   envelope: once reached, the same pose
``tracking``   a trajectory covers now                             the sampled command, after safety
=============  ==================================================  ==========================================

Rows are in priority order. Every stop holds position with power on; nothing here removes torque.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Dict, Optional

from drivers.arm import HARDWARE_FAULTS, FaultFlag


class Mode(str, enum.Enum):
    LINK_LOST = "link_lost"
    ESTOPPED = "estopped"
    FAULT = "fault"
    IDLE = "idle"
    HOLDING = "holding"
    TRACKING = "tracking"


#: Modes in which the loop sends no targets at all.
STOPPED_MODES = (Mode.LINK_LOST, Mode.ESTOPPED, Mode.FAULT)


class Watchdog:
    """Latches and mode decisions; counts every mode entry in :attr:`entries`."""

    def __init__(self) -> None:
        self.mode = Mode.IDLE
        self.entries: Counter = Counter()
        self._estop = False
        self._link_lost = False

    def estop(self) -> None:
        """Latch the e-stop (takes effect at the next :meth:`update`)."""
        self._estop = True

    def clear_estop(self) -> None:
        """Release the latch. It re-latches at the next update if the controller still reports ESTOP."""
        self._estop = False

    @property
    def estop_latched(self) -> bool:
        """True from :meth:`estop` (or the controller's ESTOP) until :meth:`clear_estop`, whatever the mode."""
        return self._estop

    @property
    def link_down(self) -> bool:
        """True from :meth:`link_lost` until :meth:`link_restored`."""
        return self._link_lost

    def link_lost(self) -> None:
        self._link_lost = True

    def link_restored(self) -> None:
        self._link_lost = False

    def update(self, *, now: float, faults: FaultFlag, trajectory_end: Optional[float]) -> Mode:
        """The mode for this tick (see the module table); returns it and stores it in :attr:`mode`."""
        if faults & FaultFlag.ESTOP:
            self._estop = True
        if self._link_lost:
            mode = Mode.LINK_LOST
        elif self._estop:
            mode = Mode.ESTOPPED
        elif faults & (HARDWARE_FAULTS | FaultFlag.HOST_TIMEOUT):
            mode = Mode.FAULT
        elif trajectory_end is None:
            mode = Mode.IDLE
        elif now > trajectory_end:
            mode = Mode.HOLDING
        else:
            mode = Mode.TRACKING
        if mode != self.mode:
            self.entries[mode.value] += 1
        self.mode = mode
        return mode

    def report(self) -> Dict[str, int]:
        """How often each mode was entered."""
        return dict(sorted(self.entries.items()))
