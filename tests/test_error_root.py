"""One error root: every exception class the project defines derives from ``xvla.errors.XVLAError``, except
the drivers', a library of its own that imports nothing of the project, whose root is ``drivers.arm.ArmError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from drivers.arm import ArmError
from xvla.errors import XVLAError

PACKAGES = {"xvla": XVLAError, "export": XVLAError, "runtime": XVLAError, "calibration": XVLAError,
            "xvla_edge": XVLAError, "benchmarks": XVLAError, "drivers": ArmError}


def defined_exceptions(package: str) -> list[type]:
    """Exception classes defined (not imported) in the package's modules; test and conftest modules skipped."""
    found = []
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("test_") or leaf in ("conftest", "__main__"):
            continue
        module = importlib.import_module(info.name)
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_exception_class_derives_from_its_root(package):
    classes = defined_exceptions(package)
    assert classes, f"no exception classes found in {package}: the walk is broken"
    assert [c.__qualname__ for c in classes if not issubclass(c, PACKAGES[package])] == []
