"""``xvla-edge calibrate check``: an honest bundle passes, a perturbed one is caught, figures are the real ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
onnx = pytest.importorskip("onnx")  # without it (a robot install) the module skips, not errors
torch = pytest.importorskip("torch")  # without it (a robot install) the module skips, not errors
from onnx import numpy_helper

from calibration.sets import load_set
from runtime.manifest import Manifest
from xvla.files import sha256_file
from runtime.policy import Policy
from runtime.types import Observation
from xvla import load_checkpoint
from xvla_edge.cli import main
from xvla.preprocessing import ImageProcessor, TextTokenizer


def rehash(bundle: Path) -> None:
    """Record the bundle's current files in its manifest, as a careless rebuild would."""
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    raw["files"] = {name: {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}
                    for name in raw["files"]}
    path.write_text(json.dumps(raw))


@pytest.fixture(scope="module")
def perturbed(fp32_bundle, tiny_checkpoint, tmp_path_factory) -> Path:
    """The bundle with its folded soft-prompt row (domain 3) nudged by 2 % of its spread, re-hashed."""
    out = tmp_path_factory.mktemp("perturbed") / "bundle"
    shutil.copytree(fp32_bundle, out)
    prompts = load_checkpoint(tiny_checkpoint).state_dict()["transformer.soft_prompt_hub.weight"].view(30, 32, -1)
    row = prompts[3].numpy()
    model = onnx.load(str(out / "denoise.onnx"))
    (hit,) = [t for t in model.graph.initializer
              if int(np.prod(t.dims)) == row.size and np.array_equal(numpy_helper.to_array(t).reshape(row.shape), row)]
    noise = np.random.default_rng(0).normal(0, 0.02 * row.std(), row.shape).astype(np.float32)
    hit.CopyFrom(numpy_helper.from_array((row + noise).reshape(numpy_helper.to_array(hit).shape), hit.name))
    (out / "denoise.onnx.data").unlink()
    onnx.save(model, str(out / "denoise.onnx"), save_as_external_data=True, location="denoise.onnx.data")
    rehash(out)
    Manifest.load(out).verify_files(out)  # the manifest check alone would not notice
    return out


def torch_chunks(ckpt: Path, bundle: Path, set_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) chunks computed here without the gate's code: the model's own sampler and the
    bundle through Policy, on the set's observations and seeds."""
    model = load_checkpoint(ckpt)
    s = load_set(set_dir)
    proc, tok = ImageProcessor.from_dir(ckpt), TextTokenizer(ckpt)
    ref, got = [], []
    with Policy.load(bundle, "onnxruntime") as policy:
        for i in range(len(s)):
            noise = np.random.default_rng(int(s.seeds[i])).standard_normal((30, 20), dtype=np.float32)
            images = [s.images[k][i] if s.view_mask[i, k] else None for k in range(2)]
            pixels, mask = proc(images)
            ref.append(model.generate_actions(
                torch.from_numpy(tok(s.instructions[i]))[None], torch.from_numpy(pixels)[None],
                torch.from_numpy(mask)[None], torch.tensor([3]), torch.from_numpy(np.array(s.proprio[i]))[None],
                steps=10, noise=torch.from_numpy(noise)[None])[0].numpy())
            got.append(policy.act(Observation(images=images, instruction=s.instructions[i],
                                              proprio=np.array(s.proprio[i]), noise=noise)).actions)
    return np.stack(ref), np.stack(got)


def test_honest_bundle_passes_with_table_json_and_plot(fp32_bundle, calib_set, tmp_path, capsys) -> None:
    rc = main(["calibrate", "check", str(fp32_bundle), "--set", str(calib_set), "--json", str(tmp_path / "g.json"),
               "--plot", str(tmp_path / "g.png")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASSED" in out and "position_mm" in out and "vs checkpoint" in out
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["passed"] and report["observations"] == 12 and report["reference"]["kind"] == "checkpoint"
    assert report["tolerance"] == {"max_abs": 1e-5}  # the fp32 bundle's own parity tolerance
    (arm,) = report["arms"]
    assert arm["arm"] == 0 and arm["max_abs"] <= 1e-5 and arm["gripper_flips"] == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_perturbed_bundle_is_caught_with_the_true_errors(perturbed, tiny_checkpoint, calib_set, tmp_path,
                                                         capsys) -> None:
    rc = main(["calibrate", "check", str(perturbed), "--set", str(calib_set), "--json", str(tmp_path / "g.json")])
    assert rc == 1
    assert "FAILED: arm 0: max_abs" in capsys.readouterr().out
    report = json.loads((tmp_path / "g.json").read_text())
    ref, got = torch_chunks(tiny_checkpoint, perturbed, calib_set)
    position_mm = 1000 * np.linalg.norm(ref[..., 0:3] - got[..., 0:3], axis=-1)
    (arm,) = report["arms"]
    assert arm["position_mm"]["max"] == pytest.approx(position_mm.max(), rel=1e-4)
    assert arm["position_mm"]["p50"] == pytest.approx(np.median(position_mm), rel=1e-4)
    assert arm["max_abs"] == pytest.approx(np.abs(ref[..., :10] - got[..., :10]).max(), rel=1e-4)
    assert arm["position_mm"]["max"] > 0.1  # a physically visible change, not rounding noise
    # with the limits set above the measured errors the verdict turns: it follows the figures
    assert main(["calibrate", "check", str(perturbed), "--set", str(calib_set), "--tolerance", "max_abs=1",
                 "--tolerance", f"position_mm={position_mm.max() * 2}"]) == 0


def test_shared_noise_makes_a_bundle_agree_with_itself_exactly(fp32_bundle, calib_set, tmp_path) -> None:
    assert main(["calibrate", "check", str(fp32_bundle), "--set", str(calib_set), "--reference-bundle",
                 str(fp32_bundle), "--json", str(tmp_path / "g.json")]) == 0
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["arms"][0]["max_abs"] == 0.0 and report["reference"]["kind"] == "bundle"


def test_bad_references_are_usage_errors(fp32_bundle, calib_set, tmp_path, capsys) -> None:
    other = tmp_path / "other-domain"
    shutil.copytree(fp32_bundle, other)
    raw = json.loads((other / "manifest.json").read_text())
    raw["domain_id"] = 5
    (other / "manifest.json").write_text(json.dumps(raw))
    assert main(["calibrate", "check", str(fp32_bundle), "--set", str(calib_set),
                 "--reference-bundle", str(other)]) == 2
    assert "domain_id is 5; bundle" in capsys.readouterr().err
    assert main(["calibrate", "check", str(fp32_bundle), "--set", str(calib_set), "--reference",
                 str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["calibrate", "check", str(fp32_bundle), "--set", str(calib_set), "--tolerance", "position_cm=1"]) == 2
    assert "unknown key(s) ['position_cm']" in capsys.readouterr().err
