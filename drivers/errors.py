"""The root of every error raised in ``drivers/``: :class:`ArmError`, re-exported by :mod:`drivers.arm`.

It has a module of its own, free of numpy, so the byte-protocol codecs and the emulator processes derive
their errors from it without importing numpy.
"""


class ArmError(Exception):
    """Base class of every error raised in ``drivers/`` on purpose (arm backends, protocols, emulators)."""
