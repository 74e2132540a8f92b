"""The simulated table: deterministic scenes, the camera, and the physical grasp / success rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from xvla.rotations import matrix_to_rot6d, rot6d_to_matrix
from xvla_edge.sim.scene import (BLOCK_SIZE, COLOURS, GRASP_QUAT, MIN_SEPARATION, TABLE_X, TABLE_Y, Scene,
                                 random_scene, render, to_pixels)
from xvla_edge.sim.world import GRASP_MAX_ANGLE_DEG, LIFTED_Z, Tabletop, orientation_error_deg

OPEN, CLOSED = 1.0, 0.0


def scene(verb: str = "pick", target: int = 0) -> Scene:
    positions = np.array([[0.35, -0.05], [0.45, 0.05], [0.40, 0.10]])
    return Scene(("red", "green", "blue"), positions, target, verb, "pick up" if verb == "pick" else "touch")


def test_scenes_follow_their_seed_and_keep_blocks_apart_on_the_table():
    a, b = random_scene(np.random.default_rng(7)), random_scene(np.random.default_rng(7))
    assert a.instruction == b.instruction and np.array_equal(a.positions, b.positions)
    for seed in range(50):
        s = random_scene(np.random.default_rng(seed))
        assert sorted(s.colours) == sorted(COLOURS)
        assert np.all((s.positions[:, 0] >= TABLE_X[0]) & (s.positions[:, 0] <= TABLE_X[1]))
        assert np.all((s.positions[:, 1] >= TABLE_Y[0]) & (s.positions[:, 1] <= TABLE_Y[1]))
        gaps = np.linalg.norm(s.positions[:, None] - s.positions[None], axis=-1)[np.triu_indices(3, 1)]
        assert gaps.min() >= MIN_SEPARATION
        assert s.instruction.endswith(f"the {s.colours[s.target]} block")


def test_the_camera_shows_each_block_in_its_colour_where_it_lies():
    s = scene()
    table = Tabletop(s)
    image = render(s, table.blocks, np.array([0.40, -0.10, 0.2]), OPEN, None)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    for colour, xy in zip(s.colours, s.positions):
        col, row = to_pixels(xy).round().astype(int)
        assert tuple(image[row, col]) == COLOURS[colour]
    # image up is +x (away from the robot), image right is -y
    assert to_pixels(np.array([0.5, 0.0]))[1] < to_pixels(np.array([0.3, 0.0]))[1]
    assert to_pixels(np.array([0.4, -0.1]))[0] > to_pixels(np.array([0.4, 0.1]))[0]


def test_a_rotation_decoded_wrongly_is_not_a_grasp():
    """A transposed matrix, or rot6d written in one layout and read in the other, must miss the grasp
    orientation by more than its tolerance (a straight-down grasp would be its own transpose)."""
    r = Rotation.from_quat(GRASP_QUAT).as_matrix()
    assert orientation_error_deg(Rotation.from_matrix(r.T).as_quat()) > 2 * GRASP_MAX_ANGLE_DEG
    for written, read in (("rows", "columns"), ("columns", "rows")):
        wrong = rot6d_to_matrix(matrix_to_rot6d(r, written), read)
        assert orientation_error_deg(Rotation.from_matrix(wrong).as_quat()) > 2 * GRASP_MAX_ANGLE_DEG


def at(table: Tabletop, xyz, gripper: float, quat=GRASP_QUAT) -> None:
    table.update(np.array(xyz, float), np.asarray(quat), gripper)


def test_closing_at_the_named_block_grasps_it_and_lifting_it_succeeds():
    table = Tabletop(scene("pick"))
    block = [0.35, -0.05]
    at(table, [*block, 0.10], OPEN)
    at(table, [*block, 0.02], OPEN)
    at(table, [*block, 0.02], CLOSED)
    assert table.held == 0 and table.outcome is None  # pick: grasped but not lifted yet
    at(table, [*block, LIFTED_Z - 0.01], CLOSED)
    assert table.outcome is None and table.blocks[0, 2] == pytest.approx(LIFTED_Z - 0.01)
    at(table, [*block, LIFTED_Z + 0.01], CLOSED)
    assert table.outcome == "success"


def test_touch_succeeds_at_the_grasp_and_a_wrong_block_fails():
    table = Tabletop(scene("touch", target=1))
    at(table, [0.45, 0.05, 0.02], OPEN)
    at(table, [0.45, 0.05, 0.02], CLOSED)
    assert table.outcome == "success"
    wrong = Tabletop(scene("touch", target=1))
    at(wrong, [0.35, -0.05, 0.02], OPEN)
    at(wrong, [0.35, -0.05, 0.02], CLOSED)
    assert wrong.held == 0 and wrong.outcome == "wrong_block"


@pytest.mark.parametrize("xyz, quat, why", [
    ([0.35 + 0.025, -0.05, 0.02], GRASP_QUAT, "too far from the block"),
    ([0.35, -0.05, 0.05], GRASP_QUAT, "too high"),
    ([0.35, -0.05, 0.02], [0.0, 0.0, 0.0, 1.0], "gripper pointing up"),
])
def test_a_closing_that_does_not_reach_the_block_grasps_nothing(xyz, quat, why):
    table = Tabletop(scene("touch"))
    at(table, xyz, OPEN, quat)
    at(table, xyz, CLOSED, quat)
    assert table.held is None and table.outcome is None, why


def test_a_closed_gripper_moved_onto_a_block_does_not_grasp_it_and_opening_drops_a_carried_block():
    table = Tabletop(scene("pick"))
    at(table, [0.40, 0.0, 0.02], CLOSED)  # closed away from the blocks
    at(table, [0.35, -0.05, 0.02], CLOSED)  # then moved onto one, still closed
    assert table.held is None
    at(table, [0.35, -0.05, 0.02], OPEN)
    at(table, [0.35, -0.05, 0.02], CLOSED)
    at(table, [0.38, -0.02, 0.06], CLOSED)
    assert table.held == 0 and np.allclose(table.blocks[0], [0.38, -0.02, 0.06])
    at(table, [0.38, -0.02, 0.06], OPEN)
    assert table.held is None and np.allclose(table.blocks[0], [0.38, -0.02, BLOCK_SIZE / 2])


def test_colour_order_keeps_the_positions_and_orders_the_colours_across_the_table():
    s = random_scene(np.random.default_rng(3)).with_target(1)
    ordered = s.in_colour_order()
    assert sorted(map(tuple, ordered.positions)) == sorted(map(tuple, s.positions))
    assert ordered.colours == tuple(COLOURS) and np.all(np.diff(ordered.positions[:, 1]) > 0)
    assert ordered.instruction == f"{s.phrase} the {tuple(COLOURS)[1]} block"
