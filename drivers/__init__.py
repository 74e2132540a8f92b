"""Arm drivers: stream timed action chunks to arm controllers at the control rate.

numpy, scipy and pyserial only: nothing here imports torch, onnxruntime or the model packages. Start with
:mod:`drivers.arm` (the backend interface), :mod:`drivers.registry` (the drivers by name) and
:mod:`drivers.loop_process` (the control loop in its own process).
"""
