"""Dynamixel Protocol 2.0 on pyserial for X-series servo arms (WidowX, Koch, ALOHA-style).

- :mod:`.protocol`: packets, CRC-16, byte stuffing, status errors (pure, no I/O);
- :mod:`.tables`: the X-series control table as data;
- :mod:`.bus`: :class:`~drivers.dynamixel.bus.Bus`, ping/read/write/sync read/sync write/reboot with retries;
- :mod:`.joint_offsets`: an arm's joint offsets (zero offset, direction, limits per joint), JSON per robot, in
  this project's format or LeRobot's calibration files;
- :mod:`.arm`: :class:`~drivers.dynamixel.arm.DynamixelArm`, a joint-space ``Arm`` guarded by Bus_Watchdog;
- :mod:`.emulator`: a servo chain in its own process on a pty (``python -m drivers.dynamixel.emulator``).

An arm family: it imports the ground floor of ``drivers/`` and, for its emulator,
:mod:`drivers.emulation.pty_emulator`; never the control path or another family.
"""
