"""Feetech STS servos on their serial bus: the SO-100 / SO-101 arms (STS3215).

- :mod:`.protocol`: packets, checksum, status error bits (pure, no I/O);
- :mod:`.tables`: the STS3215 control table as data (sign-magnitude registers included);
- :mod:`.bus`: :class:`~drivers.feetech.bus.FeetechBus`, the shared :class:`~drivers.serial_bus.SerialBus` with
  Feetech's hooks;
- :mod:`.calibration`: a ``lerobot-calibrate`` file read as it is, and LeRobot's joint ↔ tick formulas;
- :mod:`.arm`: :class:`~drivers.feetech.arm.FeetechArm`, a joint-space ``Arm`` with a pipelined tick;
- :mod:`.emulator`: a servo chain in its own process on a pty (``python -m drivers.feetech.emulator``).

An arm family: it imports the ground floor of ``drivers/`` and, for its emulator,
:mod:`drivers.emulation.pty_emulator`; never the control path or another family.
"""
