"""xvla-serial: our framed serial protocol to microcontroller arm controllers (spec: ``PROTOCOL.md`` here).

- :mod:`.codec`: frames, CRC, messages, the streaming parser (pure, no I/O);
- :mod:`.arm`: :class:`~drivers.xvla_serial.arm.XvlaSerialArm`, the host side, an ``Arm`` on pyserial;
- :mod:`.emulator`: a controller in its own process on a pty (``python -m drivers.xvla_serial.emulator``, run by
  :mod:`drivers.emulation.pty_emulator`).

An arm family: it imports the ground floor of ``drivers/`` and, for its emulator,
:mod:`drivers.emulation.pty_emulator`; never the control path or another family. Nothing is imported here, so
the emulator processes start without numpy.
"""
