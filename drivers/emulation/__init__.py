"""Stand-ins for real hardware, for demos, the sim and tests: the simulated arm (:mod:`.sim_arm`), the harness
that runs a byte-protocol emulator in its own process on a pty (:mod:`.pty_emulator`), what the emulated servo
chains of the Dynamixel and Feetech families share (:mod:`.servo_chain`), and the in-process port on a virtual clock
(:mod:`.virtual_port`). It imports the ground floor of ``drivers/`` and the rotation math of
:mod:`drivers.quaternion`, never an arm family or the control loop itself; the control path never
imports it (an emulated arm reaches the loop as a factory, like a real one).
"""
