"""The TensorRT backend and ``xvla-edge build`` around the TensorRT calls: stamps, engines.json, the build's
atomic swap, the memory plan and the captured denoising loop, with TensorRT and CUDA replaced by fakes.
The tests marked ``tensorrt`` run the real thing on a machine with TensorRT and a GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
import pytest

from runtime.backends.tensorrt import api as trt_api, cuda_graph
from runtime.backends import tensorrt_available
from runtime.backends.tensorrt import backend as trt_backend
from runtime.backends.base import BackendError
from runtime.backends.tensorrt.backend import (ENGINES_DIR, ENGINES_FILE, GRAPHS, SLOT_BYTES, TIMING_CACHE, EngineRecord,
                                       TensorRTBackend, check_engines, engine_file, graph_sources, io_mismatches,
                                       step_bindings, t_schedule, write_engines_json)
from runtime.manifest import Manifest
from runtime.policy import create_backend
from xvla_edge.cli import main

from tests.support.fake_cuda_runtime import Err, FakeRuntime
from tests.support.fake_tensorrt import FakeTensorRT

MACHINE = {"tensorrt": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7"}
T, A, C, D, V, L, S = 6, 4, 3, 4, 2, 5, 16  # chunk, action dim, context tokens, width, views, tokens, image size


def _specs(*specs: tuple[str, list[int], str]) -> list[dict[str, Any]]:
    return [{"name": n, "shape": s, "dtype": d} for n, s, d in specs]


def make_bundle(root: Path, precision: str = "fp16", quantization: Any = None,
                batch_sizes: tuple[int, ...] = (1,), domains: tuple[int, ...] = (), prefix: bool = False) -> Path:
    """A bundle directory with a real manifest (tiny shapes) and stand-in graph files; ``domains``: a server
    bundle's; ``prefix``: its denoise graph takes real-time chunking's prefix inputs."""
    bundle = root / "bundle"
    bundle.mkdir()
    files = {}
    for name in ("encoder.onnx", "encoder.onnx.data", "denoise.onnx", "denoise.onnx.data", "tokenizer.json"):
        data = f"stand-in for {name}".encode()
        (bundle / name).write_bytes(data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    b = 1 if batch_sizes == (1,) else "batch"
    context = ("context", [b, C, D], "float32")
    manifest = {
        "schema_version": 1, "domain_id": 0, "embodiment": "test",
        "action": {"mode": "auto", "dim": A, "output_dim": A, "chunk_length": T, "chunk_seconds": 1.0,
                   "gripper_channels": [], "rot6d_layout": "rows", "arms": 1},
        "sampler": {"default_steps": 10},
        "inputs": {"token_length": L, "image_size": S, "view_slots": 3, "views": V, "proprio_dim": A},
        "precision": precision,
        "graphs": {
            "encoder": {"file": "encoder.onnx",
                        "inputs": _specs(("pixel_values", [b, V, 3, S, S], "float32"), ("image_mask", [b, V], "bool"),
                                         ("input_ids", [b, L], "int64")),
                        "outputs": _specs(context)},
            "denoise": {"file": "denoise.onnx",
                        "inputs": _specs(context, ("x1", [b, T, A], "float32"), ("prev", [b, T, A], "float32"),
                                         ("proprio", [b, A], "float32"), ("t", [1], "float32")),
                        "outputs": _specs(("x0", [b, T, A], "float32"), ("action", [b, T, A], "float32"))},
        },
        "files": files,
    }
    if batch_sizes != (1,):
        manifest["batch_sizes"] = list(batch_sizes)
    if quantization is not None:
        manifest["quantization"] = quantization
    if domains:
        del manifest["domain_id"], manifest["action"]["chunk_seconds"], manifest["action"]["arms"]
        manifest["domains"] = [{"domain_id": d, "embodiment": f"robot-{d}", "chunk_seconds": 1.0 + d, "arms": 1}
                               for d in domains]
        manifest["graphs"]["denoise"]["inputs"] += _specs(("domain_id", [b], "int64"))
    if prefix:
        manifest["graphs"]["denoise"]["inputs"] += _specs(("prefix", [b, T, A], "float32"),
                                                          ("prefix_weights", [b, T], "float32"))
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def add_engines(bundle: Path, machine: Mapping[str, str] = MACHINE) -> None:
    """Engines and engines.json as ``xvla-edge build`` leaves them (the plans are stand-ins)."""
    manifest = Manifest.load(bundle)
    directory = bundle / ENGINES_DIR
    directory.mkdir()
    records = {}
    for graph in GRAPHS:
        (directory / engine_file(graph)).write_bytes(f"plan of {graph}".encode())
        records[graph] = EngineRecord(file=engine_file(graph), bytes=len(f"plan of {graph}"), **machine,
                                      onnx=graph_sources(manifest, graph))
    write_engines_json(directory, records)


@pytest.fixture
def bundle(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A batch-1 bundle, or one for the batch sizes (and a server bundle's domains) given by indirect
    parametrisation, or :func:`make_bundle`'s keyword arguments (a dict)."""
    param = getattr(request, "param", (1,))
    if isinstance(param, dict):
        return make_bundle(tmp_path, **param)
    sizes, domains = param if isinstance(param[0], tuple) else (param, ())
    return make_bundle(tmp_path, batch_sizes=sizes, domains=domains)


