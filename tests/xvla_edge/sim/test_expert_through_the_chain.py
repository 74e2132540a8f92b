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
    # The expert moves within the envelope's limits; what remains is catching up, at the start, with the part
    # of the first chunk that fell into the inference latency (4 % of ticks; 18 % while splices handed a lagging
    # trajectory over on the wall clock).
    assert share < 0.08, report.line()
    assert f"(on {100 * share:.0f} % of ticks)" in report.line()
    assert all(1 <= e.chunks <= 8 for e in report.episodes)
    for e in report.episodes:  # the gripper ends at the named block
        assert np.linalg.norm(e.path[-1][:2] - e.scene.positions[e.scene.target]) < 0.03
    from xvla_edge.sim.report import write

    files = write(report, tmp_path, "expert")
    assert sorted(p.name for p in files) == ["expert.gif", "expert.json", "expert.png"]
    assert '"successes": 12' in (tmp_path / "expert.json").read_text()
