"""xvla-serial: our framed serial protocol to microcontroller arm controllers (spec: ``PROTOCOL.md`` here).

- :mod:`.codec`: frames, CRC, messages, the streaming parser (pure, no I/O);
- :mod:`.client`: :class:`~drivers.xvla_serial.client.XvlaSerialArm`, the host side, an ``Arm`` on pyserial;
- :mod:`.emulator`: a controller in its own process on a pty (``python -m drivers.xvla_serial.emulator``);
- :mod:`.ptyproc`: runs such emulators (also the Dynamixel one) and talks to them.

Nothing is imported here, so the emulator processes start without numpy.
"""
