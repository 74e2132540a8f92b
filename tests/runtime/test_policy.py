"""Policy over ONNX Runtime (and the torch reference backend) against the PyTorch model, on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model  # every test runs an exported bundle (tests/support/tiers.py)

torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

from calibration.metrics import ChunkErrors, Tolerance, accumulate
from runtime import policy as policy_module
from runtime.backends.base import BackendError
from runtime.manifest import BundleError
from runtime.policy import Policy
from runtime.types import CheckedObservation, Observation
from xvla import load_checkpoint, write_random_checkpoint
from xvla_edge.cli import main
from xvla.errors import InputError
from xvla.preprocessing import ImageProcessor, TextTokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("runtime")
    ckpt = write_random_checkpoint(work / "ckpt", "tiny", seed=21)
    for name, args in {"fp32": ["--views", "3"], "fp16": ["--views", "2", "--precision", "fp16"]}.items():
        assert main(["export", str(ckpt), "--domain-id", "6", "--out", str(work / name), *args]) == 0
    return work, ckpt, load_checkpoint(ckpt)


def obs(seed=0, views=3, shape=(33, 257, 3), missing=(), instruction="wipe the table with the sponge"):
    rng = np.random.default_rng(seed)
    images = [None if v in missing else rng.integers(0, 256, shape, dtype=np.uint8) for v in range(views)]
    return Observation(images=images, instruction=instruction, proprio=rng.normal(0, 0.2, 20).astype(np.float32),
                       timestamp=100.0, noise=rng.standard_normal((30, 20)).astype(np.float32))


def reference(ckpt, model, o: Observation, domain=6, steps=10) -> np.ndarray:
    pixels, mask = ImageProcessor.from_dir(ckpt)(o.images)
    ids = TextTokenizer(ckpt)(o.instruction)
    return model.generate_actions(torch.from_numpy(ids)[None], torch.from_numpy(pixels)[None],
                                  torch.from_numpy(mask)[None], torch.tensor([domain]),
                                  torch.from_numpy(o.proprio)[None], steps=steps,
                                  noise=torch.from_numpy(o.noise)[None])[0].numpy()


@pytest.mark.parametrize("case", [dict(), dict(missing=(1,)), dict(missing=(0, 2)), dict(shape=(480, 640, 3)),
                                  dict(shape=(64, 64, 3), seed=4)])
def test_onnxruntime_fp32_matches_the_model(setup, case) -> None:
    work, ckpt, model = setup
    o = obs(**case)
    with Policy.load(work / "fp32") as policy:
        chunk = policy.act(o)
    np.testing.assert_allclose(chunk.actions, reference(ckpt, model, o), atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 3])
def test_step_count_is_honoured(setup, steps) -> None:
    work, ckpt, model = setup
    o = obs(seed=2)
    with Policy.load(work / "fp32") as policy:
        np.testing.assert_allclose(policy.act(o, steps=steps).actions, reference(ckpt, model, o, steps=steps), atol=1e-5)


def test_onnxruntime_fp16_within_the_recorded_tolerance(setup) -> None:
    work, ckpt, model = setup
    policy = Policy.load(work / "fp16")
    tol = Tolerance(**policy.manifest.raw["parity"]["tolerance"])
    errors = ChunkErrors()
    for seed in range(3):
        o = obs(seed=seed, views=2)
        accumulate(errors, reference(ckpt, model, o)[None], policy.act(o).actions[None], "ee6d")
    assert not errors.failures(tol), errors.summary()
    assert errors.max_abs > 1e-6  # it really is fp16


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_device_resident_buffers_give_the_same_chunk(setup, steps) -> None:
    """The CUDA path's OrtValue buffers (update_inplace in, numpy() out), exercised with CPU OrtValues."""
    work, _, _ = setup
    o = obs(seed=11, missing=(1,))
    host = Policy.load(work / "fp32", backend="onnxruntime").act(o, steps=steps).actions
    device = Policy.load(work / "fp32", backend="onnxruntime", device_buffers=True)
    assert device.backend.on_device and device.backend.graph_fallback is None
    # the CUDA provider's graph ids: one per ping-pong binding, never 0 (ONNX Runtime reserves it)
    assert [o.get_run_config_entry("gpu_graph_id") for o in device.backend.plan.run_options] == ["1", "2"]
    np.testing.assert_array_equal(device.act(o, steps=steps).actions, host)
    again = obs(seed=12)  # new inputs reach the device buffers; the ping-pong restarts from zeros
    np.testing.assert_array_equal(device.act(again, steps=steps).actions,
                                  Policy.load(work / "fp32", backend="onnxruntime").act(again, steps=steps).actions)


