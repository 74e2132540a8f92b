"""drivers.registry: lookup by name, the unknown-name error, each entry's factory building the arm class it
names (picklable, for the control-loop process), the constructor refusals traced back to their keys."""

from __future__ import annotations

import functools
import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any, Dict

import pytest

from drivers import registry
from drivers.arm import SPACES, ArmConfigError, Box, JointLimit
from drivers.control.safety import SafetyLimits
from drivers.dynamixel.arm import DynamixelArm
from drivers.dynamixel.joint_offsets import ArmCalibration
from drivers.emulation.sim_arm import SimArm
from drivers.feetech.arm import FeetechArm
from drivers.feetech.calibration import load_calibration as load_feetech
from drivers.piper.arm import PiperArm
from drivers.xvla_serial.arm import XvlaSerialArm
from tests.support.piper_bus import NEEDS_CAN
from tests.support.so101 import write_calibration

CALIBRATION = {"robot_id": "koch", "gripper": {"motor_id": 3, "closed": 2048, "open": 2900},
               "joints": [{"name": "shoulder", "motor_id": 1, "lower": -1.5, "upper": 1.5, "max_velocity": 3.0},
                          {"name": "elbow", "motor_id": 2, "lower": -1.0, "upper": 1.0, "max_velocity": 3.0}]}


def samples(tmp_path: Path) -> Dict[str, Dict[str, Any]]:
    """Validated values for every driver, as the daemon's config passes them (None: not given)."""
    (tmp_path / "koch.json").write_text(json.dumps(CALIBRATION))
    return {
        "sim": {"sim": {"n_arms": 2, "time_constant": None, "initial_position": [0.1, 0.0, 0.2]}},
        "xvla-serial": {"port": "loop://", "baud": None, "timeout_ms": 300},
        "dynamixel": {"port": "loop://", "baud": 57600, "timeout_ms": None, "calibration": tmp_path / "koch.json"},
        "feetech": {"port": "loop://", "baud": None, "calibration": write_calibration(tmp_path),
                    "max_joint_velocity": [2.0, 2.0, 3.0, 3.0, 4.0], "gripper_open": "range_min"},
        "piper": {"interface": "socketcan", "channel": "can0", "timeout_ms": 200, "speed_percent": None,
                  "gripper_open_mm": None, "gripper_effort": 2.0},
    }


def test_lookup_by_name():
    assert registry.names() == ("sim", "xvla-serial", "dynamixel", "feetech", "piper")
    assert [registry.lookup(n).arm for n in registry.names()] == [SimArm, XvlaSerialArm, DynamixelArm, FeetechArm,
                                                                   PiperArm]
    assert registry.lookup("dynamixel").spaces == ("joint",) and registry.lookup("sim").spaces == ("ee", "joint")
    for driver in registry.DRIVERS.values():
        assert set(driver.spaces) <= set(SPACES) and len(set(driver.keys)) == len(driver.keys), driver.name


def test_an_unknown_name_lists_the_available_drivers():
    with pytest.raises(ArmConfigError,
                       match=r"^unknown driver 'x'; available: sim, xvla-serial, dynamixel, feetech, piper$"):
        registry.lookup("x")


def test_each_factory_is_picklable_and_builds_the_arm_class_it_names(tmp_path):
    values = samples(tmp_path)
    assert set(values) == set(registry.names())  # a new driver needs a sample here
    for name, driver in registry.DRIVERS.items():
        factory = pickle.loads(pickle.dumps(driver.factory(driver.spaces[0], values[name], SafetyLimits())))
        assert isinstance(factory, functools.partial) and factory.func is driver.arm, name
        if name == "piper" and importlib.util.find_spec("can") is None:  # an install without the [piper] extra
            with pytest.raises(ArmConfigError, match=r"python-can is not installed; install the 'piper' extra"):
                factory()
            continue
        assert isinstance(factory(), driver.arm), name  # no I/O: ports open on connect


def test_the_sim_factory_makes_the_configured_arm(tmp_path):
    sim = registry.lookup("sim")
    ee = sim.factory("ee", samples(tmp_path)["sim"], SafetyLimits())()
    caps = ee.connect()
    assert (caps.space, caps.n_arms) == ("ee", 2) and ee.read_state().position[0].tolist() == [0.1, 0.0, 0.2]
    joints = (JointLimit(-1, 1, 2), JointLimit(-2, 2, 1))
    values = {"sim": {"n_arms": 1, "time_constant": 0.05, "initial_position": None}}
    caps = sim.factory("joint", values, SafetyLimits(joint_limits=joints))().connect()
    assert (caps.space, caps.n_arms, caps.joint_limits) == ("joint", 1, joints)


def test_the_factories_pass_only_given_values_under_the_constructors_names(tmp_path):
    values = samples(tmp_path)
    serial = registry.lookup("xvla-serial").factory("ee", values["xvla-serial"], SafetyLimits())
    assert (serial.args, serial.keywords) == (("loop://",), {"space": "ee", "timeout_ms": 300})
    dxl = registry.lookup("dynamixel").factory("joint", values["dynamixel"], SafetyLimits())
    assert (dxl.args, dxl.keywords) == (("loop://", ArmCalibration.load(tmp_path / "koch.json")), {"baudrate": 57600})
    ft = registry.lookup("feetech").factory("joint", values["feetech"], SafetyLimits())
    want = load_feetech(tmp_path / "so101_follower.json", max_velocity=[2.0, 2.0, 3.0, 3.0, 4.0],
                        gripper_open="range_min")
    assert (ft.args, ft.keywords) == (("loop://", want), {})
    arm = ft()
    assert arm.calibration.gripper.open_end == "range_min" and arm.bus.baudrate == 1_000_000
    piper = registry.lookup("piper").factory("joint", values["piper"], SafetyLimits())
    assert (piper.args, piper.keywords) == (("can0",), {"space": "joint", "interface": "socketcan", "timeout_ms": 200,
                                                        "gripper_effort": 2.0})


def test_a_constructor_refusal_names_its_key():
    dxl, serial = registry.lookup("dynamixel"), registry.lookup("xvla-serial")
    assert dxl.refused_key(ArmConfigError("DynamixelArm.watchdog_ms: expected 20..2540, got 3000")) == "timeout_ms"
    assert serial.refused_key(ArmConfigError("XvlaSerialArm.timeout_ms: expected 0..65535")) == "timeout_ms"
    assert serial.refused_key(ArmConfigError("XvlaSerialArm.space: expected 'ee' or 'joint'")) == "space"
    assert serial.refused_key(ArmConfigError("XvlaSerialArm: need reply_timeout_s > 0")) is None


def test_checks_that_involve_the_safety_limits(tmp_path):
    sim = registry.lookup("sim")
    one_arm = {"sim": {"n_arms": 1, "time_constant": None, "initial_position": None}}
    two_boxes = SafetyLimits(workspaces=(Box((0, 0, 0), (1, 1, 1)), Box((0, 0, 0), (1, 1, 1))))
    assert list(sim.check("ee", one_arm, SafetyLimits())) == []
    assert [where for where, _ in sim.check("joint", one_arm, two_boxes)] == ["[safety].workspaces", "space"]
    dxl = registry.lookup("dynamixel")
    values = samples(tmp_path)["dynamixel"]
    assert list(dxl.check("joint", values, SafetyLimits())) == []
    assert list(dxl.check("joint", values, SafetyLimits(joint_limits=(JointLimit(-1, 1, 2),)))) == [
        ("[safety].joint_limits", "1 entries, but the calibration koch.json has 2 joints")]
    (tmp_path / "koch.json").write_text("{}")
    assert [where for where, _ in dxl.check("joint", values, SafetyLimits())] == ["calibration"]
    ft = registry.lookup("feetech")
    values = samples(tmp_path)["feetech"]
    assert list(ft.check("joint", values, SafetyLimits())) == []
    assert list(ft.check("joint", values, SafetyLimits(joint_limits=(JointLimit(-1, 1, 2),)))) == [
        ("[safety].joint_limits", "1 entries, but the calibration so101_follower.json has 5 joints")]
    assert [w for w, _ in ft.check("joint", {**values, "max_joint_velocity": [1.0, 2.0]}, SafetyLimits())] == [
        "max_joint_velocity"]
    (tmp_path / "so101_follower.json").write_text('{"gripper": {"id": 6}}')
    assert [w for w, _ in ft.check("joint", values, SafetyLimits())] == ["calibration"]


@pytest.mark.parametrize("name, key, accepted, refused", [
    ("xvla-serial", "baud", [50, 9600, 921_600, 4_000_000], [0, -1, 123_456, 4_500_000, 2**31, 10**12]),
    ("dynamixel", "baud", [9600, 57600, 1_000_000, 4_500_000], [0, 921_600, 10**12]),
    ("xvla-serial", "timeout_ms", [0, 65535], [-1, 65536, 2**63]),
    ("dynamixel", "timeout_ms", [20, 2540], [0, -20, 2541, 10**6]),
    ("feetech", "baud", [19_200, 115_200, 1_000_000], [0, 9600, 2_000_000, 10**12]),
    pytest.param("piper", "timeout_ms", [20, 1000], [0, 19, 1001, 2**63], marks=NEEDS_CAN),
    pytest.param("piper", "speed_percent", [1, 100], [0, -1, 101], marks=NEEDS_CAN),
    pytest.param("piper", "gripper_open_mm", [1, 70.0, 150], [0, 0.5, 150.5, 1e300], marks=NEEDS_CAN),
    pytest.param("piper", "gripper_effort", [0.1, 5], [0, 5.01, -1], marks=NEEDS_CAN),
])
def test_an_option_and_its_constructor_agree_on_the_range(tmp_path, name, key, accepted, refused):
    """What robot.toml's check accepts the arm's constructor takes; what it refuses the constructor refuses too
    (by the same key), so a value cannot reach pyserial (a 1e12 baud rate was an OverflowError at start-up)."""
    driver = registry.lookup(name)
    option = next(o for o in driver.options if o.name == key)
    values = samples(tmp_path)[name]
    for value in accepted:
        assert option.check(value), value
        assert isinstance(driver.factory(driver.spaces[0], {**values, key: value}, SafetyLimits())(), driver.arm)
    for value in refused:
        assert not option.check(value), value
        with pytest.raises(ArmConfigError) as info:
            driver.factory(driver.spaces[0], {**values, key: value}, SafetyLimits())()
        assert driver.refused_key(info.value) == key and f"got {value}" in str(info.value), info.value


@pytest.mark.parametrize("keywords, expected", [
    ({"n_arms": 0}, "SimArm.n_arms: expected 1 ... 4, got 0"),
    ({"n_arms": 10**9}, "SimArm.n_arms: expected 1 ... 4, got 1000000000"),
    ({"time_constant": 1e300}, "SimArm.time_constant: expected seconds in (0, 10], got 1e+300"),
])
def test_the_sim_arm_refuses_what_it_cannot_simulate(keywords, expected):
    with pytest.raises(ArmConfigError) as info:
        SimArm(**keywords)
    assert str(info.value).startswith(expected)
    sim_options = {o.name: o for o in registry.lookup("sim").options[0].table}
    for key, value in keywords.items():
        assert not sim_options[key].check(value)


def test_robot_toml_starts_the_sim_arm_within_the_physical_range():
    """The sim arm itself starts anywhere (tests simulate a controller reporting no finite pose with it)."""
    check = next(o for o in registry.lookup("sim").options[0].table if o.name == "initial_position").check
    assert check([10, -10, 0.3]) and check([0, 0, 0])
    for value in ([10.001, 0, 0.3], [1e300, 0, 0.3], [float("nan"), 0, 0], [float("inf"), 0, 0], [0, 0], [0, 0, 0, 0],
                  [True, 0, 0], ["0", 0, 0]):
        assert not check(value), value
