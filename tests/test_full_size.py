"""Opt-in (XVLA_SLOW=1): the published 0.9B configuration end to end on CPU.

Costs on the 2-core CI machines: ~10 GB RAM, ~7 GB disk, several minutes.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    from xvla import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("full") / "ckpt", "full", seed=0)


def test_full_configuration_round_trips_and_runs_a_chunk(full_checkpoint) -> None:
    from xvla import load_checkpoint

    model = load_checkpoint(full_checkpoint)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 879.5e6 - 1) < 1e-3, n
    assert (full_checkpoint / "model.safetensors").stat().st_size > 3.4e9
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    out = model.generate_actions(torch.randint(3, 51289, (1, 50), generator=g), torch.randn(1, 3, 3, 224, 224, generator=g),
                                 torch.tensor([[True, True, False]]), torch.tensor([0]), torch.zeros(1, 20), steps=10)
    print(f"\nfull: {n / 1e6:.2f} M parameters; 10-step chunk in {time.perf_counter() - t0:.1f} s")
    assert out.shape == (1, 30, 20) and torch.isfinite(out).all()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_full_configuration_exports_and_passes_parity(full_checkpoint, tmp_path, precision) -> None:
    out = tmp_path / f"bundle-{precision}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xvla_edge.cli", "export", str(full_checkpoint), "--domain-id", "0",
                           "--precision", precision, "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(f"\nfull {precision} export: {seconds:.0f} s, peak RSS {peak_gb:.1f} GB\n{proc.stdout[-1500:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["passed"]
    assert manifest["inputs"]["image_size"] == 224 and manifest["graphs"]["encoder"]["outputs"][0]["shape"] == [1, 200, 1024]