@pytest.mark.subprocess
def test_the_tensorrt_modules_import_without_torch_tensorrt_or_cuda() -> None:
    code = ("import sys, runtime.backends.tensorrt.build, runtime.backends.tensorrt.backend, runtime.backends.tensorrt.api, runtime.backends.tensorrt.cuda_graph; "
            "print(sorted(m for m in ('torch', 'export', 'tensorrt', 'cuda') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2]).stdout
    assert out.strip() == "[]"


# -- stamps and engines.json ---------------------------------------------------------------------------------
def test_matching_engines_are_accepted(bundle: Path) -> None:
    add_engines(bundle)
    paths = check_engines(bundle, Manifest.load(bundle), MACHINE)
    assert paths == {g: bundle / ENGINES_DIR / engine_file(g) for g in GRAPHS}
    record = json.loads((bundle / ENGINES_DIR / ENGINES_FILE).read_text())["engines"]["denoise"]
    files = Manifest.load(bundle).files
    assert record["onnx"] == {n: files[n]["sha256"] for n in ("denoise.onnx", "denoise.onnx.data")}


@pytest.mark.parametrize("key, value, expected", [
    ("gpu", "Thor", "built for TensorRT 10.3.0.30 on Orin .*this machine has TensorRT 10.3.0.30 on Thor"),
    ("compute_capability", "8.6", r"\(compute capability 8.7\); this machine has .*\(compute capability 8.6\)"),
    ("tensorrt", "10.13.3.9", "built for TensorRT 10.3.0.30 .*this machine has TensorRT 10.13.3.9"),
])
def test_an_engine_from_another_machine_is_refused(bundle: Path, key: str, value: str, expected: str) -> None:
    add_engines(bundle)
    with pytest.raises(BackendError, match=expected) as e:
        check_engines(bundle, Manifest.load(bundle), {**MACHINE, key: value})
    assert f"`xvla-edge build {bundle} --force`" in str(e.value)


def test_engines_of_a_re_exported_bundle_are_refused(bundle: Path) -> None:
    add_engines(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["encoder.onnx.data"]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendError, match="built from another encoder.onnx .*re-exported.*xvla-edge build"):
        check_engines(bundle, Manifest.load(bundle), MACHINE)


def test_missing_engines_say_how_to_build_them(bundle: Path) -> None:
    with pytest.raises(BackendError, match=rf"no TensorRT engines; .*`xvla-edge build {bundle}`"):
        check_engines(bundle, Manifest.load(bundle), MACHINE)
    add_engines(bundle)
    (bundle / ENGINES_DIR / "denoise.engine").unlink()
    with pytest.raises(BackendError, match="denoise.engine: listed in engines.json but missing"):
        check_engines(bundle, Manifest.load(bundle), MACHINE)


def test_a_truncated_engine_is_refused(bundle: Path) -> None:
    add_engines(bundle)
    (bundle / ENGINES_DIR / "encoder.engine").write_bytes(b"plan")
    with pytest.raises(BackendError, match="4 bytes, engines.json records 15 .*--force"):
        check_engines(bundle, Manifest.load(bundle), MACHINE)


@pytest.mark.parametrize("content", ["{not json", '{"schema_version": 2, "engines": {}}',
                                     '{"schema_version": 1, "engines": {"encoder": {"file": "x"}}}', "[]"])
def test_an_unreadable_engines_json_asks_for_a_rebuild(bundle: Path, content: str) -> None:
    add_engines(bundle)
    (bundle / ENGINES_DIR / ENGINES_FILE).write_text(content)
    with pytest.raises(BackendError, match="engines.json: unreadable .*--force"):
        check_engines(bundle, Manifest.load(bundle), MACHINE)


def test_tensorrt_available_checks_engines_and_stamp(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("tensorrt") is None:
        assert not tensorrt_available(bundle)
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "tensorrt" else real(n, *a))
    monkeypatch.setattr(trt_api, "machine_stamp", lambda: dict(MACHINE))
    assert not tensorrt_available(bundle)  # no engines directory
    add_engines(bundle)
    assert tensorrt_available(bundle)
    monkeypatch.setattr(trt_api, "machine_stamp", lambda: {**MACHINE, "gpu": "Thor"})
    with pytest.warns(UserWarning, match="not using the TensorRT engines .*built for .* on Orin"):
        assert not tensorrt_available(bundle)


# -- xvla-edge build ------------------------------------------------------------------------------------------
def test_build_without_tensorrt_says_to_run_on_the_target(bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on this machine
    assert main(["build", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "needs TensorRT" in err and "built and run on the target" in err and "Jetson" in err
    assert sorted(p.name for p in bundle.iterdir() if p.is_dir()) == []  # nothing left behind


def test_build_refuses_an_int8_bundle_whose_qdq_placement_was_not_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, precision="int8")
    assert main(["build", str(bundle)]) == 2
    assert ("Q/DQ graphs were not checked against TensorRT's placement rules (manifest quantization.qdq_placement "
            "= None, expected 'tensorrt'); quantize its fp32 bundle again") in capsys.readouterr().err
    for i, hostile in enumerate((["tensorrt"], "tensorrt", {"qdq_placement": ["tensorrt"]})):  # a file from outside
        (tmp_path / f"hostile{i}").mkdir()
        other = make_bundle(tmp_path / f"hostile{i}", precision="int8", quantization=hostile)
        assert main(["build", str(other)]) == 2
        assert "quantization.qdq_placement = None" in capsys.readouterr().err
        assert main(["info", str(other)]) == 0
        assert "Q/DQ placement not checked for TensorRT" in capsys.readouterr().out


def test_build_makes_strongly_typed_engines_of_a_checked_int8_bundle(tmp_path: Path, fake_builder: SimpleNamespace,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path, precision="int8", quantization={"format": "QDQ", "qdq_placement": "tensorrt"})
    assert main(["build", str(bundle)]) == 0
    assert [b["onnx"] for b in fake_builder.builds] == ["encoder.onnx", "denoise.onnx"]
    assert "building encoder.engine from encoder.onnx (int8 Q/DQ: explicit quantization, strongly typed)" in \
        capsys.readouterr().out
    assert check_engines(bundle, Manifest.load(bundle), MACHINE)


@pytest.fixture
def fake_builder(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Replace TensorRT's build with one that writes a stand-in plan and grows the timing cache."""
    state = SimpleNamespace(builds=[], fail_denoise=False, raise_raw=False)

    def build_engine(onnx_path: Path, profiles: list[Mapping[str, tuple[int, ...]]], out: Path, *,
                     timing_cache: Path, workspace_bytes: int | None = None) -> None:
        assert len(profiles) >= 1
        state.builds.append({"onnx": onnx_path.name, "shapes": dict(profiles[0]), "profiles": [dict(p) for p in profiles],
                             "workspace": workspace_bytes,
                             "cache_before": timing_cache.read_text() if timing_cache.is_file() else None})
        if onnx_path.name == "denoise.onnx" and state.fail_denoise:
            raise trt_api.TensorRTError(f"{onnx_path}: TensorRT could not build an engine")
        if onnx_path.name == "denoise.onnx" and state.raise_raw:  # what TensorRT's bindings raise themselves
            raise RuntimeError("[TRT] [E] 2: [virtualMemoryBuffer.cpp::resizePhysical::140] out of memory")
        out.write_bytes(b"plan from " + onnx_path.read_bytes())
        with open(timing_cache, "a") as f:
            f.write(f"{onnx_path.name};")

    monkeypatch.setattr(trt_api, "build_engine", build_engine)
    monkeypatch.setattr(trt_api, "machine_stamp", lambda: dict(MACHINE))
    return state


def test_build_writes_engines_and_their_stamps(bundle: Path, fake_builder: SimpleNamespace,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    manifest_before = (bundle / "manifest.json").read_bytes()
    assert main(["build", str(bundle), "--workspace-gb", "1.5"]) == 0
    builds = fake_builder.builds
    assert [b["onnx"] for b in builds] == ["encoder.onnx", "denoise.onnx"]
    assert builds[0]["shapes"] == {"pixel_values": (1, V, 3, S, S), "image_mask": (1, V), "input_ids": (1, L)}
    assert builds[0]["workspace"] == int(1.5 * 2**30)
    assert builds[1]["cache_before"] == "encoder.onnx;"  # one timing cache across both builds
    engines = bundle / ENGINES_DIR
    assert sorted(p.name for p in engines.iterdir()) == ["denoise.engine", "encoder.engine", ENGINES_FILE,
                                                        TIMING_CACHE]
    assert check_engines(bundle, Manifest.load(bundle), MACHINE)  # stamps match this machine and bundle
    assert (bundle / "manifest.json").read_bytes() == manifest_before
    capsys.readouterr()
    assert main(["info", str(bundle)]) == 0
    assert ("engines:   TensorRT 10.3.0.30 for Orin (compute capability 8.7); CUDA graphs are captured at run time "
            "— a failed capture shows as xvla_backend_graph_fallback 1") in capsys.readouterr().out
    Manifest.load(bundle).verify_files(bundle)  # the bundle's checksums still hold
    assert main(["build", str(bundle), "--force"]) == 0
    out = capsys.readouterr().out
    assert "building encoder.engine from encoder.onnx (fp16, strongly typed)" in out and "Orin" in out
    assert [p.name for p in bundle.iterdir() if p.name.startswith(".")] == []


def test_build_needs_force_to_replace_engines_and_keeps_the_timing_cache(
        bundle: Path, fake_builder: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(bundle)]) == 0
    assert main(["build", str(bundle)]) == 2
    assert "engines already exists; pass --force" in capsys.readouterr().err
    assert main(["build", str(bundle), "--force"]) == 0
    assert fake_builder.builds[-2]["cache_before"] == "encoder.onnx;denoise.onnx;"  # the previous build's cache
    assert (bundle / ENGINES_DIR / TIMING_CACHE).read_text().count("encoder.onnx;") == 2


def test_a_failed_build_leaves_no_half_engines(bundle: Path, fake_builder: SimpleNamespace,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fake_builder.fail_denoise = True
    assert main(["build", str(bundle)]) == 1
    assert "build failed: " in capsys.readouterr().err
    assert sorted(p.name for p in bundle.iterdir() if p.is_dir()) == []
    fake_builder.fail_denoise = False
    assert main(["build", str(bundle)]) == 0
    before = {p.name: p.read_bytes() for p in (bundle / ENGINES_DIR).iterdir()}
    fake_builder.fail_denoise = True
    assert main(["build", str(bundle), "--force"]) == 1
    assert {p.name: p.read_bytes() for p in (bundle / ENGINES_DIR).iterdir()} == before  # old engines intact
    assert [p.name for p in bundle.iterdir() if p.name.startswith(".")] == []


def test_an_error_of_tensorrt_itself_is_named_not_a_traceback(bundle: Path, fake_builder: SimpleNamespace,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(bundle)]) == 0
    before = {p.name: p.read_bytes() for p in (bundle / ENGINES_DIR).iterdir()}
    fake_builder.raise_raw = True
    assert main(["build", str(bundle), "--force"]) == 1
    err = capsys.readouterr().err
    assert ("build failed: building denoise.engine from denoise.onnx on Orin (compute capability 8.7, TensorRT "
            "10.3.0.30) failed: RuntimeError: [TRT] [E] 2: [virtualMemoryBuffer.cpp::resizePhysical::140] out of "
            "memory; the bundle's previous engines, if any, are untouched") in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in (bundle / ENGINES_DIR).iterdir()} == before


def test_build_verifies_the_bundle_first(bundle: Path, fake_builder: SimpleNamespace,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "denoise.onnx.data").write_bytes(b"stand-in for denoise.onnx.dat!")
    assert main(["build", str(bundle)]) == 2
    assert "denoise.onnx.data: sha256" in capsys.readouterr().err
    assert fake_builder.builds == []  # nothing built


# -- memory plan ---------------------------------------------------------------------------------------------
def test_step_bindings_ping_pong_and_own_t_slot() -> None:
    plan = step_bindings(3)
    assert [(b.prev, b.out) for b in plan] == [(0, 1), (1, 0), (0, 1)]
    assert [b.t_offset for b in plan] == [0, SLOT_BYTES, 2 * SLOT_BYTES]
    assert all(b.t_offset % 256 == 0 for b in step_bindings(10))


def test_t_schedule_matches_the_sampler() -> None:
    slots = t_schedule(4, np.float32)
    assert slots.nbytes == 4 * SLOT_BYTES
    flat = slots.reshape(-1)
    np.testing.assert_array_equal(flat[[k * SLOT_BYTES // 4 for k in range(4)]],
                                  np.array([i / 4 for i in range(4, 0, -1)], np.float32))
    assert np.count_nonzero(flat) == 4


def test_io_mismatches_name_each_difference(bundle: Path) -> None:
    spec = Manifest.load(bundle).denoise
    info = {s.name: trt_api.TensorInfo(s.name, s.shape, np.dtype(s.dtype), s in spec.inputs)
            for s in (*spec.inputs, *spec.outputs)}
    inputs = [s.name for s in spec.inputs]
    assert io_mismatches("denoise", (*spec.inputs, *spec.outputs), inputs, info) == []
    info["t"] = trt_api.TensorInfo("t", (1,), np.dtype(np.float16), True)
    info["x0"] = trt_api.TensorInfo("x0", (1, T, A), np.dtype(np.float32), True)
    del info["action"]
    info["extra"] = trt_api.TensorInfo("extra", (1,), np.dtype(np.float32), False)
    assert io_mismatches("denoise", (*spec.inputs, *spec.outputs), inputs, info) == [
        "denoise: the manifest has 'action', the engine does not",
        "denoise: the engine has 'extra', the manifest does not",
        "denoise: 't' is float16[1] in the engine, float32[1] in the manifest",
        "denoise: 'x0' is an input of the engine",
    ]


# -- the backend over a fake runtime and fake engines --------------------------------------------------------
def encoder_fn(px: np.ndarray, mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.full((1, C, D), px.mean() + mask.sum() + 0.01 * ids.sum(), np.float32)


def denoise_fn(context: np.ndarray, x1: np.ndarray, prev: np.ndarray, proprio: np.ndarray,
               t: np.ndarray, domain_id: np.ndarray | None = None, prefix: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One row's step; a server bundle's ``domain_id`` [1] shifts it by the domain; a ``prefix`` [1, T, A] is mixed
    in with its ``weights`` [1, T] before the output transform, as the exported graph does."""
    shift = 0.0 if domain_id is None else 0.25 * float(domain_id[0])
    x0 = (0.5 * prev + t[0] * x1 + context.mean() + proprio.mean() + shift).astype(np.float32)
    if prefix is not None:
        x0 = (weights[..., None] * prefix + (1 - weights[..., None]) * x0).astype(np.float32)
    return x0, (2 * x0 + 1).astype(np.float32)


def reference(px: np.ndarray, mask: np.ndarray, ids: np.ndarray, x1: np.ndarray, proprio: np.ndarray,
              steps: int, domain_id: int | None = None, prefix: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> np.ndarray:
    """The sampler as the ONNX Runtime backend runs it."""
    context = encoder_fn(px, mask, ids)
    prev = np.zeros_like(x1)
    domain = None if domain_id is None else np.array([domain_id])
    for i in range(steps, 0, -1):
        prev, action = denoise_fn(context, x1, prev, proprio, np.array([i / steps], np.float32), domain, prefix,
                                  weights)
    return action


@pytest.fixture
def fakes(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake CUDA runtime and engines that compute encoder_fn / denoise_fn on the fake device memory."""
    rt = FakeRuntime()
    monkeypatch.setattr(cuda_graph, "runtime", lambda: rt)
    monkeypatch.setattr(trt_api, "machine_stamp", lambda: dict(MACHINE))
    manifest = Manifest.load(bundle)
    executed: list[str] = []

    class FakeEngine:
        """Engines of the bundle's graphs, with the rules TensorRT's documentation gives for
        ``IExecutionContext``: tensors are bound per context; ``execute_async_v3`` uses the context's bindings;
        a CUDA graph captured from an enqueue replays the context's state, so a context whose enqueue was
        captured must not be rebound (the TensorRT developer guide's section on CUDA graphs: a graph captured
        from an enqueue is only valid for the bindings and shapes it was captured with). The fake replays the *current* bindings and refuses a rebinding after capture, so a
        design that rebinds between captured steps fails here as it would on the GPU."""

        def __init__(self, path: Path, profiles: list[Mapping[str, tuple[int, ...]]], contexts: int = 1,
                     stream: int = 0) -> None:
            self.graph = path.stem
            spec = getattr(manifest, self.graph)
            assert profiles == [{s.name: s.at(b) for s in spec.inputs} for b in manifest.batch_sizes]
            self.tensors = {s.name: trt_api.TensorInfo(s.name, s.at(1), np.dtype(s.dtype), s in spec.inputs)
                            for s in (*spec.inputs, *spec.outputs)}
            # context c runs profile c // contexts: the shapes of batch size batch_sizes[c // contexts]
            self.batch = [b for b in manifest.batch_sizes for _ in range(contexts)]
            self.addresses: list[dict[str, int]] = [{} for _ in self.batch]
            self.captured: set[int] = set()
            self.closed = False

        def set_address(self, name: str, ptr: int, context: int = 0) -> None:
            assert name in self.tensors and ptr % 256 == 0, (name, ptr)
            assert context not in self.captured or self.addresses[context].get(name) == ptr, (
                f"{self.graph}: context {context} rebound ({name}) after its enqueue was captured")
            self.addresses[context][name] = ptr

        def execute(self, stream: int, context: int = 0) -> None:
            executed.append(self.graph)
            bound = self.addresses[context]  # read at run (or replay) time, not frozen at enqueue
            assert set(bound) == set(self.tensors), f"unbound: {set(self.tensors) - set(bound)}"
            if stream in rt.capturing:
                self.captured.add(context)

            def run() -> None:
                batch = self.batch[context]
                x = {n: rt.read(bound[n], (batch, *i.shape[1:]) if n != "t" else i.shape, i.dtype)
                     for n, i in self.tensors.items() if i.is_input}
                row = [{n: (v if n == "t" else v[i:i + 1]) for n, v in x.items()} for i in range(batch)]  # each alone
                if self.graph == "encoder":
                    rt.write(bound["context"], np.concatenate([encoder_fn(r["pixel_values"], r["image_mask"],
                                                                          r["input_ids"]) for r in row]))
                else:
                    out = [denoise_fn(r["context"], r["x1"], r["prev"], r["proprio"], r["t"], r.get("domain_id"),
                                      r.get("prefix"), r.get("prefix_weights")) for r in row]
                    rt.write(bound["x0"], np.concatenate([o[0] for o in out]))
                    rt.write(bound["action"], np.concatenate([o[1] for o in out]))

            rt.enqueue(stream, run)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(trt_api, "Engine", FakeEngine)
    add_engines(bundle)
    return {"rt": rt, "manifest": manifest, "executed": executed}


def _inputs(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (rng.random((1, V, 3, S, S), np.float32), np.array([[True, False]]), rng.integers(0, 9, (1, L)),
            rng.standard_normal((1, T, A), np.float32), rng.standard_normal((1, A), np.float32))


def test_backend_replays_one_graph_per_denoise_context(bundle: Path, fakes: dict[str, Any]) -> None:
    rt, executed = fakes["rt"], fakes["executed"]
    backend = create_backend(fakes["manifest"], bundle, "tensorrt", "cuda")
    assert isinstance(backend, TensorRTBackend)
    for seed, steps in [(0, 3), (1, 3), (2, 5), (3, 1), (4, 4)]:
        px, mask, ids, x1, proprio = _inputs(seed)
        backend.encode(px, mask, ids)
        executed.clear()
        actions = backend.denoise(x1, proprio, steps)
        np.testing.assert_allclose(actions, reference(px, mask, ids, x1, proprio, steps), rtol=1e-6)
        # the first chunk captures each context once (an eager warm-up, then the enqueue under capture);
        # every later step, whatever the step count, is a graph launch: the host enqueues no TensorRT work
        assert executed == (["denoise"] * 4 if seed == 0 else [])
    assert rt.calls.count("cudaStreamBeginCapture") == 2
    assert rt.calls.count("cudaGraphLaunch") == 3 + 3 + 5 + 1 + 4
    assert backend.graph_fallback is None
    assert rt.pageable_copies == 0  # every copy to or from the host is from pinned memory
    backend.close()
    assert rt.memory == {} and rt.execs == {} and rt.streams == set() and rt.pinned == {}


@pytest.mark.parametrize("bundle", [(1, 2, 4)], indirect=True)
def test_a_batched_bundle_runs_each_size_on_its_own_profile_buffers_and_graphs(bundle: Path,
                                                                              fakes: dict[str, Any]) -> None:
    rt = fakes["rt"]
    backend = TensorRTBackend(fakes["manifest"], bundle)
    for batch, seed, steps in [(2, 0, 3), (1, 1, 3), (4, 2, 2), (2, 3, 4)]:
        rows = [_inputs(10 * seed + i) for i in range(batch)]
        px, mask, ids, x1, proprio = (np.concatenate(parts) for parts in zip(*rows))
        backend.encode(px, mask, ids)
        actions = backend.denoise(x1, proprio, steps)
        assert actions.shape == (batch, T, A)
        for i, row in enumerate(rows):
            np.testing.assert_allclose(actions[i:i + 1], reference(*row, steps), rtol=1e-6)
    assert set(backend.graphs.keys) == set(range(6))  # two denoise contexts (graphs) per batch size
    assert backend.graph_fallback is None and rt.pageable_copies == 0
    with pytest.raises(BackendError, match=r"batch of 3: this bundle runs batches of \[1, 2, 4\]"):
        backend.encode(*(np.concatenate([a] * 3) for a in _inputs(0)[:3]))
    with pytest.raises(BackendError, match=r"denoise\(\) of a batch of 1 after encode\(\) of 2"):
        backend.encode(*(np.concatenate([a] * 2) for a in _inputs(0)[:3]))
        backend.denoise(*_inputs(0)[3:], 2)
    backend.close()
    assert rt.memory == {} and rt.execs == {} and rt.streams == set() and rt.pinned == {}


@pytest.mark.parametrize("bundle", [((1, 2, 4), (0, 6, 17))], indirect=True)
def test_a_server_bundle_gives_each_row_its_domain_on_every_captured_step(bundle: Path, fakes: dict[str, Any]) -> None:
    """The domain ids are copied in per chunk (pinned) into the buffer every captured step reads: a batch may mix
    domains, and the next chunk's domains reach graphs captured with the first's."""
    rt = fakes["rt"]
    backend = create_backend(fakes["manifest"], bundle, "tensorrt", "cuda")
    for batch, seed, domains in [(2, 0, [17, 0]), (2, 1, [0, 6]), (4, 2, [6, 6, 17, 0]), (1, 3, [17])]:
        rows = [_inputs(10 * seed + i) for i in range(batch)]
        px, mask, ids, x1, proprio = (np.concatenate(parts) for parts in zip(*rows))
        backend.encode(px, mask, ids)
        actions = backend.denoise(x1, proprio, 3, np.array(domains, np.int64))
        for i, (row, domain) in enumerate(zip(rows, domains)):
            np.testing.assert_allclose(actions[i:i + 1], reference(*row, 3, domain), rtol=1e-6)
    assert backend.graph_fallback is None and rt.pageable_copies == 0
    with pytest.raises(BackendError, match="needs domain_ids, one per row"):
        backend.denoise(x1[:1], proprio[:1], 3)
    with pytest.raises(BackendError, match=r"domain_ids of shape \(2,\) for a batch of 1"):
        backend.denoise(x1[:1], proprio[:1], 3, np.array([0, 6], np.int64))
    backend.close()
    assert rt.memory == {} and rt.execs == {} and rt.streams == set() and rt.pinned == {}


@pytest.mark.parametrize("bundle", [{"batch_sizes": (1, 2), "prefix": True}], indirect=True)
def test_a_prefix_reaches_every_captured_step_from_its_bound_buffers(bundle: Path, fakes: dict[str, Any]) -> None:
    """Real-time chunking's prefix and weights are copied in per chunk (pinned) into the buffers both denoise
    contexts were bound to at load: the graphs captured with the first chunk read the next chunk's prefix; a
    chunk without one reads zeros (the device buffers start undefined: NaN in the fake) and is the plain chunk."""
    rt = fakes["rt"]
    backend = create_backend(fakes["manifest"], bundle, "tensorrt", "cuda")
    denoise = backend.engines["denoise"]
    for plan in backend.plans.values():
        for k in (0, 1):
            bound = denoise.addresses[2 * plan.index + k]
            assert bound["prefix"] == plan.buffers["prefix"].ptr
            assert bound["prefix_weights"] == plan.buffers["prefix_weights"].ptr
    rng = np.random.default_rng(7)
    for batch, seed, mixed in [(1, 0, False), (1, 1, True), (2, 2, True), (1, 3, False), (2, 4, False),
                               (2, 5, True), (1, 6, True)]:
        rows = [_inputs(10 * seed + i) for i in range(batch)]
        px, mask, ids, x1, proprio = (np.concatenate(parts) for parts in zip(*rows))
        prefix = rng.standard_normal((batch, T, A)).astype(np.float32) if mixed else None
        weights = np.tile(np.linspace(1, 0, T, dtype=np.float32), (batch, 1)) if mixed else None
        backend.encode(px, mask, ids)
        actions = backend.denoise(x1, proprio, 3, prefix=prefix, weights=weights)
        for i, row in enumerate(rows):
            one = {} if prefix is None else {"prefix": prefix[i:i + 1], "weights": weights[i:i + 1]}
            np.testing.assert_allclose(actions[i:i + 1], reference(*row, 3, **one), rtol=1e-6)
        if mixed:
            np.testing.assert_allclose(actions[:, 0], 2 * prefix[:, 0] + 1, rtol=1e-6)  # weight 1: the prefix
    assert backend.graph_fallback is None and rt.pageable_copies == 0
    assert rt.calls.count("cudaStreamBeginCapture") == 4  # two contexts per batch size, captured once
    with pytest.raises(BackendError, match=r"give prefix and weights together"):
        backend.denoise(x1, proprio, 3, prefix=prefix)
    assert x1.shape[0] == 1  # the last chunk's batch
    with pytest.raises(BackendError, match=r"prefix must be float32 \[1, 6, 4\]; got float64 \[1, 6, 4\]"):
        backend.denoise(x1, proprio, 3, prefix=np.zeros((1, T, A)), weights=np.zeros((1, T), np.float32))
    with pytest.raises(BackendError, match=r"weights must be float32 \[1, 6\]; got float32 \[2, 6\]"):
        backend.denoise(x1, proprio, 3, prefix=np.zeros((1, T, A), np.float32), weights=np.zeros((2, T), np.float32))
    backend.close()
    assert rt.memory == {} and rt.execs == {} and rt.streams == set() and rt.pinned == {}


def test_a_bundle_without_the_prefix_inputs_refuses_one_and_binds_none(bundle: Path, fakes: dict[str, Any]) -> None:
    backend = TensorRTBackend(fakes["manifest"], bundle)
    assert "prefix" not in backend.plan.buffers and "prefix" not in backend.plan.host
    px, mask, ids, x1, proprio = _inputs(1)
    backend.encode(px, mask, ids)
    with pytest.raises(BackendError, match="takes no prefix .* give none"):
        backend.denoise(x1, proprio, 2, prefix=np.zeros((1, T, A), np.float32), weights=np.ones((1, T), np.float32))
    np.testing.assert_allclose(backend.denoise(x1, proprio, 2), reference(px, mask, ids, x1, proprio, 2), rtol=1e-6)
    backend.close()


@pytest.mark.parametrize("bundle", [{"prefix": True}], indirect=True)
def test_an_engine_built_without_the_prefix_inputs_is_refused(bundle: Path, fakes: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines built from a graph before real-time chunking under a manifest that has it: named, not run."""
    engine_cls = trt_api.Engine

    def older_engine(path: Path, shapes: list, contexts: int = 1, stream: int = 0) -> Any:
        engine = engine_cls(path, shapes, contexts, stream)
        if engine.graph == "denoise":
            for name in ("prefix", "prefix_weights"):
                del engine.tensors[name]
        return engine

    monkeypatch.setattr(trt_api, "Engine", older_engine)
    with pytest.raises(BackendError, match=r"denoise: the manifest has 'prefix', the engine does not\n  denoise: the "
                                           r"manifest has 'prefix_weights', the engine does not"):
        TensorRTBackend(fakes["manifest"], bundle)
    assert fakes["rt"].memory == {} and fakes["rt"].streams == set()


def test_a_build_starts_from_a_given_timing_cache_when_the_bundle_has_none(bundle: Path, tmp_path: Path,
                                                                          fake_builder: SimpleNamespace) -> None:
    from runtime.backends.tensorrt import build

    (tmp_path / "active.cache").write_text("timings of the active bundle;")
    build.build_engines(bundle, Manifest.load(bundle), timing_cache=tmp_path / "active.cache")
    assert fake_builder.builds[0]["cache_before"] == "timings of the active bundle;"
    assert (bundle / ENGINES_DIR / TIMING_CACHE).read_text().startswith("timings of the active bundle;")


@pytest.mark.parametrize("bundle", [(1, 2, 4)], indirect=True)
def test_build_gives_a_batched_bundle_one_profile_per_batch_size(bundle: Path, fake_builder: SimpleNamespace,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", str(bundle)]) == 0
    sizes = (1, 2, 4)
    assert [b["profiles"] for b in fake_builder.builds] == [
        [{"pixel_values": (n, V, 3, S, S), "image_mask": (n, V), "input_ids": (n, L)} for n in sizes],
        [{"context": (n, C, D), "x1": (n, T, A), "prev": (n, T, A), "proprio": (n, A), "t": (1,)} for n in sizes]]
    assert "one optimisation profile per batch size [1, 2, 4]" in capsys.readouterr().out


def test_each_captured_graph_holds_one_enqueue_and_nothing_from_the_host(bundle: Path, fakes: dict[str, Any]) -> None:
    """A graph is one TensorRT enqueue with fixed bindings; the fake runtime fails host copies in a capture."""
    rt = fakes["rt"]
    backend = TensorRTBackend(fakes["manifest"], bundle)
    px, mask, ids, x1, proprio = _inputs(0)
    backend.encode(px, mask, ids)
    backend.denoise(x1, proprio, 4)
    assert [len(ops) for ops in rt.execs.values()] == [1, 1]
    backend.close()


def test_the_fake_engine_catches_rebinding_a_captured_context(bundle: Path, fakes: dict[str, Any]) -> None:
    """What the earlier design did (one context rebound per step inside one capture) fails on the fake."""
    backend = TensorRTBackend(fakes["manifest"], bundle)
    px, mask, ids, x1, proprio = _inputs(0)
    backend.encode(px, mask, ids)
    backend.denoise(x1, proprio, 2)
    with pytest.raises(AssertionError, match="context 0 rebound \\(prev\\) after its enqueue was captured"):
        backend.engines["denoise"].set_address("prev", backend.plan.x0[1].ptr, 0)
    backend.close()


@pytest.mark.parametrize("failing", ["cudaStreamEndCapture", "cudaGraphInstantiate"])
def test_a_failed_capture_falls_back_to_plain_enqueues(bundle: Path, fakes: dict[str, Any], failing: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rt, executed = fakes["rt"], fakes["executed"]
    rt.fail[failing] = Err.cudaErrorStreamCaptureInvalidated
    backend = TensorRTBackend(fakes["manifest"], bundle)
    for seed, steps in [(0, 3), (1, 5)]:
        px, mask, ids, x1, proprio = _inputs(seed)
        backend.encode(px, mask, ids)
        executed.clear()
        actions = backend.denoise(x1, proprio, steps)
        np.testing.assert_allclose(actions, reference(px, mask, ids, x1, proprio, steps), rtol=1e-6)
        if seed == 1:
            assert executed == ["denoise"] * steps  # plain enqueues, no more capture attempts
    assert "cudaErrorStreamCaptureInvalidated" in backend.graph_fallback
    assert rt.calls.count("cudaStreamBeginCapture") == 1 and "cudaGetLastError" in rt.calls
    assert sum("running without CUDA graphs" in r.getMessage() for r in caplog.records) == 1  # logged once
    backend.close()


def test_graphs_can_be_switched_off(bundle: Path, fakes: dict[str, Any]) -> None:
    rt = fakes["rt"]
    backend = create_backend(fakes["manifest"], bundle, "tensorrt", "cuda", cuda_graph=False)
    px, mask, ids, x1, proprio = _inputs(3)
    backend.encode(px, mask, ids)
    np.testing.assert_allclose(backend.denoise(x1, proprio, 4), reference(px, mask, ids, x1, proprio, 4), rtol=1e-6)
    assert "cudaStreamBeginCapture" not in rt.calls and backend.graph_fallback == "disabled (cuda_graph=False)"
    backend.close()


def test_backend_refuses_a_cpu_device_and_engines_that_do_not_match(bundle: Path, fakes: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackendError, match="runs on CUDA only; got device='cpu'"):
        create_backend(fakes["manifest"], bundle, "tensorrt", "cpu")
    monkeypatch.setattr(trt_api, "machine_stamp", lambda: {**MACHINE, "tensorrt": "10.13.3.9"})
    with pytest.raises(BackendError, match="this machine has TensorRT 10.13.3.9"):
        TensorRTBackend(fakes["manifest"], bundle)
    monkeypatch.setattr(trt_api, "machine_stamp", lambda: dict(MACHINE))
    engine_cls = trt_api.Engine

    def wrong_engine(path: Path, shapes: list, contexts: int = 1, stream: int = 0) -> Any:
        engine = engine_cls(path, shapes, contexts, stream)
        if engine.graph == "denoise":
            engine.tensors["t"] = trt_api.TensorInfo("t", (2,), np.dtype(np.float32), True)
        return engine

    monkeypatch.setattr(trt_api, "Engine", wrong_engine)
    with pytest.raises(BackendError, match=r"'t' is float32\[2\] in the engine, float32\[1\] in the manifest"):
        TensorRTBackend(fakes["manifest"], bundle)

    def failing_bind(path: Path, shapes: list, contexts: int = 1, stream: int = 0) -> Any:
        engine = engine_cls(path, shapes, contexts, stream)
        engine.set_address = lambda name, ptr, context=0: (_ for _ in ()).throw(trt_api.TensorRTError(f"bind {name}"))
        return engine

    monkeypatch.setattr(trt_api, "Engine", failing_bind)  # fails after every buffer is allocated
    with pytest.raises(BackendError, match="bind pixel_values"):
        TensorRTBackend(fakes["manifest"], bundle)
    assert fakes["rt"].memory == {} and fakes["rt"].streams == set() and fakes["rt"].pinned == {}  # all freed
    assert fakes["rt"].calls.count("cudaMalloc") > 0


def test_denoise_before_encode_is_an_error(bundle: Path, fakes: dict[str, Any]) -> None:
    backend = TensorRTBackend(fakes["manifest"], bundle)
    with pytest.raises(BackendError, match="before encode"):
        backend.denoise(*_inputs(0)[3:], 2)
    backend.close()


def test_auto_picks_tensorrt_when_its_engines_fit(bundle: Path, fakes: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "tensorrt" else real(n, *a))
    backend = create_backend(fakes["manifest"], bundle, "auto", "cuda")
    assert isinstance(backend, TensorRTBackend)
    backend.close()
    assert trt_backend.engines_problem(bundle) is None


# -- trt_api's control flow over a fake ``tensorrt`` module (what it asks of TensorRT, not what TensorRT does) --
@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    trt = FakeTensorRT(inputs={"x": (1, -1, 4), "mask": (1, 2)},
                       tensors={"x": ((1, -1, 4), "float32", True), "y": ((1, 3), "float16", False)})
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def test_build_engine_asks_for_a_strongly_typed_batch_1_engine(tmp_path: Path, fake_trt: FakeTensorRT) -> None:
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")
    cache, lines = tmp_path / TIMING_CACHE, []
    trt_api.build_engine(onnx, [{"x": (1, 3, 4), "mask": (1, 2)}], tmp_path / "g.engine", timing_cache=cache,
                         workspace_bytes=2**30, log=lines.append)
    assert (tmp_path / "g.engine").read_bytes() == b"serialized plan"
    assert fake_trt.log[0] == ("flags", 1 << 1)  # STRONGLY_TYPED (kSTRONGLY_TYPED = 1), nothing else
    assert ("pool", "WORKSPACE", 2**30) in fake_trt.log
    assert ("profile", {"x": ((1, 3, 4),) * 3}) in fake_trt.log  # only the dynamic input, pinned at min=opt=max
    assert ("cache", b"", False) in fake_trt.log and cache.read_bytes() == b"+tuned;"
    assert lines[0] == "  Building engine (2 steps)" and lines[1] == "    Tactic selection (7 steps)"
    assert lines[2].startswith("  Building engine done in ")
    trt_api.build_engine(onnx, [{"x": (1, 3, 4), "mask": (1, 2)}], tmp_path / "g.engine", timing_cache=cache,
                         log=lines.append)
    assert ("cache", b"+tuned;", False) in fake_trt.log and cache.read_bytes() == b"+tuned;+tuned;"


def test_build_engine_starts_a_new_cache_when_the_old_one_does_not_fit(tmp_path: Path,
                                                                       fake_trt: FakeTensorRT) -> None:
    (tmp_path / "g.onnx").write_bytes(b"graph")
    cache, lines = tmp_path / TIMING_CACHE, []
    cache.write_bytes(b"from another GPU")
    trt_api.build_engine(tmp_path / "g.onnx", [{"x": (1, 3, 4), "mask": (1, 2)}], tmp_path / "g.engine",
                         timing_cache=cache, log=lines.append)
    assert "is from another GPU or TensorRT version; starting a new one" in lines[0]
    assert cache.read_bytes() == b"+tuned;"


def test_build_engine_reports_each_parser_error_and_shape_mismatches(tmp_path: Path, fake_trt: FakeTensorRT) -> None:
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"bad")
    with pytest.raises(trt_api.TensorRTError, match=r"parser failed:\n  node 0 \(/blocks.0/Mul, Mul\): unsupported "
                                                    r"data type\n  node 1 \(/blocks.1/Mul"):
        trt_api.build_engine(onnx, [{}], tmp_path / "g.engine", timing_cache=tmp_path / TIMING_CACHE)
    onnx.write_bytes(b"graph")
    for shapes, message in [({"x": (1, 3, 5), "mask": (1, 2)}, r"input 'x' has shape \(1, -1, 4\); the manifest "
                                                                r"says \(1, 3, 5\)"),
                            ({"x": (1, 3, 4)}, r"input 'mask' is not in the manifest"),
                            ({"x": (1, 3, 4), "mask": (1, 2), "z": (1,)}, r"lists inputs \['z'\] the graph lacks")]:
        with pytest.raises(trt_api.TensorRTError, match=message):
            trt_api.build_engine(onnx, [shapes], tmp_path / "g.engine", timing_cache=tmp_path / TIMING_CACHE)
    fake_trt.fail_build = True
    with pytest.raises(trt_api.TensorRTError, match="g.onnx: TensorRT could not build an engine"):
        trt_api.build_engine(onnx, [{"x": (1, 3, 4), "mask": (1, 2)}], tmp_path / "g.engine",
                             timing_cache=tmp_path / TIMING_CACHE, log=lambda line: None)
    assert not (tmp_path / "g.engine").exists()


def test_engine_binds_by_name_and_names_the_tensor_on_failure(tmp_path: Path, fake_trt: FakeTensorRT) -> None:
    path = tmp_path / "g.engine"
    path.write_bytes(b"serialized plan")
    engine = trt_api.Engine(path, [{"x": (1, 3, 4)}])
    assert engine.tensors == {"x": trt_api.TensorInfo("x", (1, 3, 4), np.dtype(np.float32), True),
                              "y": trt_api.TensorInfo("y", (1, 3), np.dtype(np.float16), False)}
    engine.set_address("x", 0x1000)
    engine.execute(0x2000)
    first = fake_trt.log[-1][1]
    assert fake_trt.log[-2:] == [("address", first, "x", 0x1000), ("execute", first, 0x2000)]
    two = trt_api.Engine(path, [{"x": (1, 3, 4)}], contexts=2)  # one engine, two independently bound contexts
    two.set_address("x", 0x3000, context=1)
    two.execute(0x2000, context=1)
    two.execute(0x2000, context=0)
    assert fake_trt.log[-3][0] == "address" and fake_trt.log[-3][1] == fake_trt.log[-2][1] != fake_trt.log[-1][1]
    with pytest.raises(trt_api.TensorRTError, match=r"set_tensor_address\('y', 0x0\) failed \(context 1\)"):
        two.set_address("y", 0, context=1)
    with pytest.raises(trt_api.TensorRTError, match=r"g.engine: set_tensor_address\('y', 0x0\) failed"):
        engine.set_address("y", 0)
    with pytest.raises(trt_api.TensorRTError, match="no I/O tensor 'z'"):
        engine.set_address("z", 0x1000)
    assert engine._contexts[0].set_tensor_address("z", 0x1000) is False  # the fake refuses it too, as TensorRT does
    with pytest.raises(trt_api.TensorRTError, match="execute_async_v3 failed"):
        engine.execute(0)
    with pytest.raises(trt_api.TensorRTError, match=r"cannot set the shape of input 'x' to None"):
        trt_api.Engine(path, [{}])
    with pytest.raises(trt_api.TensorRTError, match=r"cannot set the shape of input 'x' to \(1, 3, 5\)"):
        trt_api.Engine(path, [{"x": (1, 3, 5)}])  # the engine's last dimension is a static 4
    path.write_bytes(b"garbage")
    with pytest.raises(trt_api.TensorRTError, match="could not deserialize .*xvla-edge build BUNDLE --force"):
        trt_api.Engine(path, [{"x": (1, 3, 4)}])


def test_profiles_one_per_batch_size_selected_per_context(tmp_path: Path, fake_trt: FakeTensorRT) -> None:
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")
    sizes = [{"x": (1, 3, 4), "mask": (1, 2)}, {"x": (1, 5, 4), "mask": (1, 2)}]
    trt_api.build_engine(onnx, sizes, tmp_path / "g.engine", timing_cache=tmp_path / TIMING_CACHE,
                         log=lambda line: None)
    assert [e for e in fake_trt.log if e[0] == "profile"] == [("profile", {"x": ((1, 3, 4),) * 3}),
                                                              ("profile", {"x": ((1, 5, 4),) * 3})]
    static = SimpleNamespace(num_inputs=1, get_input=lambda i: SimpleNamespace(name="m", shape=(1, 2)))
    with pytest.raises(trt_api.TensorRTError, match="every input has a fixed shape, but the manifest lists 2"):
        trt_api._profiles(SimpleNamespace(), static, [{"m": (1, 2)}] * 2, onnx)
    path = tmp_path / "g.engine"
    path.write_bytes(b"serialized plan")
    with pytest.raises(trt_api.TensorRTError, match=r"has 1 optimisation profile\(s\), the manifest's batch sizes "
                                                    r"need 2; rebuild it"):
        trt_api.Engine(path, [{"x": (1, 3, 4)}, {"x": (1, 5, 4)}])
    fake_trt.profiles = 2
    fake_trt.log.clear()
    engine = trt_api.Engine(path, [{"x": (1, 3, 4)}, {"x": (1, 5, 4)}], contexts=2, stream=0x99)
    selected = [e for e in fake_trt.log if e[0] == "select profile"]
    assert [(e[2], e[3]) for e in selected] == [(1, 0x99), (1, 0x99)]  # contexts 2 and 3 run profile 1
    assert [c.shapes["x"] for c in engine._contexts] == [(1, 3, 4), (1, 3, 4), (1, 5, 4), (1, 5, 4)]
    assert engine.tensors["x"].shape == (1, 3, 4)  # described at the first profile (batch 1)


def test_machine_stamp(fake_trt: FakeTensorRT, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_graph, "current_device", lambda: cuda_graph.Device(0, "Orin", "8.7"))
    assert trt_api.machine_stamp() == MACHINE


# -- the real thing (TensorRT + GPU) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorrt", reason="needs TensorRT (`import tensorrt`): run on the Jetson or a GPU machine")
    if cuda_graph.device_count() == 0:
        pytest.skip("needs a CUDA device")
    pytest.importorskip("torch", reason="exporting the test bundle needs the [export] extra")
    from xvla import write_random_checkpoint

    work = tmp_path_factory.mktemp("trt")
    ckpt = write_random_checkpoint(work / "ckpt", "tiny", seed=5)
    assert main(["export", str(ckpt), "--domain-id", "0", "--precision", "fp16", "--views", "2",
                 "--out", str(work / "b16")]) == 0
    assert main(["build", str(work / "b16")]) == 0
    return work / "b16"


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_on_a_fp16_bundle(built_bundle: Path) -> None:
    """Same fp16 graphs, two runtimes: within the bundle's fp16 tolerance (mm, degrees, gripper flips)."""
    from calibration.metrics import ChunkErrors, Tolerance, accumulate
    from runtime.policy import Policy
    from runtime.types import Observation

    with Policy.load(built_bundle, backend="onnxruntime") as ort_policy, \
            Policy.load(built_bundle, backend="tensorrt", device="cuda") as trt_policy:
        tol = Tolerance(**trt_policy.manifest.raw["parity"]["tolerance"])
        errors = ChunkErrors()
        for seed, steps in [(0, 10), (1, 3), (2, 10)]:
            rng = np.random.default_rng(seed)
            obs = Observation(images=[rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)],
                              instruction="pick up the cup", proprio=rng.normal(0, 0.2, 20).astype(np.float32),
                              timestamp=0.0, noise=rng.standard_normal((30, 20)).astype(np.float32))
            accumulate(errors, ort_policy.act(obs, steps=steps).actions[None],
                       trt_policy.act(obs, steps=steps).actions[None], "ee6d")
        assert not errors.failures(tol), errors.summary()
        assert set(trt_policy.backend.graphs.keys) == {0, 1}  # one graph per denoise context


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_errors_name_the_tensor(built_bundle: Path) -> None:
    manifest = Manifest.load(built_bundle)
    engine = trt_api.Engine(built_bundle / ENGINES_DIR / "denoise.engine",
                            [{s.name: s.at(1) for s in manifest.denoise.inputs}])
    try:
        with pytest.raises(trt_api.TensorRTError, match="no I/O tensor 'nope'"):
            engine.set_address("nope", 0)
    finally:
        engine.close()


@pytest.mark.tensorrt
def test_parser_errors_are_reported_per_node(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs TensorRT (`import tensorrt`): run on the Jetson or a GPU machine")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(trt_api.TensorRTError, match="ONNX parser failed:\n  node "):
        trt_api.build_engine(bad, [{}], tmp_path / "bad.engine", timing_cache=tmp_path / TIMING_CACHE)
