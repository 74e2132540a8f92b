"""The accuracy gate: does a bundle still behave like its checkpoint on a calibration set?

Both sides run every observation of the set with the bundle's preprocessing, the same instruction, the same
initial noise x1 (from the set's seeds) and the same number of steps. The candidate is the bundle through its
backend (:class:`runtime.policy.Policy`). The fp32 reference is one of:

- the checkpoint (default: the manifest's ``source.checkpoint``, or ``checkpoint=``) through the torch backend,
  i.e. the PyTorch model; its weights must hash to the manifest's ``source.weights_sha256``; a LoRA adapter
  merged at export (``source.lora``; its directory moved: ``lora=``) is merged again, its files hashing to the
  manifest's record;
- an fp32 bundle of the same checkpoint and domain (``reference_bundle=``) through ONNX Runtime on CPU: no torch
  needed, and equal to the checkpoint within the fp32 bundle's own export parity (~1e-7).

Errors per arm over every waypoint of every chunk (:mod:`calibration.metrics`): ee6d / agibot_ee6d: position
(mm) and rotation (degrees, geodesic); joint mode: joint error (degrees, the largest of the 6 joints per
waypoint) instead of position and rotation; every mode: gripper decisions flipped; ``auto`` mode: max |Δ| only
(no physical units), over all channels. Pass when every arm is within the tolerance: the manifest's
``parity.tolerance`` (what the bundle was accepted against), else :data:`calibration.metrics.TOLERANCES` of its
precision, with any field overridden by the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calibration.errors import CalibrationError
from calibration.metrics import TOLERANCES, ChunkErrors, Tolerance, accumulate
from calibration.sets import CalibrationSet
from runtime.manifest import Manifest
from runtime.policy import Policy
from xvla.constants import INDEX_FILE, MAX_STEPS, WEIGHTS_FILE
from xvla.files import sha256_file

Progress = Callable[[str], None]


@dataclass
class ArmResult:
    """One arm's errors (``arm`` None: ``auto`` mode, every channel)."""

    arm: int | None
    errors: ChunkErrors
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, **self.errors.summary(), "passed": not self.failures, "failures": self.failures}


@dataclass
class GateReport:
    bundle: str
    precision: str
    backend: str
    reference: dict[str, str]
    set: dict[str, Any]
    mode: str
    steps: int
    tolerance: Tolerance
    arms: list[ArmResult]
    combined: ChunkErrors  # every arm of the robot together
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(not a.failures for a in self.arms)

    @property
    def failures(self) -> list[str]:
        return [f"{arm_name(a.arm)}: {f}" for a in self.arms for f in a.failures]

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "precision": self.precision, "backend": self.backend,
                "reference": self.reference, "set": self.set, "mode": self.mode, "steps": self.steps,
                "observations": self.set["observations"], "tolerance": self.tolerance.to_dict(),
                "chunk": self.combined.summary(), "arms": [a.to_dict() for a in self.arms],
                "seconds": self.seconds, "passed": self.passed, "failures": self.failures}


def arm_name(arm: int | None) -> str:
    return "all channels" if arm is None else f"arm {arm}"


def tolerance_for(manifest: Manifest, overrides: dict[str, float] | None = None) -> Tolerance:
    """The manifest's ``parity.tolerance`` (else its precision's default), with ``overrides`` applied."""
    recorded = manifest.raw.get("parity", {}).get("tolerance")
    if recorded:
        try:
            tol = Tolerance.from_dict(recorded, "manifest.json parity.tolerance")
        except ValueError as e:
            raise CalibrationError(str(e)) from None
    elif manifest.precision in TOLERANCES:
        tol = TOLERANCES[manifest.precision]
    else:
        raise CalibrationError(f"manifest.json: precision {manifest.precision!r} has no default tolerance; expected "
                               f"one of {sorted(TOLERANCES)} or a parity.tolerance")
    return replace(tol, **(overrides or {}))


def compare(reference: np.ndarray, candidate: np.ndarray, action: dict[str, Any], tolerance: Tolerance
            ) -> tuple[list[ArmResult], ChunkErrors]:
    """Per-arm results and the errors of all arms together, for chunks [N, T, D] in ``action``'s layout."""
    mode, layout = action["mode"], action.get("rot6d_layout", "rows")
    robot_arms = tuple(range(int(action.get("arms", 1))))
    groups: list[int | None] = [None] if mode == "auto" else list(robot_arms)
    results = []
    for arm in groups:
        errors = accumulate(ChunkErrors(), reference, candidate, mode, layout, robot_arms if arm is None else (arm,))
        results.append(ArmResult(arm, errors, errors.failures(tolerance)))
    return results, accumulate(ChunkErrors(), reference, candidate, mode, layout, robot_arms)


def chunks(policy: Policy, cset: CalibrationSet, steps: int) -> np.ndarray:
    """The action chunks [N, T, D] of every observation of ``cset``, each from its own seeded noise."""
    action = policy.manifest.action
    shape = (int(action["chunk_length"]), int(action["dim"]))
    return np.stack([policy.act(cset.observation(i, shape), steps=steps).actions for i in range(len(cset))])


