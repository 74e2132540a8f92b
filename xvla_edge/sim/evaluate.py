"""Run the simulated task with a policy and measure it: success rate (95 % interval), time to success,
safety interventions, and a picture of every episode.

Two ways to run an episode, both through the robot's own chain (observation → policy → decoded chunk with
time stamps → splice → safety envelope → arm):

- :func:`run_virtual`: a :class:`runtime.policy.Policy` (any backend and bundle) and the in-process
  :class:`drivers.control.control_loop.ControlLoop` driving a :class:`drivers.emulation.sim_arm.SimArm` on a virtual clock at
  the daemon's control rate. Inference takes a fixed virtual ``latency_s`` (results do not depend on the
  machine's speed); chunks start when the executing one has ``start_fraction`` of its span left, and take over
  as the daemon's ``chunking`` says (real-time chunking's prefix built by the daemon's own
  :class:`xvla_edge.daemon.chunking.Chunking`, its latency estimate fed the virtual latencies). Deterministic
  for a seed.
- :func:`run_daemon`: the real daemon (:class:`xvla_edge.daemon.service.Daemon`) in real time, its control
  loop in its own process streaming to the xvla-serial emulator on a pty; the scene camera
  (:class:`SimCamera`) reads the arm's pose from the emulator and renders the table.

Episodes are fixed by their seed (layout, instruction, start pose); evaluation seeds are below
:data:`xvla_edge.sim.train.TRAIN_SEED_BASE`, so no evaluated layout was seen in training. ``split``:
``random`` (the named block drawn at random) or ``not-nearest`` (the named block is never the one nearest
to the gripper's start, so going to the nearest block — what a policy deaf to the instruction might do —
fails).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from drivers.control.control_loop import ControlLoop, LoopConfig
from drivers.control.seam import SeamMeter
from runtime.decode import chunk_timestamps, decode_arms
from runtime.types import ActionChunk, Observation
from xvla.errors import XVLAError
from xvla_edge.daemon.bridge import chunk_to_trajectory, proprio_from_state
from xvla_edge.daemon.cameras import Camera
from xvla_edge.daemon.chunking import CHUNKING, DEFAULT_CHUNKING, Chunking, splice_mode
from xvla_edge.daemon.robot_toml import emulated_robot
from xvla_edge.sim import expert
from xvla_edge.sim.demonstrations import VIEWS, ee6d, sim_arm, start_pose
from xvla_edge.sim.report import EpisodeResult, Report, write
from xvla_edge.sim.scene import RENDER_SIDE, Scene, random_scene
from xvla_edge.sim.world import Tabletop

if TYPE_CHECKING:
    from drivers.emulation.pty_emulator import EmulatorProcess
    from runtime.manifest import Manifest
    from runtime.policy import Policy
    from xvla_edge.daemon.config import RobotConfig

SPLITS = ("random", "not-nearest")
EPISODE_TIMEOUT_S = 8.0
MAX_LATENCY_S = 1.0  # virtual inference latency: at most a chunk's span of the sim task (1 s)
VIRTUAL_LATENCY_S = 0.1  # ... unless one is chosen
MAX_EVAL_SEED = 9_999_999
PATH_HZ = 20.0
FRAME_HZ = 10.0


class EvaluationError(XVLAError, ValueError):
    """Bad evaluation settings (episode count, seed, split, rates)."""


def sim_robot(bundle: Path, port: str, recordings: Path, instruction: str,
              chunking: str = DEFAULT_CHUNKING) -> dict[str, Any]:
    """The daemon configuration of the simulated task (a ``robot.toml``'s data): the emulated robot's, with two
    camera slots (scene, wrist: the daemon is given the simulated cameras for them), a continuous gripper
    (the simulated gripper is position-controlled and the policy's opening ramps within the envelope's
    rate), ``chunking`` (``[inference].chunking``), and chunks smoothed over 9 waypoints, blended in over 0.2 s
    with ``"blend"`` (the trained policy's waypoints zig-zag by millimetres and successive chunks disagree by up to
    a centimetre where they meet: on seeds 0-19, raw and replaced, the envelope changed the command on 86 % of
    ticks, smoothed and blended on 24 %, 9 % in the successful episodes; see docs/sim-task.md)."""
    camera = {"source": "synthetic", "width": RENDER_SIDE, "height": RENDER_SIDE, "fps": 30, "max_age_s": 0.5}
    return emulated_robot(bundle, port, recordings, instruction, gripper={"mode": "continuous"},
                          splice={"smooth_window": 9}, inference={"chunking": chunking},
                          arm={"timeout_ms": 500}, cameras=[{"slot": 0, **camera}, {"slot": 1, **camera}])


def sim_config(bundle: Path, instruction: str = "touch the red block", port: str = "/dev/null",
               recordings: Path = Path("recordings"), chunking: str = DEFAULT_CHUNKING) -> RobotConfig:
    """:func:`sim_robot` validated: the virtual path takes its control-loop settings from here, so both paths
    run the same rate, splice, safety and gripper settings."""
    from xvla_edge.daemon.config import RobotConfig

    return RobotConfig.from_dict(sim_robot(bundle, port, recordings, instruction, chunking),
                                 Path(bundle) / "robot.toml")


def episode_spec(seed: int, split: str) -> tuple[Scene, np.ndarray]:
    """(scene, gripper start position) of evaluation episode ``seed`` in ``split``."""
    if split not in SPLITS:
        raise EvaluationError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_EVAL_SEED:
        raise EvaluationError(f"seed {seed!r}: expected an integer 0 ... {MAX_EVAL_SEED} (higher seeds are "
                              "training layouts)")
    rng = np.random.default_rng(int(seed))
    scene = random_scene(rng)
    start = start_pose(rng)
    if split == "not-nearest":
        nearest = int(np.argmin(np.linalg.norm(scene.positions - start[:2], axis=1)))
        others = [i for i in range(len(scene.colours)) if i != nearest]
        scene = scene.with_target(others[int(rng.integers(len(others)))])
    return scene, start


def run_virtual(policy: Policy, seed: int, split: str, loop_config: LoopConfig, **options: object) -> EpisodeResult:
    """Episode ``seed`` of ``split`` with ``policy`` on the in-process control loop and simulated arm
    (virtual time); ``options``: those of :func:`run_scene`."""
    scene, start = episode_spec(seed, split)
    return run_scene(policy, scene, start, loop_config, seed=seed, **options)  # type: ignore[arg-type]


def run_scene(policy: Policy, scene: Scene, start: np.ndarray, loop_config: LoopConfig, *, seed: int = 0,
              latency_s: float = 0.1, start_fraction: float = 0.5, timeout_s: float = EPISODE_TIMEOUT_S,
              steps: Optional[int] = None, record_frames: bool = False,
              chunking: str = DEFAULT_CHUNKING) -> EpisodeResult:
    """One episode on ``scene`` from ``start``; ``seed`` seeds the policy's noise and names the result;
    ``chunking`` sets the splice's mode of ``loop_config`` and, for ``"rtc"``, the prefix of every chunk after
    the first; each hand-over's seam is measured (:mod:`drivers.control.seam`)."""
    now = [0.0]
    loop_config = dataclasses.replace(loop_config, splice=dataclasses.replace(loop_config.splice,
                                                                               mode=splice_mode(chunking)))
    loop = ControlLoop(sim_arm(start, lambda: now[0]), loop_config)
    caps = loop.start()
    table = Tabletop(scene)
    manifest = policy.manifest
    chunker = Chunking(chunking, manifest.action, loop_config.splice, loop_config.gripper)
    meter, seams = SeamMeter(caps.space, caps.n_arms), []
    span = float(manifest.action["chunk_seconds"])
    dim = int(manifest.inputs.get("state_dim", manifest.inputs["proprio_dim"]))
    noise = np.random.default_rng(seed)
    pending, executing_end, chunks = None, None, 0
    clamped_ticks = clamped_total = 0
    path, frames = [], []
    rate = loop_config.rate_hz
    if isinstance(policy, ExpertPolicy):
        policy.table = table
    for k in range(int(timeout_s * rate) + 1):
        now[0] = k / rate
        if pending is not None and now[0] >= pending[0]:
            chunk = pending[1]
            if loop.submit(chunk_to_trajectory(chunk), chunk.observation_timestamp, now[0]):
                executing_end = float(chunk.timestamps[-1])
                chunker.arrived(now[0] - chunk.observation_timestamp)
                meter.handover(now[0])
            pending = None
        loop.tick(now[0])
        total = clamps(loop.interventions.as_dict())
        clamped_ticks += total > clamped_total
        clamped_total = total
        state = loop.last_state
        table.update(state.position[0], state.quaternion[0], float(state.gripper[0]))
        if k % round(rate / PATH_HZ) == 0:
            path.append(state.position[0].copy())
        if k % round(rate) == 0:
            seams += meter.collect(loop.trace())
        if record_frames and k % round(rate / FRAME_HZ) == 0:
            frames.append(np.concatenate(table.images(), axis=1))
        if table.done:
            break
        if pending is None and (executing_end is None or now[0] >= executing_end - start_fraction * span):
            obs = Observation(images=table.images(), instruction=scene.instruction,
                              proprio=proprio_from_state(state, manifest.action, dim), timestamp=now[0],
                              noise=noise.standard_normal(policy.chunk_shape[1:], dtype=np.float32))
            planned = chunker.prefix(now[0], loop.executing())
            chunk = (policy.act(obs, steps=steps) if planned is None
                     else policy.act(obs, steps=steps, prefix=planned.prefix))  # type: ignore[call-arg]
            pending = (now[0] + latency_s, chunk)
            chunks += 1
    seams += meter.collect(loop.trace())
    result = _result(seed, scene, start, table, now[0], clamped_total, chunks, path, frames)
    result.clamped_ticks, result.ticks, result.seams = clamped_ticks, k + 1, seams
    return result


def clamps(interventions: dict[str, int]) -> int:
    """Commands the safety envelope changed or refused (``commands``, the number checked, is not one)."""
    return sum(v for k, v in interventions.items() if k != "commands")


def _result(seed: int, scene: Scene, start: np.ndarray, table: Tabletop, seconds: float, n_clamps: int, chunks: int,
            path: list, frames: list) -> EpisodeResult:
    outcome = table.outcome or "timeout"
    return EpisodeResult(seed, scene.instruction, outcome == "success", outcome, seconds, n_clamps, chunks, scene,
                         start, np.array(path).reshape(-1, 3), frames, empty_closings=table.empty_closings)


class SimCamera(Camera):
    """A camera of the daemon path. The scene camera (``view="scene"``) reads the arm's pose from
    ``read_arm`` (position, quaternion, gripper) at each grab, updates the table and renders it, recording the
    gripper's path (and frames of both views); the wrist camera (``view="wrist"``) renders the table as the
    scene camera last updated it."""

    def __init__(self, table: Tabletop, read_arm: Optional[Callable[[], tuple[np.ndarray, np.ndarray, float]]],
                 view: str = "scene", *, fps: float = 30.0, max_age_s: float = 0.5,
                 record_frames: bool = False) -> None:
        super().__init__(f"sim-{view}", fps=fps, max_age_s=max_age_s)
        if view not in ("scene", "wrist") or (view == "scene") != (read_arm is not None):
            raise EvaluationError(f"SimCamera: view {view!r} (the scene camera, and only it, reads the arm)")
        self.table = table
        self.read_arm = read_arm
        self.view = view
        self.path: list[np.ndarray] = []
        self.frames: list[np.ndarray] = []
        self.record_frames = record_frames
        self.done = threading.Event()

    def _grab(self) -> Optional[np.ndarray]:
        if self.read_arm is None:
            return self.table.wrist_image()
        position, quaternion, gripper = self.read_arm()
        self.table.update(position, quaternion, gripper)
        image = self.table.image()
        self.path.append(np.asarray(position, float).copy())
        if self.record_frames and len(self.path) % 3 == 1:
            self.frames.append(np.concatenate([image, self.table.wrist_image()], axis=1))
        if self.table.done:
            self.done.set()
        return image


def check_count(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise EvaluationError(f"{name} = {value!r}: expected an integer {low} ... {high}")
    return int(value)


class ExpertPolicy:
    """The scripted expert behind the policy interface: each chunk is :func:`expert.plan` from the measured
    pose (privileged: it reads the table, not the camera). Its success rate is the task's ceiling through the
    same chain (time stamps, splicing, safety envelope, arm)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        action = manifest.action
        self.chunk_shape = (1, int(action["chunk_length"]), int(action["dim"]))
        self.table: Optional[Tabletop] = None
        self._table_of_last: Optional[Tabletop] = None
        self._last: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def act(self, obs: Observation, *, steps: Optional[int] = None) -> ActionChunk:
        assert self.table is not None, "ExpertPolicy.table is set per episode"
        action = self.manifest.action
        n, span = int(action["chunk_length"]), float(action["chunk_seconds"])
        cmd = self._continue(obs.timestamp)
        if cmd is None:
            cmd = expert.Command(np.asarray(obs.proprio[:3], float), 0.0, float(obs.proprio[9]))
        positions, grippers = expert.plan(self.table, cmd, span / n, n)
        times = chunk_timestamps(obs.timestamp, span, n)
        self._last = (times, positions, grippers)
        actions = ee6d(positions, grippers)[:, : self.chunk_shape[2]]
        return ActionChunk(actions, times, decode_arms(actions, action), obs.timestamp)

    def _continue(self, t: float) -> Optional[expert.Command]:
        """The expert's own command state at ``t`` on its previous chunk (None at the start of an episode)."""
        if self.table is not self._table_of_last:  # a new episode
            self._table_of_last, self._last = self.table, None
        if self._last is None:
            return None
        times, positions, grippers = self._last
        k = int(np.searchsorted(times, t))
        if not 1 <= k < len(times):
            return None
        a = (t - times[k - 1]) / (times[k] - times[k - 1])
        position = positions[k - 1] + a * (positions[k] - positions[k - 1])
        speed = float(np.linalg.norm(positions[k] - positions[k - 1]) / (times[k] - times[k - 1]))
        return expert.Command(position, speed, float(grippers[k - 1] + a * (grippers[k] - grippers[k - 1])))


class PaddedPolicy:
    """A policy whose chunks are ready no sooner than ``latency_s`` after their observation: its own inference, then
    a wait (the daemon path at a chosen latency, as a slower computer or a policy server would answer). Everything
    else is the wrapped policy's."""

    def __init__(self, policy: Policy, latency_s: float) -> None:
        self.policy, self.latency_s = policy, check_latency(latency_s)
        self._executor: Optional[ThreadPoolExecutor] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def act(self, obs: Observation, **options: Any) -> ActionChunk:
        chunk = self.policy.act(obs, **options)
        time.sleep(max(obs.timestamp + self.latency_s - time.monotonic(), 0.0))
        return chunk

    def act_async(self, obs: Observation, **options: Any) -> Future:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xvla-padded")
        return self._executor.submit(self.act, obs, **options)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.policy.close()


def run_daemon(bundle: Path, seed: int, split: str, emulator: EmulatorProcess, *, backend: str = "onnxruntime",
               workdir: Path, timeout_s: float = EPISODE_TIMEOUT_S, record_frames: bool = False,
               chunking: str = DEFAULT_CHUNKING, latency_s: Optional[float] = None) -> EpisodeResult:
    """One episode through the real daemon in real time: ``emulator`` (a running xvla-serial emulator
    process, :func:`drivers.xvla_serial.emulator.start`) is the arm; the scene camera reads its pose; the daemon
    runs ``chunking`` and measures its seams itself; with ``latency_s`` its chunks are ready no sooner than that
    after their observation (:class:`PaddedPolicy`), else as fast as this machine computes them."""
    from runtime.policy import Policy
    from xvla_edge.daemon.service import Daemon
    from xvla_edge.sim.scene import GRASP_QUAT

    scene, start = episode_spec(seed, split)
    emulator.call("place", ee=[[*map(float, start), *map(float, GRASP_QUAT), 1.0]])
    table = Tabletop(scene)

    def read_arm() -> tuple[np.ndarray, np.ndarray, float]:
        pose = emulator.call("ee")[0]
        return np.array(pose[:3]), np.array(pose[3:7]), float(pose[7])

    camera = SimCamera(table, read_arm, record_frames=record_frames)
    wrist = SimCamera(table, None, "wrist")
    config = sim_config(bundle, scene.instruction, port=emulator.port, recordings=workdir / "recordings",
                        chunking=chunking)
    policy = Policy.load(bundle, backend=backend)
    daemon = Daemon(config, policy=policy if latency_s is None else PaddedPolicy(policy, latency_s),  # type: ignore[arg-type]
                    cameras={0: camera, 1: wrist})
    try:
        daemon.start()
        t0 = time.monotonic()
        daemon.run(camera.done, timeout_s)
        seconds = time.monotonic() - t0
        summary = daemon.summary()
    finally:
        daemon.close()
    return EpisodeResult(seed, scene.instruction, table.outcome == "success", table.outcome or "timeout",
                         min(seconds, timeout_s), summary.clamps, summary.chunks, scene, start,
                         np.array(camera.path).reshape(-1, 3), camera.frames, summary.lines(), table.empty_closings,
                         seams=summary.seams)


def sim_emulator() -> EmulatorProcess:
    """An xvla-serial emulator process with the simulated arm's dynamics and workspace."""
    from drivers.xvla_serial import emulator
    from xvla_edge.sim.demonstrations import MAX_LINEAR_SPEED, TIME_CONSTANT, WORKSPACE

    return emulator.start(emulator.ControllerConfig(
        n_arms=1, tau_s=TIME_CONSTANT, ee_max_speed=MAX_LINEAR_SPEED, workspace_lower=WORKSPACE.lower,
        workspace_upper=WORKSPACE.upper), seed=0)


def run_episodes(bundle: Path, seeds: Sequence[int], *, split: str = "random", backend: str = "onnxruntime",
                 daemon: bool = False, expert: bool = False, latency_s: Optional[float] = None, frames_for: int = 4,
                 workdir: Optional[Path] = None, progress: Optional[Callable[[str], None]] = None,
                 chunking: str = DEFAULT_CHUNKING) -> Report:
    """Episodes ``seeds`` of ``split`` with the bundle's policy (``backend``), through the daemon, or with the
    scripted expert, chunks taking over as ``chunking`` says; the first ``frames_for`` episodes keep their camera
    frames. ``latency_s``: the virtual inference latency (default :data:`VIRTUAL_LATENCY_S`); on the daemon path,
    the latency its inference is padded to (default: none, as this machine computes)."""
    from runtime.manifest import Manifest
    from runtime.policy import Policy

    if daemon and expert:
        raise EvaluationError("choose the daemon or the expert, not both")
    if latency_s is not None:
        check_latency(latency_s)
    elif not daemon:
        latency_s = VIRTUAL_LATENCY_S
    if chunking not in CHUNKING:
        raise EvaluationError(f"chunking {chunking!r}: expected one of {', '.join(CHUNKING)}")
    if expert and chunking == "rtc":
        raise EvaluationError("chunking 'rtc' with the expert: the scripted expert plans from the table and takes "
                              "no prefix; evaluate a bundle")
    seeds = list(seeds)
    if not 1 <= len(seeds) <= 10_000:
        raise EvaluationError(f"{len(seeds)} episodes: expected 1 ... 10000")
    for seed in seeds:
        episode_spec(seed, split)  # every seed and the split checked before anything runs
    manifest = Manifest.load(bundle)
    if not expert and int(manifest.inputs["views"]) != VIEWS:
        raise EvaluationError(f"{bundle}: exported for {manifest.inputs['views']} view(s); the sim task has "
                              f"{VIEWS} cameras (scene, wrist): export with --views {VIEWS}")
    config = sim_config(bundle, chunking=chunking)
    source = "expert" if expert else f"{'daemon' if daemon else backend}:{manifest.precision}"
    settings = {"bundle": str(bundle), "bundle_id": manifest.bundle_id, "precision": manifest.precision,
                "backend": backend, "mode": "daemon (real time)" if daemon else "virtual time", "chunking": chunking,
                "rate_hz": config.control.rate_hz, "start_fraction": config.inference.start_fraction,
                "steps": manifest.default_steps, "timeout_s": EPISODE_TIMEOUT_S,
                "latency_s": "measured" if latency_s is None else latency_s}
    results = []
    if daemon:
        emu = sim_emulator()
        work = workdir or Path(tempfile.mkdtemp(prefix="xvla-sim-"))
        try:
            for i, seed in enumerate(seeds):
                results.append(run_daemon(bundle, seed, split, emu, backend=backend, workdir=work,
                                          record_frames=i < frames_for, chunking=chunking, latency_s=latency_s))
                _progress(progress, results[-1])
        finally:
            emu.stop()
    else:
        policy = ExpertPolicy(manifest) if expert else Policy.load(bundle, backend=backend)
        try:
            for i, seed in enumerate(seeds):
                results.append(run_virtual(policy, seed, split, config.loop_config(), latency_s=latency_s,  # type: ignore[arg-type]
                                           start_fraction=config.inference.start_fraction,
                                           record_frames=i < frames_for, chunking=chunking))
                _progress(progress, results[-1])
        finally:
            if isinstance(policy, Policy):
                policy.close()
    return Report(source, split, results, settings)


def _progress(progress: Optional[Callable[[str], None]], e: EpisodeResult) -> None:
    if progress is not None:
        progress(f"  episode {e.seed}: {e.instruction!r}: {e.outcome} after {e.seconds:.2f} s, {e.chunks} chunks, "
                 f"{e.clamps} safety clamps")


def check_latency(latency_s: object) -> float:
    """A virtual inference latency 0 ... :data:`MAX_LATENCY_S` s, else :class:`EvaluationError`."""
    if isinstance(latency_s, bool) or not (isinstance(latency_s, (int, float)) and math.isfinite(latency_s)
                                           and 0 <= latency_s <= MAX_LATENCY_S):
        raise EvaluationError(f"latency {latency_s!r} s: expected a number 0 ... {MAX_LATENCY_S:g}")
    return float(latency_s)


def evaluate_cli(*, bundle: Optional[Path], backend: str, daemon: bool, expert: bool, episodes: int, seed: int,
                 split: str, latency_s: Optional[Sequence[float]], out: Optional[Path], name: Optional[str],
                 progress: Optional[Callable[[str], None]], chunking: Sequence[str] = (DEFAULT_CHUNKING,)) -> list[Report]:
    """``xvla-edge sim eval``: run every cell (each ``chunking`` at each latency, the same seeds), print, write the
    files (``NAME.*``; with several cells ``NAME-CHUNKING-LATENCYs.*``)."""
    if bundle is None:
        raise EvaluationError("--bundle is required: export the sim checkpoint first, e.g. xvla-edge export "
                              "\"$(xvla-edge sim checkpoint)\" --domain-id 3 --views 2 --out sim-bundle")
    episodes = check_count("--episodes", episodes, 1, 10_000)
    seed = check_count("--seed", seed, 0, MAX_EVAL_SEED - episodes + 1)
    latencies: list[Optional[float]] = [None] if latency_s is None else [check_latency(x) for x in latency_s]
    cells = [(c, x) for c in dict.fromkeys(chunking) for x in dict.fromkeys(latencies)]
    if not 1 <= len(cells) <= 64:
        raise EvaluationError(f"{len(cells)} cells (chunking x latency): expected 1 ... 64")
    stem = name
    if out is not None and stem is not None and (not stem or "/" in stem or stem.startswith(".") or ".." in stem):
        raise EvaluationError(f"--name {stem!r}: expected a plain file name stem")
    reports = []
    for mode, latency in cells:
        shown = "measured" if latency is None and daemon else f"{VIRTUAL_LATENCY_S if latency is None else latency:g}s"
        if progress is not None and len(cells) > 1:
            progress(f"chunking {mode}, latency {shown}:")
        report = run_episodes(bundle, range(seed, seed + episodes), split=split, backend=backend, daemon=daemon,
                              expert=expert, latency_s=latency, progress=progress, chunking=mode)
        reports.append(report)
        if out is not None:
            cell = (stem or report.source.replace(":", "-")) + (f"-{mode}-{shown}" if len(cells) > 1 else "")
            for path in write(report, out, cell):
                if progress is not None:
                    progress(f"  wrote {path}")
    return reports
