"""Calibration: does an engine still behave like its checkpoint, and INT8 bundles that pass that proof.

- :mod:`calibration.metrics`: chunk errors in physical units (mm, degrees, gripper flips) and tolerances.
- :mod:`calibration.sets`, :mod:`calibration.capture`: calibration sets on disk and where they come from.
- :mod:`calibration.check`, :mod:`calibration.report`: the accuracy gate and its table / JSON / PNG.
- :mod:`calibration.quantize`: static INT8 (Q/DQ) bundles calibrated and gated on a set.
- :mod:`xvla_edge.commands.calibrate`, :mod:`xvla_edge.commands.quantize`: ``xvla-edge calibrate`` and ``xvla-edge quantize``.
"""
