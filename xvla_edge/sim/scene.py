"""The tabletop: coloured blocks on a table, a top-down scene camera, instructions that name a block.

Frame: the arm's base frame in metres (x away from the robot, y to its left, z up; the table top is z = 0).
Blocks (cubes of :data:`BLOCK_SIZE`) lie at random positions in :data:`TABLE_X` × :data:`TABLE_Y`, at least
:data:`MIN_SEPARATION` apart. The camera looks straight down on the square :data:`VIEW_CENTRE` ±
:data:`VIEW_HALF` (orthographic; image up = +x, image right = −y). It sees the blocks, the gripper (a ring
whose radius grows with height: dark when open, orange when closed), the gripper's shadow on the table and
a block the gripper carries.

A wrist camera (:func:`render_wrist`) looks straight down from the gripper over ±:data:`WRIST_HALF`: the
blocks near it and its two fingers, apart by the gripper's opening.

The grasp orientation :data:`GRASP_QUAT` is a top-down approach tilted by :data:`GRASP_TILT_DEG` about the
x axis: a rotation by 150°, not by π, so it differs from its transpose by 60° — a rotation decoded with
rows and columns mixed up is not a grasp (every straight-down orientation is a rotation by π, symmetric,
and would hide such a bug).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (45, 80, 225)}
VERBS: dict[str, tuple[str, ...]] = {"pick": ("pick up", "lift"), "touch": ("touch", "tap")}
TABLE_RGB = (196, 184, 160)
BLOCK_SIZE = 0.04
N_BLOCKS = 3
TABLE_X = (0.30, 0.50)
TABLE_Y = (-0.12, 0.12)
MIN_SEPARATION = 0.08
VIEW_CENTRE = (0.40, 0.0)
VIEW_HALF = 0.18
RENDER_SIDE = 128
WRIST_HALF = 0.06  # the wrist camera sees ±6 cm around the gripper
FINGER_RGB = (60, 60, 60)
GRASP_TILT_DEG = 30.0
_GRASP_ANGLE = np.radians(180.0 - GRASP_TILT_DEG)  # about the x axis
GRASP_QUAT = np.array([np.sin(_GRASP_ANGLE / 2), 0.0, 0.0, np.cos(_GRASP_ANGLE / 2)])  # (x, y, z, w)


@dataclass(frozen=True)
class Scene:
    """Block positions [N, 2] (x, y on the table) of ``colours``; the task: ``verb`` the ``target`` block."""

    colours: tuple[str, ...]
    positions: np.ndarray
    target: int
    verb: str
    phrase: str

    @property
    def instruction(self) -> str:
        return f"{self.phrase} the {self.colours[self.target]} block"

    def with_target(self, target: int) -> Scene:
        """The same layout, another block named."""
        return Scene(self.colours, self.positions, target, self.verb, self.phrase)

    def in_colour_order(self) -> Scene:
        """The same positions with the colours in :data:`COLOURS` order by increasing y (the task unchanged
        but for which colour it names)."""
        order = np.argsort(self.positions[:, 1])
        colours = tuple(list(COLOURS)[:len(self.colours)])
        return Scene(colours, self.positions[order], self.target, self.verb, self.phrase)

    def with_task(self, target: int, rng: np.random.Generator) -> Scene:
        """The same layout, block ``target`` named with a random verb and phrase."""
        verb, phrase = random_verb(rng)
        return Scene(self.colours, self.positions, target, verb, phrase)


def random_verb(rng: np.random.Generator) -> tuple[str, str]:
    """(verb, phrase) drawn from :data:`VERBS`."""
    verb = str(rng.choice(list(VERBS)))
    return verb, str(rng.choice(VERBS[verb]))


def random_scene(rng: np.random.Generator, n_blocks: int = N_BLOCKS) -> Scene:
    """Blocks of ``n_blocks`` different colours at separated random positions; a random verb and target."""
    if not 1 <= n_blocks <= len(COLOURS):
        raise ValueError(f"n_blocks = {n_blocks}: expected 1 ... {len(COLOURS)}")
    colours = tuple(rng.permutation(list(COLOURS))[:n_blocks])
    positions: list[np.ndarray] = []
    while len(positions) < n_blocks:
        p = np.array([rng.uniform(*TABLE_X), rng.uniform(*TABLE_Y)])
        if all(np.linalg.norm(p - q) >= MIN_SEPARATION for q in positions):
            positions.append(p)
    verb, phrase = random_verb(rng)
    return Scene(colours, np.array(positions), int(rng.integers(n_blocks)), verb, phrase)


def to_pixels(xy: np.ndarray, side: int = RENDER_SIDE, centre: tuple[float, float] = VIEW_CENTRE,
              half: float = VIEW_HALF) -> np.ndarray:
    """Table coordinates [..., 2] → image (column, row) [..., 2] in pixels of a view of ``centre`` ± ``half``."""
    xy = np.asarray(xy, float)
    scale = side / (2 * half)
    col = (centre[1] + half - xy[..., 1]) * scale
    row = (centre[0] + half - xy[..., 0]) * scale
    return np.stack([col, row], axis=-1)


def render(scene: Scene, blocks: np.ndarray, ee: np.ndarray, gripper: float, held: int | None,
           side: int = RENDER_SIDE) -> np.ndarray:
    """The camera image [side, side, 3] uint8: ``blocks`` [N, 3] block centres, ``ee`` the gripper position,
    ``gripper`` its opening (0 closed ... 1 open), ``held`` the carried block's index or None."""
    image = Image.new("RGB", (side, side), TABLE_RGB)
    draw = ImageDraw.Draw(image)
    scale = side / (2 * VIEW_HALF)
    order = sorted(range(len(blocks)), key=lambda i: blocks[i, 2])  # higher blocks drawn last
    shadow = to_pixels(ee[:2], side)
    r = 0.008 * scale
    draw.ellipse([shadow[0] - r, shadow[1] - r, shadow[0] + r, shadow[1] + r], fill=(90, 84, 72))
    for i in order:
        c = to_pixels(blocks[i, :2], side)
        half = BLOCK_SIZE / 2 * scale * (1 + 2.0 * max(blocks[i, 2] - BLOCK_SIZE / 2, 0.0))
        draw.rectangle([c[0] - half, c[1] - half, c[0] + half, c[1] + half], fill=COLOURS[scene.colours[i]],
                       outline=(30, 30, 30) if i == held else None)
    ring = (0.010 + 0.08 * max(float(ee[2]), 0.0)) * scale
    p = to_pixels(ee[:2], side)
    colour = (20, 20, 20) if gripper > 0.5 else (255, 150, 0)
    draw.ellipse([p[0] - ring, p[1] - ring, p[0] + ring, p[1] + ring], outline=colour, width=max(2, side // 48))
    return np.asarray(image)


def render_wrist(scene: Scene, blocks: np.ndarray, ee: np.ndarray, gripper: float, held: int | None,
                 side: int = RENDER_SIDE) -> np.ndarray:
    """The wrist camera's image [side, side, 3] uint8: straight down from the gripper, ±:data:`WRIST_HALF`
    around it (same axes as the scene camera), with the two fingers at the centre, apart by the opening."""
    image = Image.new("RGB", (side, side), TABLE_RGB)
    draw = ImageDraw.Draw(image)
    centre = (float(ee[0]), float(ee[1]))
    scale = side / (2 * WRIST_HALF)
    for i in sorted(range(len(blocks)), key=lambda i: blocks[i, 2]):
        c = to_pixels(blocks[i, :2], side, centre, WRIST_HALF)
        half = BLOCK_SIZE / 2 * scale
        if i != held and (abs(c - side / 2) > side / 2 + half).any():
            continue
        draw.rectangle([c[0] - half, c[1] - half, c[0] + half, c[1] + half], fill=COLOURS[scene.colours[i]])
    gap = (0.012 + 0.03 * float(np.clip(gripper, 0.0, 1.0))) * scale / 2
    w, h, m = max(2, side // 32), side // 6, side / 2
    for sign in (-1, 1):
        x = m + sign * gap
        draw.rectangle([x - w / 2, m - h / 2, x + w / 2, m + h / 2], fill=FINGER_RGB)
    return np.asarray(image)
