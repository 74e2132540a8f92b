"""The real-time control path: the loop's own process (:mod:`.loop_process`), its tick (:mod:`.control_loop`),
and what a tick does to a chunk: :mod:`.trajectory`, :mod:`.splice`, :mod:`.interpolation`, :mod:`.streamer`,
the safety envelope (:mod:`.safety`), the :mod:`.watchdog` and the trace ring (:mod:`.trace_ring`). It drives
any backend through the ``Arm`` interface, so it imports the ground floor of ``drivers/`` (:mod:`drivers.arm`,
:mod:`drivers.physical_ranges`, the rotation math of :mod:`drivers.quaternion`) and :mod:`drivers.system`,
never an arm family, :mod:`drivers.emulation` or :mod:`drivers.registry`: arms reach it only as a factory.
"""
