"""What setup.cfg promises each install profile, and what a missing optional package says.

The robot install depends on no ONNX Runtime flavour (onnxruntime and onnxruntime-gpu install the same module,
so either as a hard dependency would replace the other); cuda-python comes per CUDA major; transformers is
pinned per Python version. The errors name the package and the extra to install."""

from __future__ import annotations

import configparser
import pickle
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from runtime.backends.base import BackendError, BackendUnavailable
from xvla.extras import EXTRAS, MissingDependency, needs

REPO = Path(__file__).resolve().parents[2]


def requirements(text: str) -> list[Requirement]:
    return [Requirement(line.strip()) for line in text.strip().splitlines() if line.strip() and "%(" not in line]


@pytest.fixture(scope="module")
def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=configparser.BasicInterpolation())
    cfg.read(REPO / "setup.cfg")
    return cfg


def test_the_robot_install_leaves_the_onnxruntime_flavour_to_the_machine(setup_cfg):
    robot = {r.name for r in requirements(setup_cfg["options"]["install_requires"])}
    assert not robot & {"onnxruntime", "onnxruntime-gpu", "torch", "transformers", "onnx"}, robot
    assert {"numpy", "pyserial", "prometheus_client", "tokenizers"} <= robot
    extras = setup_cfg["options.extras_require"]
    assert [r.name for r in requirements(extras["onnxruntime"])] == ["onnxruntime"]
    assert [r.name for r in requirements(extras["onnxruntime-gpu"])] == ["onnxruntime-gpu"]
    assert "onnxruntime" not in {r.name for r in requirements(extras["export"])}  # a GPU workstation keeps its build
    documented = set(EXTRAS)
    assert documented <= set(extras), documented - set(extras)


def test_cuda_python_is_pinned_per_cuda_major(setup_cfg):
    extras = setup_cfg["options.extras_require"]
    assert "cuda" not in extras  # one extra for every driver installed cuda-python 13 on CUDA 12 machines
    for major in (12, 13):
        (req,) = requirements(extras[f"cuda{major}"])
        assert req.name == "cuda-python"
        assert req.specifier.contains(f"{major}.6.0") and not req.specifier.contains(f"{major + 1}.0.0")
        assert not req.specifier.contains(f"{major - 1}.9.0")


def test_transformers_is_pinned_per_python_version(setup_cfg):
    torch_extra = requirements(setup_cfg["options.extras_require"]["torch"])
    for python, expected in (("3.10", "5.20.2"), ("3.11", "5.23.0"), ("3.12", "5.23.0")):
        env = {"python_version": python, "python_full_version": python + ".0"}
        chosen = [str(r.specifier) for r in torch_extra
                  if r.name == "transformers" and (r.marker is None or r.marker.evaluate(env))]
        assert chosen == [f"=={expected}"], (python, chosen)
    assert Marker('python_version < "3.11"').evaluate({"python_version": "3.10"})


def test_a_missing_onnxruntime_is_named_whatever_extra_was_asked_for():
    with pytest.raises(MissingDependency) as info:
        with needs("export"):
            raise ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    assert info.value.extra == "onnxruntime" and "onnxruntime-gpu" in str(info.value)
    with pytest.raises(MissingDependency, match=r"pip install 'xvla-edge\[torch\]'"):
        with needs("torch"):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
    with pytest.raises(ValueError, match="unknown extra 'cuda'"):
        with needs("cuda"):
            pass


def test_the_runtime_names_both_onnxruntime_packages_when_neither_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the import fails as if not installed
    monkeypatch.delitem(sys.modules, "runtime.backends.onnxruntime", raising=False)
    with pytest.raises(BackendError, match=r"neither onnxruntime \(CPU\) nor onnxruntime-gpu \(CUDA\) imports") as info:
        import runtime.backends.onnxruntime  # noqa: F401
    monkeypatch.delitem(sys.modules, "runtime.backends.onnxruntime", raising=False)
    assert isinstance(info.value, MissingDependency) and info.value.extra == "onnxruntime"  # the CLI: one line, exit 2
    assert "pip install 'xvla-edge[onnxruntime]'" in str(info.value)


def test_a_missing_dependency_keeps_its_class_and_message_through_pickle():
    """A Ray replica or a worker process sends the error back pickled."""
    error = BackendUnavailable.of("torch", ModuleNotFoundError("No module named 'torch'"), needed_by="the torch backend")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BackendUnavailable and copy.extra == "torch" and str(copy) == str(error)
    assert str(copy).startswith("the torch backend needs the 'torch' extra")
