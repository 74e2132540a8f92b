"""Exceptions raised for bad checkpoints, configs and inputs.

Every message names the file, key or value at fault and what was expected, so a user never has to read a
traceback from deep inside torch to learn what went wrong.
"""


class XVLAError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(XVLAError, ValueError):
    """A config.json (official or LeRobot) is missing a field or is inconsistent."""


class CheckpointError(XVLAError, ValueError):
    """A checkpoint directory is missing files, or its weights do not match its config."""


class InputError(XVLAError, ValueError):
    """An observation or model input has the wrong shape, dtype or length."""
