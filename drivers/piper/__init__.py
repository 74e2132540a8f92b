"""The AgileX Piper arm (6 joints and a parallel gripper) over CAN, with python-can (the ``[piper]`` extra).

- :mod:`.protocol`: the frames this project sends and reads, their IDs, byte layouts and scales (pure, no I/O,
  no python-can);
- :mod:`.arm`: :class:`~drivers.piper.arm.PiperArm`, an ``Arm`` in end-effector or joint space on a python-can
  bus (``socketcan`` on the robot computer, ``slcan`` for serial-line adapters, ``virtual`` in tests), and its
  read-only :meth:`~drivers.piper.arm.PiperArm.probe`;
- :mod:`.emulator`: an emulated Piper, in-process on a python-can virtual bus or in its own process behind a
  pty speaking slcan (``python -m drivers.piper.emulator``, run by :mod:`drivers.emulation.pty_emulator`).

An arm family: it imports the ground floor of ``drivers/`` and, for its emulator,
:mod:`drivers.emulation.pty_emulator`; never the control path or another family. python-can is imported only
inside functions of :mod:`.arm` and :mod:`.emulator` (so the registry, which names every driver, loads without
it); nothing is imported here.
"""
