"""Arm drivers: stream timed action chunks to arm controllers at the control rate.

numpy, scipy and pyserial only: nothing here imports torch, onnxruntime or the model packages; of the rest of
the project only the stdlib-only validation kit :mod:`xvla.validation` (:mod:`.registry` checks ``[arm]`` with it).
Start with :mod:`drivers.arm` (the backend interface), :mod:`drivers.registry` (the drivers by name) and
:mod:`drivers.control.loop_process` (the control loop in its own process).

The rooms, each importing only what its own docstring allows (the room rules of ``tests/test_layers.py`` check them):

- this level, the ground floor every room stands on: :mod:`.arm` (the ``Arm`` interface and the values that
  cross it), :mod:`.errors`, :mod:`.transport`, :mod:`.stream_parser`, :mod:`.physical_ranges`, the rotation math
  of :mod:`.quaternion` (the control path's and the simulated arm's), the servo bus and the servo-bus arm the
  Dynamixel and Feetech families share (:mod:`.serial_bus`, :mod:`.servo_arm`) and LeRobot's calibration files
  (:mod:`.lerobot_calibration`); it imports
  no room. :mod:`.registry` (the ``[arm]`` schema: the drivers by name) is the one exception, at the top: it
  assembles every arm family, the simulated arm and the control path's safety limits;
- :mod:`.control`: the real-time control path (loop process, tick, splice, safety envelope, watchdog);
- :mod:`.dynamixel`, :mod:`.feetech` and :mod:`.xvla_serial`: one arm family each (protocol, bus or codec, arm,
  emulator);
- :mod:`.emulation`: the simulated arm and the emulators' plumbing, stand-ins for real hardware;
- :mod:`.system`: OS plumbing (real-time pacing, systemd notify).

:mod:`.registry` and :mod:`.physical_ranges` stay at this level rather than in a room of their own although
together they make the ``[arm]`` schema: the physical ranges are the ground floor (the ``Arm`` interface and
every room check against them), the registry is the top that imports every room, and a room holding both
would put the lowest and the highest floor of ``drivers/`` under one roof.
"""
