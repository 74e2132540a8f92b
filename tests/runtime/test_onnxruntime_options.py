"""What the ONNX Runtime backend asks of the CUDA provider (a recording stand-in for the session: no GPU here)."""

from __future__ import annotations

from pathlib import Path

import pytest

ort = pytest.importorskip("onnxruntime")

from runtime.backends import onnxruntime as backend  # noqa: E402


class Recorded:
    """Stands in for ``ort.InferenceSession``: keeps the providers asked for and claims to run on the first."""

    asked: list = []

    def __init__(self, path: str, sess_options: object, providers: list) -> None:
        Recorded.asked.append(providers)
        self.providers = providers

    def get_providers(self) -> list[str]:
        return [p[0] if isinstance(p, tuple) else p for p in self.providers]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list:
    Recorded.asked = []
    monkeypatch.setattr(backend.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(backend.ort, "InferenceSession", Recorded)
    monkeypatch.setattr(backend.ort, "preload_dlls", lambda: Recorded.asked.append("preload"), raising=False)
    monkeypatch.setattr(backend, "_CUDA_LIBRARIES", [])
    return Recorded.asked


@pytest.mark.parametrize("cuda_graph", [True, False])
def test_cuda_sessions_keep_fp32_in_fp32_and_graph_only_when_asked(recorded: list, cuda_graph: bool) -> None:
    backend.create_session(Path("g.onnx"), "cuda", None, cuda_graph=cuda_graph)
    backend.create_session(Path("g.onnx"), "cuda", None, cuda_graph=cuda_graph)
    assert recorded[0] == "preload" and recorded.count("preload") == 1  # the CUDA libraries, once, before a session
    (cuda, options), cpu = recorded[1]
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert options["use_tf32"] == "0"  # TF32 would put an fp32 bundle far outside its 1e-5 parity
    assert options.get("enable_cuda_graph") == ("1" if cuda_graph else None)


def test_cpu_sessions_ask_for_the_cpu_provider_alone(recorded: list) -> None:
    backend.create_session(Path("g.onnx"), "cpu", 1, cuda_graph=True)
    assert recorded == [["CPUExecutionProvider"]]


def test_a_failed_preload_is_logged_and_the_session_still_made(recorded: list, monkeypatch, caplog) -> None:
    def fail() -> None:
        raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(backend.ort, "preload_dlls", fail, raising=False)
    backend.create_session(Path("g.onnx"), "cuda", None)
    assert len(recorded) == 1 and "preload_dlls() failed (libcudnn.so.9: cannot open" in caplog.text
