"""The drivers are a library of their own: every error class in drivers/ derives from drivers.arm.ArmError,
and the modules that run in the emulator processes still start without numpy."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import drivers
from drivers.arm import ArmError

REPO = Path(__file__).resolve().parents[2]


def test_every_error_class_in_drivers_derives_from_arm_error():
    errors = []
    for info in pkgutil.walk_packages(drivers.__path__, "drivers."):
        module = importlib.import_module(info.name)
        errors += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                   if issubclass(cls, BaseException) and cls.__module__ == module.__name__]
    names = {cls.__qualname__ for cls in errors}
    assert {"ArmError", "DynamixelError", "ProtocolError", "EmulatorError", "ArmCalibrationError"} <= names
    assert [cls.__qualname__ for cls in errors if not issubclass(cls, ArmError)] == []


@pytest.mark.subprocess
def test_the_emulators_and_codecs_import_no_numpy():
    code = ("import sys, drivers.xvla_serial.emulator, drivers.dynamixel.emulator; "
            "print([m for m in sys.modules if m.split('.')[0] == 'numpy'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
