"""One error root: every exception class the project defines derives from ``xvla.errors.XVLAError``, except
the drivers', a library of its own that imports nothing of the project but the stdlib-only ``xvla.validation``
(which defines no exception), whose root is ``drivers.arm.ArmError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from drivers.arm import ArmError
from xvla.errors import XVLAError

PACKAGES = {"xvla": XVLAError, "export": XVLAError, "runtime": XVLAError, "calibration": XVLAError,
            "xvla_edge": XVLAError, "benchmarks": XVLAError, "drivers": ArmError}


def defined_exceptions(package: str) -> tuple[list[type], set[str]]:
    """Exception classes defined (not imported) in the package's modules; test and conftest modules skipped,
    and modules that need an optional library this install lacks (torch on a robot install)."""
    found, missing = [], set()
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("test_") or leaf in ("conftest", "__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in PACKAGES:
                raise
            missing.add(exc.name)
            continue
        found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                  if issubclass(obj, BaseException) and obj.__module__ == module.__name__]
    return found, missing


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_exception_class_derives_from_its_root(package):
    classes, missing = defined_exceptions(package)
    if not classes and missing:
        pytest.skip(f"{package}: its exception modules need {sorted(missing)}, not installed here")
    assert classes, f"no exception classes found in {package}: the walk is broken"
    assert [c.__qualname__ for c in classes if not issubclass(c, PACKAGES[package])] == []
