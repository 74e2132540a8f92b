"""The project's error root, and the errors of the model package.

:class:`XVLAError` is the base of every error the project raises on purpose, in every package above this
one too (bundles, backends, export, calibration, flash, the daemon's config), so a command catches one
type. The drivers are a library of their own that imports nothing of the project but the stdlib-only
:mod:`xvla.validation`: their root is :class:`drivers.arm.ArmError`. Every message names the file, key or
value at fault and what was expected, so a user never has to read a traceback from deep inside torch to learn what went wrong.
"""


class XVLAError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(XVLAError, ValueError):
    """A config.json (official or LeRobot) is missing a field or is inconsistent."""


class CheckpointError(XVLAError, ValueError):
    """A checkpoint directory is missing files, or its weights do not match its config."""


class InputError(XVLAError, ValueError):
    """An observation or model input has the wrong shape, dtype or length."""


class OutputError(XVLAError):
    """An output directory cannot be written (exists without --force, no parent, no permission)."""
