"""What an evaluation reports: the summary numbers, a picture of every episode, and a GIF of a few.

Everything printed and drawn derives from the same list of :class:`EpisodeResult`: the picture's title is
the summary line, and every episode appears in it (a green frame for a success, red for a failure, with its
seed and outcome), so the figure cannot show a better result than the numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from xvla_edge.sim.scene import RENDER_SIDE, Scene, render, to_pixels
from xvla_edge.sim.world import Tabletop

THUMB = RENDER_SIDE
OUTCOME_RGB = {"success": (30, 150, 50), "wrong_block": (200, 40, 40), "timeout": (200, 40, 40)}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EpisodeResult:
    """One episode: its seed and task, outcome, time to success, safety interventions, the gripper's path
    [n, 3] (and camera frames when recorded)."""

    seed: int
    instruction: str
    success: bool
    outcome: str  # "success", "wrong_block" or "timeout"
    seconds: float
    clamps: int
    chunks: int
    scene: Scene
    start: np.ndarray
    path: np.ndarray
    frames: list[np.ndarray] = field(default_factory=list)
    daemon_lines: list[str] = field(default_factory=list)  # the daemon's own summary (daemon path only)
    empty_closings: int = 0  # gripper closings with no block within reach
    clamped_ticks: Optional[int] = None  # control ticks whose command the envelope changed or refused (virtual
    ticks: Optional[int] = None  # time only: the daemon's control loop counts clamps by kind, not by tick)
    seams: list[float] = field(default_factory=list)  # each hand-over's seam, m/s (drivers/control/seam.py)


@dataclass
class Report:
    """Summary of a set of episodes (all derived from ``episodes``); ``settings`` says how they ran."""

    source: str
    split: str
    episodes: list[EpisodeResult]
    settings: dict = field(default_factory=dict)

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def rate(self) -> float:
        return self.successes / max(len(self.episodes), 1)

    def summary(self) -> dict:
        n = len(self.episodes)
        times = [e.seconds for e in self.episodes if e.success]
        low, high = wilson_interval(self.successes, n)
        outcomes = {o: sum(e.outcome == o for e in self.episodes) for o in ("success", "wrong_block", "timeout")}
        return {
            "source": self.source, "split": self.split, "episodes": n, "successes": self.successes,
            "success_rate": round(self.rate, 4), "ci95": [round(low, 4), round(high, 4)],
            "mean_time_to_success_s": round(float(np.mean(times)), 3) if times else None,
            "clamps_per_episode": round(float(np.mean([e.clamps for e in self.episodes])), 2) if n else None,
            "clamped_tick_share": self._clamped_share(),
            "chunks_per_episode": round(float(np.mean([e.chunks for e in self.episodes])), 2) if n else None,
            **self._seams(),
            "empty_closings": sum(e.empty_closings for e in self.episodes),
            "outcomes": outcomes, "seeds": [e.seed for e in self.episodes],
            "failed_seeds": [e.seed for e in self.episodes if not e.success],
        }

    def _seams(self) -> dict:
        """The seam over all hand-overs of all episodes: count, p50 and p99 (m/s; None without hand-overs)."""
        seams = np.array([s for e in self.episodes for s in e.seams], float)
        if not len(seams):
            return {"handovers": 0, "seam_p50": None, "seam_p99": None}
        return {"handovers": len(seams), "seam_p50": round(float(np.percentile(seams, 50)), 4),
                "seam_p99": round(float(np.percentile(seams, 99)), 4)}

    def _clamped_share(self) -> Optional[float]:
        """Share of control ticks whose command the envelope changed or refused (None on the daemon path)."""
        counted = [e for e in self.episodes if e.ticks]
        if not counted:
            return None
        return round(sum(e.clamped_ticks or 0 for e in counted) / sum(e.ticks for e in counted), 4)

    def line(self) -> str:
        s = self.summary()
        t = "n/a" if s["mean_time_to_success_s"] is None else f"{s['mean_time_to_success_s']:.2f} s"
        return (f"{self.source} [{self.split}]: {s['successes']}/{s['episodes']} = {100 * s['success_rate']:.1f} % "
                f"(95 % CI {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f} %), mean time to success {t}, "
                f"safety clamps {s['clamps_per_episode']}/episode"
                + ("" if s["clamped_tick_share"] is None else f" (on {100 * s['clamped_tick_share']:.0f} % of ticks)")
                + ("" if s["seam_p50"] is None else f", seam p50 {s['seam_p50']:.3f} p99 {s['seam_p99']:.3f} m/s "
                   f"({s['handovers']} hand-overs)")
                + f", gripper closed on nothing {s['empty_closings']}x, "
                f"outcomes {s['outcomes']}")



def picture(report: Report, path: Path, columns: int = 10) -> Path:
    """Every episode as a thumbnail: the start scene, the gripper's path (start white, end black), the named
    block ringed, a frame coloured by outcome and the seed; the summary line as the title."""
    episodes = report.episodes
    columns = max(1, min(columns, len(episodes)))
    rows = max(1, math.ceil(len(episodes) / columns))
    pad, title_h = 4, 34
    width = columns * (THUMB + pad) + pad
    sheet = Image.new("RGB", (width, title_h + rows * (THUMB + pad + 12) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    line = report.line()
    cut = line.find(", safety") + 2
    draw.text((pad, 4), line[:cut], fill=(0, 0, 0))
    draw.text((pad, 18), line[cut:], fill=(0, 0, 0))
    for i, e in enumerate(episodes):
        table = Tabletop(e.scene)
        thumb = Image.fromarray(render(e.scene, table.blocks, e.start, 1.0, None))
        d = ImageDraw.Draw(thumb)
        target = to_pixels(e.scene.positions[e.scene.target])
        d.ellipse([target[0] - 9, target[1] - 9, target[0] + 9, target[1] + 9], outline=(255, 255, 255), width=1)
        if len(e.path) > 1:
            points = [tuple(p) for p in to_pixels(e.path[:, :2])]
            d.line(points, fill=(255, 255, 255), width=1)
            d.ellipse([points[-1][0] - 2, points[-1][1] - 2, points[-1][0] + 2, points[-1][1] + 2], fill=(0, 0, 0))
        x = pad + (i % columns) * (THUMB + pad)
        y = title_h + (i // columns) * (THUMB + pad + 12)
        sheet.paste(thumb, (x, y))
        draw.rectangle([x - 1, y - 1, x + THUMB, y + THUMB], outline=OUTCOME_RGB[e.outcome], width=2)
        draw.text((x, y + THUMB + 1), f"{e.seed} {e.outcome}", fill=OUTCOME_RGB[e.outcome])
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def animation(report: Report, path: Path, episodes: int = 4) -> Path | None:
    """The recorded camera frames of the first ``episodes`` episodes that have frames, one GIF, each frame
    captioned with the episode's instruction and (on its last frame) its outcome."""
    frames = []
    for e in [e for e in report.episodes if e.frames][:episodes]:
        for k, image in enumerate(e.frames):
            frame = Image.fromarray(image).resize((2 * RENDER_SIDE, 2 * RENDER_SIDE), Image.NEAREST)
            d = ImageDraw.Draw(frame)
            d.text((4, 4), e.instruction, fill=(0, 0, 0))
            if k == len(e.frames) - 1:
                d.text((4, 18), e.outcome, fill=OUTCOME_RGB[e.outcome])
            frames.append(frame)
    if not frames:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write(report: Report, out: Path, name: str) -> list[Path]:
    """``NAME.json`` (summary + per-episode rows), ``NAME.png`` and (when frames were recorded) ``NAME.gif``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"seed": e.seed, "instruction": e.instruction, "outcome": e.outcome, "seconds": round(e.seconds, 3),
             "clamps": e.clamps, "clamped_ticks": e.clamped_ticks, "ticks": e.ticks, "chunks": e.chunks,
             "empty_closings": e.empty_closings, "seams": [round(x, 5) for x in e.seams]} for e in report.episodes]
    data = {"summary": report.summary(), "settings": report.settings, "episodes": rows}
    written = [out / f"{name}.json"]
    written[0].write_text(json.dumps(data, indent=2) + "\n")
    written.append(picture(report, out / f"{name}.png"))
    gif = animation(report, out / f"{name}.gif")
    if gif is not None:
        written.append(gif)
    return written
