"""Dynamixel Protocol 2.0 on pyserial for X-series servo arms (WidowX, Koch, ALOHA-style).

- :mod:`.protocol`: packets, CRC-16, byte stuffing, status errors (pure, no I/O);
- :mod:`.tables`: the X-series control table as data;
- :mod:`.bus`: :class:`~drivers.dynamixel.bus.Bus`, ping/read/write/sync read/sync write/reboot with retries;
- :mod:`.calibration`: per-joint offset/direction/limits, JSON per robot;
- :mod:`.arm`: :class:`~drivers.dynamixel.arm.DynamixelArm`, a joint-space ``Arm`` guarded by Bus_Watchdog;
- :mod:`.emulator`: a servo chain in its own process on a pty (``python -m drivers.dynamixel.emulator``).
"""