def test_thread_pools_do_not_spin_unless_asked(setup) -> None:
    """Spinning pools of the two sessions steal each other's cores (the per-chunk overhead of issue 20)."""
    work, _, _ = setup
    key = "session.intra_op.allow_spinning"
    for options, expected in (({}, "0"), ({"spinning": True}, "1")):
        with Policy.load(work / "fp32", backend="onnxruntime", threads=2, **options) as policy:
            for session in (policy.backend.encoder, policy.backend.denoiser):
                assert session.get_session_options().get_session_config_entry(key) == expected


def test_torch_backend_matches_onnxruntime(setup) -> None:
    work, _, _ = setup
    o = obs(seed=7, missing=(2,))
    a = Policy.load(work / "fp32", backend="onnxruntime").act(o).actions
    b = Policy.load(work / "fp32", backend="torch").act(o).actions
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_chunk_timestamps_and_decoded_poses(setup) -> None:
    from scipy.spatial.transform import Rotation

    from xvla.rotations import rot6d_to_matrix

    work, _, _ = setup
    policy = Policy.load(work / "fp32")
    chunk = policy.act(obs())
    seconds = policy.manifest.action["chunk_seconds"]
    assert seconds == 1.0  # domain 6 (RoboTwin2): 30 actions over 1 s
    np.testing.assert_allclose(chunk.timestamps, 100.0 + np.arange(1, 31) / 30 * seconds)
    assert len(chunk.arms) == 2  # domain 6 is bimanual
    for arm, base in zip(chunk.arms, (0, 10)):
        np.testing.assert_array_equal(arm.position, chunk.actions[:, base : base + 3])
        np.testing.assert_allclose(arm.rotation, rot6d_to_matrix(chunk.actions[:, base + 3 : base + 9]), atol=1e-12)
        np.testing.assert_allclose(Rotation.from_quat(arm.quaternion).as_matrix(), arm.rotation, atol=1e-9)
        np.testing.assert_allclose(np.einsum("tij,tkj->tik", arm.rotation, arm.rotation), np.broadcast_to(np.eye(3), (30, 3, 3)), atol=1e-9)
        np.testing.assert_array_equal(arm.gripper, chunk.actions[:, base + 9])


def test_act_async_gives_the_same_chunk(setup) -> None:
    work, _, _ = setup
    with Policy.load(work / "fp32") as policy:
        o = obs(seed=9)
        np.testing.assert_array_equal(policy.act_async(o).result(timeout=60).actions, policy.act(o).actions)


def test_instruction_tokens_are_cached(setup, monkeypatch) -> None:
    work, _, _ = setup
    policy = Policy.load(work / "fp32")
    calls = []
    real = policy.tokenizer.__call__
    monkeypatch.setattr(type(policy.tokenizer), "__call__", lambda self, text: calls.append(text) or real(text))
    for _ in range(3):
        policy.act(obs(instruction="open the top drawer"), steps=1)
    policy.act(obs(instruction="close the microwave door"), steps=1)
    assert calls == ["open the top drawer", "close the microwave door"]
    with pytest.raises(InputError, match="observation.instruction: not valid Unicode text"):
        policy.token_ids("caf\udce9")  # called directly, it checks too: nothing reaches the tokenizer unchecked
    assert calls == ["open the top drawer", "close the microwave door"]


def test_an_observation_is_checked_once_where_it_enters(setup, monkeypatch) -> None:
    """Policy.check makes a CheckedObservation that act runs without checking again; one checked for another
    bundle is checked afresh (the fp16 bundle takes 2 views, the fp32 one 3)."""
    work, _, _ = setup
    with Policy.load(work / "fp32") as policy, Policy.load(work / "fp16") as other:
        o = obs(seed=3)
        checked = policy.check(o)
        assert isinstance(checked, CheckedObservation) and checked.bundle_id == policy.manifest.bundle_id
        assert policy.check(checked) is checked
        calls = []
        real = policy_module.check_views
        monkeypatch.setattr(policy_module, "check_views", lambda images: calls.append(len(images)) or real(images))
        np.testing.assert_array_equal(policy.act(checked).actions, policy.act(o).actions)
        assert calls == [3]  # the raw observation only
        with pytest.raises(InputError, match=r"images\[2\]: this bundle was exported for 2 view"):
            other.act(checked)


