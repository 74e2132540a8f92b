"""The official X-VLA implementation, loaded at run time from a source directory (never part of this repository).

Shared by the fixture generator (:mod:`tools.make_official_fixtures`) and the benchmark worker
(:mod:`benchmarks.official_runner`), both run by an interpreter with the official pins (torch CPU,
transformers 4.51.3, timm 1.0.12), not the project's, which finds this package in its working directory (the
repository root, or the one :class:`benchmarks.harness.OfficialRunner` gives its worker) without the project
installed. Standard library only at module level; torch is imported where it is used.

The official ``models/`` package (e.g. a ``git archive`` of official commit 6bc2513) is loaded from its file
path and registered in ``sys.modules`` as ``models``, so its relative imports
(``from .modeling_florence2 import ...``) resolve inside it; the interpreter's module search path is not edited.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

PACKAGE = "models"  # the official package's directory and import name
SUBMODULES = ("action_hub", "configuration_xvla", "modeling_florence2", "modeling_xvla", "processing_xvla")


class _AnyAttrMeta(type):
    """Placeholder classes whose class attributes are again placeholder classes (``InterpolationMode.NEAREST``)."""

    def __getattr__(cls, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        return _AnyAttrMeta(item, (), {})


class _AnyAttrModule(types.ModuleType):
    """Placeholder module: every missing attribute is a placeholder class (import-time references only)."""

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        return _AnyAttrMeta(item, (), {})


class _TorchvisionPlaceholder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision`` and its submodules as placeholder packages."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _AnyAttrModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install_torchvision_placeholder_if_needed() -> bool:
    """Make ``import torchvision`` succeed when it fails; True when the placeholder was installed.

    timm 1.0.12 imports torchvision at import time; the official model code never uses it, and the only
    torchvision wheels at hand may be CUDA builds that cannot load next to a CPU torch. Must run AFTER
    transformers is imported (so that transformers records torchvision as unavailable) and BEFORE timm is.
    """
    try:
        import torchvision  # noqa: F401

        return False
    except Exception:  # noqa: BLE001 - any failure (missing, or a broken CUDA build) -> placeholder
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _TorchvisionPlaceholder())
        return True


def load_package(src: Path, name: str = PACKAGE) -> types.ModuleType:
    """The package ``src/<name>/`` imported as ``name``, its submodules found in that directory only.

    Loading the same directory again returns the package already imported; a different package already
    imported under ``name`` is an error (its submodules would mix with these).
    """
    directory = (src / name).resolve()
    loaded = sys.modules.get(name)
    if loaded is not None:
        if [str(Path(p).resolve()) for p in getattr(loaded, "__path__", [])] == [str(directory)]:
            return loaded
        raise ImportError(f"a different {name!r} is already imported ({loaded!r}); cannot load {directory}")
    if not (directory / "__init__.py").is_file():
        raise ImportError(f"{directory} is not a Python package (no __init__.py)")
    spec = importlib.util.spec_from_file_location(name, directory / "__init__.py",
                                                  submodule_search_locations=[str(directory)])
    assert spec is not None and spec.loader is not None  # a .py file always has a spec and a loader
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return package


def import_official(src: Path) -> dict[str, Any]:
    """The official classes and modules from ``src/models/``, with the torchvision placeholder if needed."""
    import transformers  # noqa: F401  (before the torchvision placeholder, see there)
    import transformers.modeling_utils  # noqa: F401

    stubbed = install_torchvision_placeholder_if_needed()
    if not (src / PACKAGE / "modeling_xvla.py").is_file():
        raise SystemExit(f"{src} does not contain {PACKAGE}/modeling_xvla.py")
    package = load_package(src)
    modules = {sub: importlib.import_module(f"{package.__name__}.{sub}") for sub in SUBMODULES}
    return {
        "XVLA": modules["modeling_xvla"].XVLA,
        "XVLAConfig": modules["configuration_xvla"].XVLAConfig,
        "XVLAProcessor": modules["processing_xvla"].XVLAProcessor,
        "modeling_xvla": modules["modeling_xvla"],
        "modeling_florence2": modules["modeling_florence2"],
        "action_hub": modules["action_hub"],
        "torchvision_stubbed": stubbed,
    }


@contextlib.contextmanager
def fixed_noise(noise: torch.Tensor) -> Iterator[list[tuple[tuple[int, ...], Any]]]:
    """Make ``torch.randn`` return a copy of ``noise`` (x1 of ``generate_actions``) for the duration.

    Yields the list of calls made, as (shape, dtype requested); a shape other than ``noise``'s raises. The copy
    has the requested dtype (torch's default without one) and device, as ``torch.randn`` would.
    """
    import torch

    original, calls = torch.randn, []

    def randn(*size: Any, **kwargs: Any) -> torch.Tensor:
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        calls.append((shape, kwargs.get("dtype")))
        if tuple(shape) != tuple(noise.shape):
            raise RuntimeError(f"unexpected torch.randn{tuple(shape)}; the noise is {tuple(noise.shape)}")
        dtype = kwargs.get("dtype") or torch.get_default_dtype()
        return noise.clone().to(dtype=dtype, device=kwargs.get("device") or "cpu")

    torch.randn = randn
    try:
        yield calls
    finally:
        torch.randn = original
