"""The committed trained checkpoint does its task through the robot's chain (ONNX Runtime bundle, the
in-process control loop, safety envelope, simulated arm): a test that fails when decoding, time stamps,
rotations or the gripper go wrong anywhere between the network and the arm."""

from __future__ import annotations

import json

import pytest

from xvla_edge.sim import CHECKPOINT_DIR
from xvla_edge.sim.evaluate import run_episodes

SEEDS = range(12)


@pytest.fixture(scope="module")
def sim_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    from export.bundle import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("sim") / "bundle"
    export_bundle(CHECKPOINT_DIR, out, ExportOptions(domain_id=3, views=2), progress=lambda s: None)
    return out


@pytest.mark.model
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
    assert {"seed", "layouts", "steps", "approach_steps"} <= set(provenance["options"])
    for option in ("seed", "layouts", "steps", "approach_steps"):  # the command reproduces the options
        assert f"--{option.replace('_', '-')} {provenance['options'][option]}" in provenance["command"]
    assert provenance["generator_version"] >= 1 and provenance["final_losses"]["loss"] > 0


@pytest.mark.model
def test_the_trained_policy_does_its_task_through_the_chain(sim_bundle):
    """Twelve fixed episodes (layouts never trained on) through an ONNX Runtime bundle, the control loop, the
    envelope and the simulated arm: the policy succeeds in a clear majority, about as fast as the scripted
    expert on the same episodes, and the envelope changes the command on fewer than 35 % of ticks.

    Broken on purpose (scratch runs, docs/sim-task.md): the bundle's rot6d layout flipped → 0 of 12; the decoded
    gripper inverted → 4 of 12; the chunk span doubled → 10 of 12 but 2.4× the expert's time. Time stamps
    one waypoint (33 ms) early do not show in closed loop (9 of 12, as unbroken): the unit tests of
    ``runtime.decode.chunk_timestamps`` catch that one."""
    report = run_episodes(sim_bundle, SEEDS, frames_for=0)
    expert = run_episodes(sim_bundle, SEEDS, expert=True, frames_for=0)
    assert expert.successes == len(SEEDS), expert.line()
    summary, baseline = report.summary(), expert.summary()
    assert report.successes >= 7, report.line()
    assert summary["mean_time_to_success_s"] <= 1.75 * baseline["mean_time_to_success_s"], (report.line(),
                                                                                             expert.line())
    assert summary["clamped_tick_share"] < 0.35, report.line()  # 20 % (53 % before the lag fix of the splice)


@pytest.mark.subprocess
def test_through_the_daemon_on_the_emulated_arm(sim_bundle, tmp_path):
    """The same policy through the real daemon in real time: its control loop in its own process, the
    xvla-serial emulator on a pty, the simulated cameras reading the emulated arm; it grasps a block."""
    report = run_episodes(sim_bundle, [1, 12], daemon=True, workdir=tmp_path, frames_for=0)
    assert any(e.outcome != "timeout" for e in report.episodes), report.line()
    assert all(e.chunks >= 1 and e.daemon_lines for e in report.episodes)


@pytest.mark.model
def test_the_trained_policy_does_its_task_with_real_time_chunking(sim_bundle):
    """The same twelve episodes with real-time chunking at 0.4 s of latency (the prefix of every chunk after the first
    built from the loop's executing trajectory, mixed inside the exported denoise graph): the policy still does its
    task, and every hand-over's seam is measured, within the envelope's bound (5 m/s² × 50 ms). That rtc does not
    beat blend on this policy, and why: docs/daemon.md#measured-the-simulated-task."""
    report = run_episodes(sim_bundle, SEEDS, frames_for=0, latency_s=0.4, chunking="rtc")
    assert report.successes >= 7, report.line()
    summary = report.summary()
    assert summary["handovers"] >= sum(e.chunks for e in report.episodes) - 2 * len(SEEDS)
    assert 0 < summary["seam_p50"] <= summary["seam_p99"] <= 0.25 + 1e-9, report.line()
