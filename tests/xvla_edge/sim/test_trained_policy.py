"""The committed trained checkpoint does its task through the robot's chain (ONNX Runtime bundle, the
in-process control loop, safety envelope, simulated arm): a test that fails when decoding, time stamps,
rotations or the gripper go wrong anywhere between the network and the arm."""

from __future__ import annotations

import json

import pytest

from xvla_edge.sim import CHECKPOINT_DIR
from xvla_edge.sim.evaluate import run_episodes

SEEDS = range(8)


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("sim") / "bundle"
    export_bundle(CHECKPOINT_DIR, out, ExportOptions(domain_id=3, views=2), progress=lambda s: None)
    return out


def test_the_one_arm_policy_exports_at_fp16(tmp_path):
    """The parity gate scores the arm the bundle drives: this policy leaves the second arm's rot6d near zero,
    where fp16 rounding turns into degrees of meaningless rotation (2.9° against a 0.5° tolerance when both
    arms were scored, and the export refused)."""
    pytest.importorskip("torch")
    from export.bundle import ExportOptions, export_bundle

    manifest = export_bundle(CHECKPOINT_DIR, tmp_path / "fp16", ExportOptions(domain_id=3, views=2, precision="fp16"),
                             progress=lambda s: None)
    assert manifest["action"]["arms"] == 1 and manifest["parity"]["passed"]
    assert manifest["parity"]["chunk"]["rotation_deg"]["max"] < manifest["parity"]["tolerance"]["rotation_deg"]


def test_the_checkpoint_carries_its_provenance():
    provenance = json.loads((CHECKPOINT_DIR / "PROVENANCE.json").read_text())
    assert provenance["command"].startswith("xvla-edge sim train")
    assert {"seed", "layouts", "steps"} <= set(provenance["options"])
    assert provenance["generator_version"] >= 1 and provenance["final_losses"]["loss"] > 0


def test_the_trained_policy_grasps_through_the_chain(sim_bundle):
    """Eight fixed episodes: the policy closes the gripper on a block — within 2 cm of its centre, 3.5 cm of
    the table and 20° of the grasp orientation — in a clear majority. That takes positions, rotation (rot6d
    layout), gripper decoding and time stamps all right between the network and the arm; a swapped rot6d
    layout leaves no grasp at all. Which block it grasps (the instruction's) is the
    policy's quality, measured by ``benchmarks/test_sim_task.py``; the successes are reported here."""
    report = run_episodes(sim_bundle, SEEDS, frames_for=0)
    grasps = sum(e.outcome != "timeout" for e in report.episodes)
    assert grasps >= 6, report.line()
    assert report.successes >= 1, report.line()


def test_through_the_daemon_on_the_emulated_arm(sim_bundle, tmp_path):
    """The same policy through the real daemon in real time: its control loop in its own process, the
    xvla-serial emulator on a pty, the simulated cameras reading the emulated arm; it grasps a block."""
    report = run_episodes(sim_bundle, [1, 12], daemon=True, workdir=tmp_path, frames_for=0)
    assert any(e.outcome != "timeout" for e in report.episodes), report.line()
    assert all(e.chunks >= 1 and e.daemon_lines for e in report.episodes)
