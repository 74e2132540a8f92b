"""Task observations as a calibration set: what ``xvla-edge quantize`` calibrates INT8 bundles on."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.sets import load_set
from xvla_edge.sim.calibration_sets import write_calibration_set
from xvla_edge.sim.evaluate import EvaluationError


def test_the_set_holds_both_views_instructions_and_proprio(tmp_path):
    path = write_calibration_set(tmp_path / "set", count=20, seed=40)
    cset = load_set(path)
    assert sorted(cset.images) == [0, 1] and cset.images[0].shape == (20, 128, 128, 3)
    assert cset.view_mask[:, :2].all() and not cset.view_mask[:, 2].any()
    assert cset.proprio.shape == (20, 20) and np.all(cset.domain_ids == 3)
    assert all(text.endswith(" block") for text in cset.instructions)
    assert not np.array_equal(cset.images[0][0], cset.images[0][-1])


def test_bad_counts_are_named(tmp_path):
    with pytest.raises(EvaluationError, match="--count = 0"):
        write_calibration_set(tmp_path / "set", count=0)
