"""The one error type of the calibration commands (exit code 2 in the CLI)."""

from __future__ import annotations

from xvla.errors import XVLAError


class CalibrationError(XVLAError, ValueError):
    """A calibration input is missing, corrupt or does not match the bundle; the message names the file,
    key or value at fault and what was expected."""
