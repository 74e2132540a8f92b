"""The official-implementation shim (:mod:`benchmarks.official`) on a fake ``models/`` package, and the worker's start.

The official code itself is not here (nor its interpreter): the fake package imports itself the way the official
one does (relative imports between its modules, an empty ``__init__.py``).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.official import PACKAGE, SUBMODULES, fixed_noise, load_package


def write_package(root: Path, modules: dict[str, str]) -> Path:
    """``root/models/`` with an empty ``__init__.py`` and ``modules`` (name → source); returns ``root``."""
    (root / PACKAGE).mkdir(parents=True)
    (root / PACKAGE / "__init__.py").write_text("")
    for name, source in modules.items():
        (root / PACKAGE / f"{name}.py").write_text(textwrap.dedent(source))
    return root


FAKE = {
    "configuration_fake": """
        class FakeConfig:
            hidden = 4
        """,
    "modeling_fake": """
        from .configuration_fake import FakeConfig

        class FakeModel:
            config_class = FakeConfig
        """,
}


@pytest.fixture
def clean_modules():
    """No ``models`` package imported before or after the test (the shim registers it in sys.modules)."""
    def forget() -> dict[str, object]:
        return {name: sys.modules.pop(name) for name in list(sys.modules)
                if name == PACKAGE or name.startswith(PACKAGE + ".")}

    saved = forget()
    yield
    forget()
    sys.modules.update(saved)


def test_package_loads_from_its_directory_with_relative_imports(tmp_path, clean_modules) -> None:
    src = write_package(tmp_path / "official", FAKE)
    path_before = list(sys.path)
    package = load_package(src)
    modeling = importlib.import_module("models.modeling_fake")
    assert sys.path == path_before
    assert package is sys.modules["models"] and package.__path__ == [str((src / "models").resolve())]
    assert modeling.__file__ == str((src / "models" / "modeling_fake.py").resolve())
    assert modeling.FakeModel.config_class is sys.modules["models.configuration_fake"].FakeConfig
    assert load_package(src) is package  # the same directory again: the package already imported


def test_a_different_package_or_a_plain_directory_is_refused(tmp_path, clean_modules) -> None:
    load_package(write_package(tmp_path / "a", FAKE))
    with pytest.raises(ImportError, match="a different 'models' is already imported"):
        load_package(write_package(tmp_path / "b", FAKE))
    (tmp_path / "c" / "models_c").mkdir(parents=True)  # a directory without __init__.py
    with pytest.raises(ImportError, match="not a Python package"):
        load_package(tmp_path / "c", name="models_c")


@pytest.mark.subprocess
def test_import_official_maps_the_official_classes(tmp_path) -> None:
    """In a fresh interpreter: transformers first, the torchvision placeholder if needed, then ``models/``."""
    pytest.importorskip("transformers")
    modules = {name: "" for name in SUBMODULES}
    modules.update(configuration_xvla="class XVLAConfig:\n    pass\n",
                   processing_xvla="class XVLAProcessor:\n    pass\n",
                   modeling_xvla="from .configuration_xvla import XVLAConfig\n\n"
                                 "class XVLA:\n    config_class = XVLAConfig\n")
    src = write_package(tmp_path / "official", modules)
    code = textwrap.dedent(f"""
        from pathlib import Path
        from benchmarks.official import import_official
        off = import_official(Path({str(src)!r}))
        assert off["XVLA"].config_class is off["XVLAConfig"], off
        assert off["XVLA"].__module__ == "models.modeling_xvla" and off["XVLAProcessor"].__name__ == "XVLAProcessor"
        import torchvision.transforms  # works, with the placeholder where torchvision does not import
        print(off["torchvision_stubbed"], torchvision.transforms.InterpolationMode.NEAREST.__name__)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stubbed, nearest = proc.stdout.split()
    assert stubbed in ("True", "False") and nearest == "NEAREST"


def test_fixed_noise_is_the_one_draw_and_is_undone() -> None:
    torch = pytest.importorskip("torch")
    original = torch.randn
    noise = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    with fixed_noise(noise) as calls:
        x = torch.randn(2, 3, dtype=torch.float64)
        y = torch.randn((2, 3))
        with pytest.raises(RuntimeError, match=r"unexpected torch.randn\(4, 3\)"):
            torch.randn(4, 3)
    assert torch.randn is original
    assert x.dtype == torch.float64 and torch.equal(x, noise.double())
    assert y.dtype == torch.get_default_dtype() and torch.equal(y, noise) and y is not noise
    assert calls == [((2, 3), torch.float64), ((2, 3), None), ((4, 3), None)]


@pytest.mark.subprocess
def test_worker_starts_as_a_module_with_only_this_package(tmp_path) -> None:
    """What :class:`benchmarks.harness.OfficialRunner` spawns, up to argument parsing (the project's interpreter)."""
    pytest.importorskip("torch")
    from benchmarks.harness import worker_directory

    cwd = worker_directory(tmp_path)
    assert [p.name for p in cwd.iterdir()] == ["benchmarks"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.official_runner", "--help"], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--official-src" in proc.stdout and "--checkpoint" in proc.stdout
