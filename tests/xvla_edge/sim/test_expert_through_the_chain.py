"""The scripted expert through the robot's chain (time stamps, splicing, envelope, simulated arm): the
task's ceiling, and a check of the harness itself — if the expert fails here, the harness or the chain is
wrong, not a policy."""

from __future__ import annotations

import numpy as np

from xvla_edge.sim.evaluate import run_episodes


def test_the_expert_does_every_episode_with_few_interventions(tiny_bundle, tmp_path):
    report = run_episodes(tiny_bundle, range(12), expert=True, frames_for=1)
    assert report.successes == 12, report.line()
    for e in report.episodes:  # a tick per control period from 0 s to the end, each clamped or not
        assert e.ticks == round(e.seconds * report.settings["rate_hz"]) + 1 and 0 <= e.clamped_ticks <= e.clamps
    share = report.summary()["clamped_tick_share"]
    assert share == round(sum(e.clamped_ticks for e in report.episodes) / sum(e.ticks for e in report.episodes), 4)
    assert share < 0.25, report.line()
    assert f"(on {100 * share:.0f} % of ticks)" in report.line()
    assert all(1 <= e.chunks <= 8 for e in report.episodes)
    for e in report.episodes:  # the gripper ends at the named block
        assert np.linalg.norm(e.path[-1][:2] - e.scene.positions[e.scene.target]) < 0.03
    from xvla_edge.sim.report import write

    files = write(report, tmp_path, "expert")
    assert sorted(p.name for p in files) == ["expert.gif", "expert.json", "expert.png"]
    assert '"successes": 12' in (tmp_path / "expert.json").read_text()