def test_tampered_and_incomplete_bundles_are_refused(setup, tmp_path) -> None:
    work, _, _ = setup
    bundle = shutil.copytree(work / "fp32", tmp_path / "b")
    data = bytearray((bundle / "denoise.onnx.data").read_bytes())
    data[100] ^= 0xFF
    (bundle / "denoise.onnx.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"denoise.onnx.data: sha256 .* does not match manifest.json"):
        Policy.load(bundle)
    (bundle / "denoise.onnx.data").unlink()
    with pytest.raises(BundleError, match="denoise.onnx.data: listed in manifest.json but missing"):
        Policy.load(bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    man["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="schema_version is 99; this runtime reads 1"):
        Policy.load(bundle)
    with pytest.raises(BundleError, match="not found"):
        Policy.load(tmp_path / "nothing")


def test_bad_observations_are_named(setup) -> None:
    work, _, _ = setup
    policy = Policy.load(work / "fp16")  # exported for 2 views
    good = obs(views=2)
    cases = [
        (dict(proprio=np.zeros(7, np.float32)), r"observation.proprio: expected 20 values, got shape \(7,\)"),
        (dict(proprio=np.full(20, np.nan, np.float32)), "NaN or Inf"),
        (dict(noise=np.zeros((30, 14), np.float32)), r"observation.noise: expected shape \(30, 20\)"),
        (dict(images=[np.zeros((8, 8), np.uint8)]), r"images\[0\]: expected shape \(H, W, 3\)"),
        (dict(images=[np.zeros((8, 8, 3), np.float64)]), r"images\[0\]: expected dtype uint8"),
        (dict(images=[None, None, np.zeros((8, 8, 3), np.uint8)]), r"images\[2\]: this bundle was exported for 2 view"),
        (dict(images=[np.zeros((10, 10_000, 3), np.uint8)]), r"images\[0\]: 10000x10 pixels; at most 4096 per side"),
        (dict(proprio=np.array(["a"] * 20)), r"observation.proprio: expected 20 numbers, got an array of <U1"),
        (dict(proprio="0" * 20), r"observation.proprio: expected 20 numbers, got an array of <U20 \(str\)"),
        (dict(proprio=[[1.0], [1.0, 2.0]]), r"observation.proprio: expected 20 numbers, got list"),
        (dict(proprio=np.full(20, 1e300)), r"value too large for float32"),
        (dict(instruction="caf\udce9"), r"observation.instruction: not valid Unicode text: a lone surrogate U\+DCE9"),
        (dict(instruction="x" * 1_000_000), r"observation.instruction: 1000000 characters; at most 1024"),
        (dict(instruction=b"wave"), r"observation.instruction: expected text \(a string\), got bytes"),
        (dict(timestamp=float("nan")), r"observation.timestamp = nan: expected seconds 0 ... 1e\+10"),
        (dict(timestamp=float("inf")), r"observation.timestamp = inf"),
        (dict(timestamp=-1e300), r"observation.timestamp = -1e\+300"),
        (dict(timestamp="12"), r"observation.timestamp = '12'"),
    ]
    for change, message in cases:
        bad = Observation(**{**good.__dict__, **change})
        with pytest.raises(InputError, match=message):
            policy.act(bad)
    for steps in (0, 101, 10**9, 2.5, True):  # a hostile count is refused at once, never run
        with pytest.raises(InputError, match=rf"steps = {steps!r}: expected an integer 1 \.\.\. 100"):
            policy.act(good, steps=steps)


def test_requested_provider_must_be_the_one_in_use(setup) -> None:
    import onnxruntime as ort

    work, _, _ = setup
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the CPU-only refusal cannot be shown here")
    with pytest.raises(BackendError, match=r"no CUDAExecutionProvider in this install \(available: \["):
        Policy.load(work / "fp32", backend="onnxruntime", device="cuda")
    with pytest.raises(BackendError, match="unknown backend 'openvino'"):
        Policy.load(work / "fp32", backend="openvino")


@pytest.mark.subprocess
def test_runtime_does_not_import_torch_or_export() -> None:
    import subprocess
    import sys

    code = ("import sys, runtime.policy, runtime.backends.onnxruntime, runtime.decode; "
            "bad = [m for m in ('torch', 'export', 'transformers') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr
