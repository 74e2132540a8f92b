"""The validation kit: one printer of refused values (short, bounded in cost, as the file writes them), kinds
that do not mistake a bool for an integer or NaN for a number, fields that say what they allow, and tables that
collect every problem by key path instead of raising."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xvla.validation import Field, Problem, Problems, Table, is_kind, show


@pytest.mark.parametrize("value, shown", [
    (True, "true"), (None, "null"), ("rows", '"rows"'), (3, "3"), (-1.5, "-1.5"), (math.nan, "nan"),
    ([1, "a", False], '[1, "a", false]'), ({}, "{}"), ([], "[]"), ({"sha256": "00", "bytes": 1}, '{"sha256": "00", "bytes": 1}'),
    (10**400, "an integer of 1329 bits"), (np.zeros((2, 3), np.float32), "an array of shape [2, 3] and dtype float32"),
    ("caf\xe9\n", '"caf\\u00e9\\n"'), (b"\x00ab", "b'\\x00ab'"),
])
def test_show_writes_values_as_a_json_file_would(value, shown):
    assert show(value) == shown


def test_show_writes_tables_as_toml_when_asked():
    assert show({"lower": [0, 0, 0], "upper": [1, 1, 1]}, toml=True) == "{ lower = [0, 0, 0], upper = [1, 1, 1] }"
    assert show({}, toml=True) == "{}"


def test_show_cuts_long_values_at_a_cost_bounded_by_the_limit():
    assert show("x" * 1000) == '"' + "x" * 76 + "..." and len(show(list(range(10**3)))) == 80
    assert show([1, 2, 3], limit=5) == "[1..."
    class Counted(list):  # counts the items show() reads
        taken = 0

        def __iter__(self):
            for item in super().__iter__():
                Counted.taken += 1
                yield item

    huge, nested = Counted(range(10**6)), []
    for _ in range(100_000):  # deeper than the recursion limit
        nested = [nested]
    assert show(huge).endswith("...") and show(nested) == "[" * 77 + "..."
    assert 0 < Counted.taken <= 80  # bounded by the limit, not by the million items


@pytest.mark.parametrize("value, kind, ok", [
    (True, int, False), (True, bool, True), (1, float, True), (math.inf, float, False), (math.nan, float, False),
    (2**63, int, False), (2**63 - 1, int, True), ("1", int, False), (1, (int, str), True), ("a", (int, str), True),
    (1.0, int, False), ([], list, True), ({}, dict, True),
])
def test_kinds(value, kind, ok):
    assert is_kind(value, kind) is ok


def test_fields_say_what_they_allow_and_refuse_by_name():
    assert Field(int, low=1, high=1024).words() == "an integer 1 ... 1024"
    assert Field(float, low=0).words() == "a finite number >= 0" and Field(int, high=9).words() == "an integer <= 9"
    assert Field(str, choices=("fp32", "fp16")).words() == 'one of "fp32", "fp16"'
    assert Field(int, expected="a port").words() == "a port" and Field((int, str)).words() == "an integer or a string"
    field = Field(int, choices=(1, 2))
    assert field.accepts(2) and not field.accepts(True) and not field.accepts(3)
    assert Field(float, check=lambda x: x > 0).refusal("rate", 0) == Problem("rate", "expected a finite number", "0")
    assert Field(int, low=1).refusal("n", 1) is None
    assert str(Problem("limits.max_active", "expected an integer >= 1", "0")) == \
        "limits.max_active = 0: expected an integer >= 1"
    assert str(Problem("[bundle]", "missing: expected a table")) == "[bundle]: missing: expected a table"


def test_a_table_collects_every_problem_with_its_key_path():
    problems = Problems("robot.toml")
    root = Table(problems, "", {"level": "loud", "rate": 2, "action": {"dim": True, "mode": "ee6d"}, "extra": 1})
    assert root.take("level", str, "info", choices=("info", "debug")) == "info"
    assert root.take("rate", float, required=True) == 2.0 and isinstance(root.take("rate", float), float)
    assert root.take("name", str, "x", required=True) == "x"
    action = root.table("action")
    assert action.take("dim", int, low=1, high=256) is None and action.take("mode", str) == "ee6d"
    action.finish()
    root.table("sampler", required=True, expected="an object")
    root.finish({"extra": "only with the sim driver"})
    assert problems.lines() == [
        'robot.toml: level = "loud": expected one of "info", "debug"',
        "robot.toml: name: missing: expected a string",
        "robot.toml: action.dim = true: expected an integer 1 ... 256",
        "robot.toml: sampler: missing: expected an object",
        "robot.toml: extra: not used here: only with the sim driver",
    ] and len(problems) == 5


def test_unknown_keys_get_a_did_you_mean():
    problems = Problems()
    t = Table(problems, "arm.", {"drivr": "sim", "zzz": 1})
    t.take("driver", str)
    t.finish()
    assert problems.lines() == ['arm.drivr: unknown key (did you mean "driver"?)', "arm.zzz: unknown key (known keys: driver)"]
    t.report("zzz", "expected nothing")
    t.report("[safety].workspaces", "expected one box per arm")
    assert problems.lines()[-2:] == ["arm.zzz = 1: expected nothing", "[safety].workspaces: expected one box per arm"]


def test_a_reader_names_its_sub_tables_its_own_way():
    """robot.toml names a sub-table ``[arm.sim]``: a subclass overriding :meth:`Table.child`, whose sub-tables are
    of its own class, and whose problems show values as TOML writes them."""

    class TomlTable(Table):
        def child(self, name: str) -> str:
            return f"[{self.where[1:-2]}.{name}]." if self.where else f"[{name}]."

    problems = Problems("robot.toml", toml=True)
    sim = TomlTable(problems, "", {"arm": {"sim": {"n_arms": 0, "box": {"lower": [0, 0]}}}}).table("arm").table("sim")
    assert isinstance(sim, TomlTable) and sim.field("n_arms", Field(int, low=1, high=4), 1) == 1
    assert sim.take("box", dict, check=lambda box: "upper" in box, expected="lower and upper") is None
    assert problems.lines() == ["robot.toml: [arm.sim].n_arms = 0: expected an integer 1 ... 4",
                                "robot.toml: [arm.sim].box = { lower = [0, 0] }: expected lower and upper"]
