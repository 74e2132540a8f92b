"""The torch backend's sampling loop: what CUDA-graph capture needs from it, checked on the CPU; one GPU test.

Capture records device work only: an operation that makes a tensor from host data (a Python index list, a
``torch.tensor`` literal, a scalar written into a device tensor) copies it to the device, and one that reads a
value back (``int(t)``, ``.item()``, ``nonzero``) waits for the device — either fails inside
``torch.cuda.graph``. On the CPU no such failure happens, so the loop runs here under a dispatch mode that
records every operation and the test names the ones capture forbids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model  # exported bundles run by torch (tests/support/tiers.py)

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from runtime.backends.torch_backend import TorchBackend  # noqa: E402
from runtime.manifest import Manifest  # noqa: E402
from runtime.policy import Policy  # noqa: E402
from xvla import write_random_checkpoint  # noqa: E402
from xvla_edge.cli import main  # noqa: E402

CAPTURE_FORBIDDEN = {"lift_fresh", "lift_fresh_copy", "_local_scalar_dense", "nonzero", "item", "_to_copy"}


class OperationLog(TorchDispatchMode):
    """Every aten operation run inside the mode, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("torch-backend")
    out = {}
    for mode, domain in (("ee6d", 3), ("joint", 2)):
        ckpt = write_random_checkpoint(work / f"ckpt-{mode}", "tiny", seed=5, action_mode=mode)
        assert main(["export", str(ckpt), "--domain-id", str(domain), "--views", "2",
                     "--out", str(work / mode)]) == 0
        out[mode] = work / mode
    return out


def _ready_backend(bundle: Path) -> TorchBackend:
    manifest = Manifest.load(bundle)
    backend = TorchBackend(manifest, bundle)
    side = int(manifest.raw["inputs"]["image_size"])
    rng = np.random.default_rng(0)
    backend.encode(rng.normal(size=(1, 2, 3, side, side)).astype(np.float32), np.ones((1, 2), dtype=bool),
                   np.array([[0, 5, 9, 2]], dtype=np.int64))
    return backend


@pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning")  # torch's own, raised under a dispatch mode
@pytest.mark.parametrize("mode", ["ee6d", "joint"])
def test_the_loop_after_warm_up_runs_only_device_operations(bundles, mode) -> None:
    backend = _ready_backend(bundles[mode])
    first = backend._loop(4).clone()  # warm-up: builds the step times and the action space's masks
    with OperationLog() as ops:
        again = backend._loop(4)
    forbidden = sorted(set(ops.names) & CAPTURE_FORBIDDEN)
    assert not forbidden, f"the {mode} loop would fail CUDA-graph capture: it runs {forbidden}"
    assert len(ops.names) > 50  # the mode saw the loop
    torch.testing.assert_close(again, first, rtol=0, atol=0)


def test_the_log_names_what_capture_forbids() -> None:
    """The check above can fail: the index-list postprocessing this backend used before is caught."""
    action = torch.zeros(1, 30, 20)
    with OperationLog() as ops:
        action[..., [9, 19]] = torch.sigmoid(action[..., [9, 19]])
        int(action.sum())
    assert {"lift_fresh", "_local_scalar_dense"} <= set(ops.names) & CAPTURE_FORBIDDEN


@pytest.mark.parametrize("mode", ["ee6d", "joint"])
def test_the_loop_matches_the_reference_sampler(bundles, mode) -> None:
    """The device-mask postprocessing and the precomputed step times give the model's own chunk."""
    backend = _ready_backend(bundles[mode])
    rng = np.random.default_rng(1)
    manifest = Manifest.load(bundles[mode])
    T, A = int(manifest.action["chunk_length"]), int(manifest.action["dim"])
    x1 = rng.standard_normal((1, T, A)).astype(np.float32)
    proprio = rng.normal(0, 0.3, (1, A)).astype(np.float32)
    ours = backend.denoise(x1, proprio, 3)
    model = backend.model
    ref = torch.zeros(1, T, A)
    for i in range(3, 0, -1):
        t = torch.full((1,), i / 3)
        with torch.no_grad():
            ref = model.denoise_step(backend.enc, torch.from_numpy(x1) * t + ref * (1 - t), torch.from_numpy(proprio),
                                     t, backend.domain)
    grip = list(model.action_space.gripper_channels)
    expected = ref.clone()
    expected[..., grip] = torch.sigmoid(ref[..., grip])
    # within a float32 rounding: a vectorised sigmoid over the whole chunk may round one element differently
    np.testing.assert_allclose(ours, expected[..., : model.action_space.output_dim].numpy(), rtol=0, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_cuda_graph_chunk_equals_eager_on_the_gpu(bundles) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    from runtime.types import Observation

    obs = Observation(images=images, instruction="pick up the cup", proprio=rng.normal(0, 0.2, 20).astype(np.float32),
                      timestamp=0.0, noise=rng.standard_normal((30, 20)).astype(np.float32))
    eager = Policy.load(bundles["ee6d"], backend="torch", device="cuda").act(obs).actions
    graphed_policy = Policy.load(bundles["ee6d"], backend="torch", device="cuda", cuda_graph=True)
    graphed = graphed_policy.act(obs).actions
    assert graphed_policy.backend.graph_fallback is None, graphed_policy.backend.graph_fallback
    np.testing.assert_allclose(graphed, eager, atol=1e-5)
