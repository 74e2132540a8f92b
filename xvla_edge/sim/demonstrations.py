"""Demonstrations of the scripted expert on the simulated arm, as X-VLA training samples.

A layout (blocks and gripper start, from a seed) is demonstrated once per block, each time with that block
named (and a verb drawn for it): the picture alone then never tells which block to go to, so the policy
has to read the instruction — with one task per layout a small network learns to recognise training
layouts instead, and on new ones goes to whichever block it associates with the picture. Every
:data:`ORDERED_EVERY`-th layout has its colours in a fixed order across the table (red, green, blue by
increasing y): there the colour word alone says which side to go to, a signal a network trained from
scratch picks up at once; matching the word to the block's colour in the picture — the only thing that
works on the other layouts — builds on the word being read.

One demonstration: the expert is stepped every :data:`DT` (the chunk spacing: one chunk of
:data:`CHUNK_LENGTH` actions spans :data:`CHUNK_SECONDS`), its commands drive a
:class:`drivers.emulation.sim_arm.SimArm` on a virtual clock, and the table follows the arm's measured state. In a
fraction of the demonstrations the commanded point is kicked off its path now and then (a few centimetres,
while the gripper is open), so the data show the way back from states the expert alone never visits.

Every :data:`SAMPLE_EVERY`-th step is one sample: the scene and wrist camera images (resized to the model's
side, uint8; the resize is the first step of the checkpoint's own preprocessing, so the rest happens at
training), the instruction, the proprio (measured pose: position, rot6d, gripper) and the label chunk — the
expert's next :data:`CHUNK_LENGTH` commands from that step (:func:`xvla_edge.sim.expert.plan`) in the ee6d
layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from drivers.arm import Box, Target
from drivers.emulation.sim_arm import SimArm
from xvla.rotations import quat_to_rot6d
from xvla_edge.sim import expert
from xvla_edge.sim.scene import GRASP_QUAT, N_BLOCKS, Scene, random_scene
from xvla_edge.sim.world import Tabletop

DOMAIN_ID = 3  # the domain the sim policy is trained into (libero-franka's row: 1 s chunks, one arm)
CHUNK_SECONDS = 1.0
CHUNK_LENGTH = 30
DT = CHUNK_SECONDS / CHUNK_LENGTH
ACTION_DIM = 20
VIEWS = 2  # scene camera (slot 0) and wrist camera (slot 1)
TIME_CONSTANT = 0.03  # the simulated arm's first-order lag (s), also given to the emulator in the daemon path
MAX_LINEAR_SPEED = 1.0  # the simulated arm's own speed cap (m/s)
WORKSPACE = Box((0.2, -0.25, 0.005), (0.6, 0.25, 0.35))
EPISODE_SECONDS = 6.0
AFTER_SUCCESS_S = 0.5  # steps recorded after success, so the policy learns to stay
KICKED_FRACTION = 0.6
KICK_RATE_HZ = 0.6
ORDERED_EVERY = 3  # layout seeds divisible by this have their colours in COLOURS order by y
SAMPLE_EVERY = 2  # neighbouring steps are near-duplicates; every second one is kept


def start_pose(rng: np.random.Generator) -> np.ndarray:
    """A random start position of the gripper above the table."""
    return np.array([rng.uniform(0.30, 0.50), rng.uniform(-0.12, 0.12), rng.uniform(0.12, 0.25)])


def ee6d(position: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """[n, 20] ee6d rows (position, rot6d of the grasp orientation, gripper; second arm zero)."""
    n = len(position)
    out = np.zeros((n, ACTION_DIM), np.float32)
    out[:, :3] = position
    out[:, 3:9] = quat_to_rot6d(GRASP_QUAT)
    out[:, 9] = gripper
    return out


def sim_arm(position: np.ndarray, clock: object) -> SimArm:
    """The simulated arm at ``position`` in the grasp orientation, gripper open, on ``clock``."""
    return SimArm(space="ee", workspaces=(WORKSPACE,), initial_position=position, initial_quaternion=GRASP_QUAT,
                  initial_gripper=1.0, time_constant=TIME_CONSTANT, max_linear_speed=MAX_LINEAR_SPEED,
                  clock=clock)  # type: ignore[arg-type]


@dataclass
class Samples:
    """Training samples: images [N, VIEWS, S, S, 3] uint8, instruction [N] (index into ``instructions``),
    proprio [N, 20] float32, actions [N, 30, 20] float32, order [N] (the sample's index in its
    demonstration); ``episodes`` and ``successes`` counted."""

    images: np.ndarray
    instruction: np.ndarray
    instructions: list[str]
    proprio: np.ndarray
    actions: np.ndarray
    order: np.ndarray
    episodes: int
    successes: int


def episode(seed: int, image_side: int, target: int | None = None, sample_every: int = 1
            ) -> tuple[Scene, list[np.ndarray], list[np.ndarray], list[np.ndarray], bool]:
    """One demonstration: (scene, images, proprio rows, label chunks, success) of layout ``seed``; its own
    task, or block ``target`` named (verb and kicks then drawn from (seed, target), colours ordered when
    ``seed`` is a multiple of :data:`ORDERED_EVERY`); a sample every ``sample_every`` steps."""
    rng = np.random.default_rng(seed)
    scene = random_scene(rng)
    start = start_pose(rng)
    if target is not None:
        rng = np.random.default_rng([seed, target])
        scene = (scene.in_colour_order() if seed % ORDERED_EVERY == 0 else scene).with_task(target, rng)
    now = [0.0]
    arm = sim_arm(start, lambda: now[0])
    arm.connect()
    table = Tabletop(scene)
    state = arm.read_state()
    cmd = expert.Command(state.position[0].copy())
    kicked = rng.random() < KICKED_FRACTION
    images, proprio, labels = [], [], []
    end = EPISODE_SECONDS
    step = 0
    while now[0] < end:
        state = arm.read_state()
        table.update(state.position[0], state.quaternion[0], float(state.gripper[0]))
        if table.outcome == "success" and end > now[0] + AFTER_SUCCESS_S:
            end = now[0] + AFTER_SUCCESS_S
        if kicked and cmd.gripper >= 1.0 and table.held is None and rng.random() < KICK_RATE_HZ * DT:
            cmd = expert.Command(cmd.position + rng.uniform([-0.03, -0.03, -0.02], [0.03, 0.03, 0.02]), 0.0, 1.0)
            cmd.position[2] = max(cmd.position[2], expert.GRASP_Z)
        if step % sample_every == 0:
            views = [Image.fromarray(v).resize((image_side, image_side), Image.BICUBIC) for v in table.images()]
            positions, grippers = expert.plan(table, cmd, DT, CHUNK_LENGTH)
            images.append(np.stack([np.asarray(view) for view in views]))
            row = np.zeros(ACTION_DIM, np.float32)
            row[:3], row[3:9], row[9] = state.position[0], quat_to_rot6d(state.quaternion[0]), state.gripper[0]
            proprio.append(row)
            labels.append(ee6d(positions, grippers))
        step += 1
        cmd = expert.step(table, cmd, DT)
        arm.send_target(Target.ee(cmd.position[None], GRASP_QUAT[None], [cmd.gripper]))
        now[0] += DT
    return scene, images, proprio, labels, table.outcome == "success"


def collect(seeds: range, image_side: int) -> Samples:
    """Samples of the layouts with these seeds, each demonstrated once per block (every
    :data:`SAMPLE_EVERY`-th step)."""
    images, instr, proprio, actions, order, names = [], [], [], [], [], {}
    successes = episodes = 0
    for seed in seeds:
        for target in range(N_BLOCKS):
            scene, ims, props, labels, ok = episode(seed, image_side, target, SAMPLE_EVERY)
            episodes += 1
            successes += ok
            k = names.setdefault(scene.instruction, len(names))
            images += ims
            proprio += props
            actions += labels
            instr += [k] * len(ims)
            order += range(len(ims))
    return Samples(np.stack(images), np.array(instr), list(names), np.stack(proprio), np.stack(actions),
                   np.array(order), episodes, successes)