def reference_policy(manifest: Manifest, bundle: Path, *, checkpoint: str | Path | None = None,
                     lora: str | Path | None = None,
                     reference_bundle: str | Path | None = None) -> tuple[Policy, dict[str, str]]:
    """The fp32 reference for ``bundle`` (see the module docstring) and a description of it."""
    if (checkpoint is not None or lora is not None) and reference_bundle is not None:
        raise CalibrationError("give either a reference checkpoint (and its LoRA adapter) or a reference bundle, "
                               "not both")
    if reference_bundle is not None:
        ref_dir = Path(reference_bundle)
        ref = Manifest.load(ref_dir)
        ref.verify_files(ref_dir)
        _check_compatible(manifest, bundle, ref, ref_dir)
        return (Policy.load(ref_dir, backend="onnxruntime", device="cpu", verify=False),
                {"kind": "bundle", "path": str(ref_dir), "backend": "onnxruntime-cpu"})
    recorded = manifest.raw.get("source", {}).get("checkpoint")
    if checkpoint is None and not recorded:
        raise CalibrationError(f"{bundle}/manifest.json records no source.checkpoint; pass a reference checkpoint "
                               "(--reference) or an fp32 bundle (--reference-bundle)")
    ckpt = Path(checkpoint if checkpoint is not None else recorded)
    if not ckpt.is_dir():
        where = "--reference" if checkpoint is not None else f"{bundle}/manifest.json source.checkpoint"
        raise CalibrationError(f"reference checkpoint {ckpt} ({where}) is not a directory; pass --reference "
                               "CHECKPOINT_DIR or --reference-bundle FP32_BUNDLE")
    _check_weights(manifest, ckpt)
    policy = Policy.load(bundle, backend="torch", device="cpu", verify=False, checkpoint=ckpt, lora=lora)
    adapter = manifest.raw.get("source", {}).get("lora")
    return policy, {"kind": "checkpoint", "path": str(ckpt), "backend": "torch-cpu-fp32",
                    **({"lora": str(lora or adapter["path"])} if adapter else {})}


def _check_weights(manifest: Manifest, ckpt: Path) -> None:
    expected = manifest.raw.get("source", {}).get("weights_sha256")
    weights = ckpt / WEIGHTS_FILE if (ckpt / WEIGHTS_FILE).is_file() else ckpt / INDEX_FILE
    if expected and weights.is_file() and sha256_file(weights) != expected:
        raise CalibrationError(f"{weights}: sha256 differs from the manifest's source.weights_sha256 "
                               f"({expected[:16]}…): this is not the checkpoint the bundle was exported from")


def _adapter_files(manifest: Manifest) -> Any:
    """The files of the LoRA adapter merged at export (None: none was)."""
    return (manifest.raw.get("source", {}).get("lora") or {}).get("files")


def _check_compatible(manifest: Manifest, bundle: Path, ref: Manifest, ref_dir: Path) -> None:
    if ref.precision != "fp32":
        raise CalibrationError(f"{ref_dir}: precision {ref.precision!r}; a reference bundle must be fp32")
    pairs = [("domain_id", manifest.domain_id, ref.domain_id)]
    pairs += [(f"action.{k}", manifest.action.get(k), ref.action.get(k))
              for k in ("mode", "dim", "output_dim", "chunk_length", "rot6d_layout")]
    pairs += [(f"inputs.{k}", manifest.inputs[k], ref.inputs[k])
              for k in ("token_length", "image_size", "views", "proprio_dim")]
    pairs.append(("source.weights_sha256", manifest.raw.get("source", {}).get("weights_sha256"),
                  ref.raw.get("source", {}).get("weights_sha256")))
    pairs.append(("source.lora.files", _adapter_files(manifest), _adapter_files(ref)))
    for key, ours, theirs in pairs:
        if ours != theirs:
            raise CalibrationError(f"reference bundle {ref_dir}: {key} is {theirs!r}; bundle {bundle} has {ours!r} "
                                   "(the reference must be an fp32 export of the same checkpoint and domain)")


def run_gate(bundle: str | Path, cset: CalibrationSet, *, checkpoint: str | Path | None = None,
             lora: str | Path | None = None, reference_bundle: str | Path | None = None, backend: str = "auto",
             device: str = "cpu",
             steps: int | None = None, overrides: dict[str, float] | None = None,
             progress: Progress = lambda _: None) -> GateReport:
    """Run ``bundle`` and its fp32 reference on every observation of ``cset`` and compare the chunks."""
    bundle = Path(bundle)
    manifest = Manifest.load(bundle)
    manifest.verify_files(bundle)
    cset.check_bundle(manifest, bundle)
    tolerance = tolerance_for(manifest, overrides)
    steps = manifest.default_steps if steps is None else steps
    if not 1 <= steps <= MAX_STEPS:
        raise CalibrationError(f"--steps {steps}: expected 1 ... {MAX_STEPS}")
    seconds = {}
    with Policy.load(bundle, backend=backend, device=device, verify=False) as candidate:
        backend_name = f"{candidate.backend.name}-{device}"
        progress(f"  candidate {bundle} ({manifest.precision}, {backend_name}) on {len(cset)} observations ...")
        t0 = time.perf_counter()
        got = chunks(candidate, cset, steps)
        seconds["candidate"] = time.perf_counter() - t0
    ref_policy, ref_info = reference_policy(manifest, bundle, checkpoint=checkpoint, lora=lora,
                                            reference_bundle=reference_bundle)
    with ref_policy:
        progress(f"  reference {ref_info['path']} ({ref_info['backend']}) ...")
        t0 = time.perf_counter()
        want = chunks(ref_policy, cset, steps)
        seconds["reference"] = time.perf_counter() - t0
    arms, combined = compare(want, got, manifest.action, tolerance)
    return GateReport(bundle=str(bundle), precision=manifest.precision, backend=backend_name, reference=ref_info,
                      set={"path": cset.source.get("set", cset.where), "observations": len(cset),
                           "index_sha256": cset.source.get("index_sha256")},
                      mode=manifest.action["mode"], steps=steps, tolerance=tolerance, arms=arms, combined=combined,
                      seconds=seconds)
