"""The arm drivers by name: each one's arm class, the ``[arm]`` keys of ``robot.toml`` it takes, its factory.

The daemon validates ``[arm]`` from these entries and builds the arm from them, so adding an arm means adding
a :class:`Driver` to :data:`DRIVERS`. An :class:`Option` says one key's default and, as a
:class:`~xvla.validation.Field` (the project's stdlib-only validation kit, the one module outside ``drivers/``
this package imports), its TOML kind and what is allowed; :attr:`Driver.check` finds the problems that involve
other sections (``[safety]``); :attr:`Driver.factory` makes the picklable :data:`~drivers.arm.ArmFactory` from
the validated values.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Type

from drivers.arm import Arm, ArmConfigError, ArmFactory
from drivers.control.safety import SafetyLimits
from drivers.dynamixel.arm import DynamixelArm
from drivers.dynamixel.joint_offsets import ArmCalibration, load_calibration
from drivers.dynamixel.tables import BAUD_RATES as DYNAMIXEL_BAUD_RATES
from drivers.emulation.sim_arm import MAX_TIME_CONSTANT_S, SimArm
from drivers.feetech.arm import BAUD_RATES as FEETECH_BAUD_RATES
from drivers.feetech.arm import FeetechArm
from drivers.feetech.calibration import FeetechCalibration
from drivers.feetech.calibration import load_calibration as load_feetech_calibration
from drivers.lerobot_calibration import GRIPPER_ENDS
from drivers.physical_ranges import MAX_ARMS, MAX_JOINT_VELOCITY, MAX_POSITION_M, SAFETY_LIMIT_MIN
from drivers.piper import arm as piper
from drivers.xvla_serial.arm import BAUD_RATES as XVLA_SERIAL_BAUD_RATES
from drivers.xvla_serial.arm import XvlaSerialArm
from xvla.validation import Field

Values = Mapping[str, Any]
#: A problem found with other sections: (where, why). ``where`` is a key of ``[arm]`` (reported with its
#: value) or another place written as in the file, e.g. ``"[safety].workspaces"``.
Problem = Tuple[str, str]


@dataclass(frozen=True)
class Option:
    """One key of ``[arm]``: its ``name`` and the :class:`~xvla.validation.Field` its value must pass (kind,
    choices, range, a further check; ``expected`` says what is allowed, by default the kit's words for them).
    The kind ``Path``: a path to an existing file, relative to the config file; ``dict`` with ``table``: the
    sub-table ``[arm.<name>]`` holding those keys. A value missing while ``required`` is a problem too.
    ``argument``: the arm constructor's argument it becomes, if named otherwise."""

    name: str
    field: Field
    default: Any = None
    required: bool = False
    table: Tuple[Option, ...] = ()
    argument: str = ""

    def check(self, value: Any) -> bool:
        """Whether ``robot.toml`` may give ``value`` for this key (a ``Path`` option's text the daemon reads and
        checks as a path instead)."""
        return self.field.accepts(value)


def _no_problems(space: str, values: Values, limits: SafetyLimits) -> Iterable[Problem]:
    return ()


@dataclass(frozen=True)
class Driver:
    """One arm driver: its ``name`` (the value of ``[arm].driver``), the ``arm`` class, the target ``spaces`` it
    streams (the first is the default of ``[arm].space``) and its other ``options``. ``factory(space, values,
    limits)`` and ``check(space, values, limits)`` take the validated values (key → value, None when not
    given and without default; a sub-table's as a mapping) and the ``[safety]`` limits."""

    name: str
    arm: Type[Arm]
    spaces: Tuple[str, ...]
    options: Tuple[Option, ...]
    factory: Callable[[str, Values, SafetyLimits], ArmFactory]
    check: Callable[[str, Values, SafetyLimits], Iterable[Problem]] = _no_problems

    @property
    def keys(self) -> Tuple[str, ...]:
        """The keys of ``[arm]`` it takes besides ``driver``."""
        return ("space", *(o.name for o in self.options))

    def refused_key(self, exc: ArmConfigError) -> Optional[str]:
        """The ``[arm]`` key behind the arm constructor's refusal ``exc``, whose message starts with
        ``Class.argument`` (``"DynamixelArm.watchdog_ms: ..."`` → ``"timeout_ms"``); None if it names none."""
        match = re.match(r"\w+\.(\w+)", str(exc))
        if match is None:
            return None
        argument = match.group(1)
        return next((o.name for o in self.options if (o.argument or o.name) == argument), argument)


def _keywords(values: Values, options: Iterable[Option]) -> Dict[str, Any]:
    """The constructor keywords of the ``options`` that have a value, named as the constructor names them."""
    return {o.argument or o.name: values[o.name] for o in options if values.get(o.name) is not None}


MAX_PORT_CHARS = 4096  # PATH_MAX


def _port(driver: str) -> Option:
    return Option("port", Field(str, check=lambda p: 0 < len(p) <= MAX_PORT_CHARS and p.isprintable(),
                                expected=f'a serial device such as "/dev/ttyUSB0" or a pyserial URL, printable, at '
                                         f'most {MAX_PORT_CHARS} characters (driver "{driver}")'), required=True)


def _baud(rates: Tuple[int, ...], which: str) -> Option:
    """``baud``: one of ``rates`` (``which`` says whose); None: the driver's default."""
    return Option("baud", Field(int, choices=rates, expected=f"one of {', '.join(map(str, rates))} ({which})"),
                  argument="baudrate")


def _deadman(argument: str, lower: int, upper: int, what: str) -> Option:
    """``timeout_ms``: the controller's deadman (the constructor's ``argument``), ``lower`` ... ``upper`` ms;
    None: the driver's default."""
    return Option("timeout_ms", Field(int, low=lower, high=upper, expected=f"milliseconds {lower} ... {upper}{what}"),
                  argument=argument)


# -- sim ------------------------------------------------------------------------------------------------


_COORDINATE = Field(float, low=-MAX_POSITION_M, high=MAX_POSITION_M)


def _is_xyz(value: list) -> bool:
    return len(value) == 3 and all(map(_COORDINATE.accepts, value))


_SIM = Option("sim", Field(dict), table=(
    Option("initial_position",
           Field(list, check=_is_xyz, expected=f"[x, y, z] in metres, each within ±{MAX_POSITION_M:g}")),
    Option("n_arms", Field(int, low=1, high=MAX_ARMS), 1),
    Option("time_constant",
           Field(float, high=MAX_TIME_CONSTANT_S, check=lambda x: x > 0,
                 expected=f"seconds in (0, {MAX_TIME_CONSTANT_S:g}]")),
))


def _sim_factory(space: str, values: Values, limits: SafetyLimits) -> ArmFactory:
    """A simulated joint arm gets its joints from ``[safety].joint_limits``."""
    sim = values["sim"]
    options: Dict[str, Any] = {}
    if sim["time_constant"] is not None:
        options["time_constant"] = sim["time_constant"]
    if sim["initial_position"] is not None:
        options["initial_position"] = tuple(float(x) for x in sim["initial_position"])
    joints = limits.joint_limits if space == "joint" else ()
    return functools.partial(SimArm, space=space, n_arms=sim["n_arms"], joint_limits=joints, **options)


def _sim_check(space: str, values: Values, limits: SafetyLimits) -> Iterator[Problem]:
    n_arms = values["sim"]["n_arms"]
    if limits.workspaces and len(limits.workspaces) != n_arms:
        yield ("[safety].workspaces",
               f"{len(limits.workspaces)} boxes, but [arm.sim].n_arms = {n_arms} (one box per arm)")
    if space == "joint" and not limits.joint_limits:
        yield "space", "the simulated joint arm takes its joints from [safety].joint_limits, which is empty"


# -- xvla-serial ----------------------------------------------------------------------------------------

_XVLA_SERIAL_LINK = (_baud(XVLA_SERIAL_BAUD_RATES, "the standard serial rates"),
                     _deadman("timeout_ms", 0, 0xFFFF, ", 0: the controller's own"))


def _xvla_serial_factory(space: str, values: Values, limits: SafetyLimits) -> ArmFactory:
    return functools.partial(XvlaSerialArm, values["port"], space=space, **_keywords(values, _XVLA_SERIAL_LINK))


# -- dynamixel ------------------------------------------------------------------------------------------

_DYNAMIXEL_LINK = (_baud(DYNAMIXEL_BAUD_RATES, "the X-series Baud_Rate settings"),
                   _deadman("watchdog_ms", 20, 2540, " (the servos' Bus_Watchdog, in 20 ms steps)"))
#: What a LeRobot calibration file does not say (``drivers.dynamixel.joint_offsets``); not for this project's files.
_LEROBOT_CALIBRATION = (
    Option("max_joint_velocity", Field(float, low=SAFETY_LIMIT_MIN, high=MAX_JOINT_VELOCITY,
                                       expected=f"rad/s {SAFETY_LIMIT_MIN:g} ... 4π, every joint (only with a "
                                                "LeRobot calibration file)")),
    Option("gripper_open", Field(str, choices=GRIPPER_ENDS,
                                 expected=f"{' or '.join(repr(e) for e in GRIPPER_ENDS)}: the end of the gripper's "
                                          "range that is open (only with a LeRobot calibration file)")),
)


def _dynamixel_calibration(values: Values) -> ArmCalibration:
    return load_calibration(values["calibration"], max_velocity=values.get("max_joint_velocity"),
                            gripper_open=values.get("gripper_open"))


def _dynamixel_factory(space: str, values: Values, limits: SafetyLimits) -> ArmFactory:
    return functools.partial(DynamixelArm, values["port"], _dynamixel_calibration(values),
                             **_keywords(values, _DYNAMIXEL_LINK))


def _dynamixel_check(space: str, values: Values, limits: SafetyLimits) -> Iterator[Problem]:
    path: Optional[Path] = values["calibration"]
    if path is None or not path.is_file():  # already reported as missing or not a file
        return
    try:
        joints = len(_dynamixel_calibration(values).joints)
    except ArmConfigError as exc:
        yield "calibration", f"not a usable calibration: {exc}"
        return
    if limits.joint_limits and len(limits.joint_limits) != joints:
        yield ("[safety].joint_limits",
               f"{len(limits.joint_limits)} entries, but the calibration {path.name} has {joints} joints")


# -- feetech (SO-100 / SO-101) ---------------------------------------------------------------------------


_VELOCITY = Field(float, low=SAFETY_LIMIT_MIN, high=MAX_JOINT_VELOCITY)
_FEETECH = (
    _baud(FEETECH_BAUD_RATES, "the STS series' Baud_Rate settings"),
    Option("calibration", Field(Path), required=True),
    Option("max_joint_velocity",
           Field((float, list), check=lambda v: all(map(_VELOCITY.accepts, v if isinstance(v, list) else [v])),
                 expected=f"rad/s {SAFETY_LIMIT_MIN:g} ... 4π: one number for every joint, or a list of one per "
                          "joint (the calibration file has no velocity limits)"),
           required=True, argument="max_velocity"),
    Option("gripper_open", Field(str, choices=GRIPPER_ENDS,
                                 expected=f"{' or '.join(repr(e) for e in GRIPPER_ENDS)}: the end of the gripper's "
                                          "range that is open"), required=True),
)


def _feetech_calibration(values: Values) -> FeetechCalibration:
    velocity = values["max_joint_velocity"]
    return load_feetech_calibration(values["calibration"], gripper_open=values["gripper_open"],
                                    max_velocity=velocity if isinstance(velocity, list) else float(velocity))


def _feetech_factory(space: str, values: Values, limits: SafetyLimits) -> ArmFactory:
    baud = {"baudrate": values["baud"]} if values.get("baud") is not None else {}
    return functools.partial(FeetechArm, values["port"], _feetech_calibration(values), **baud)


def _feetech_check(space: str, values: Values, limits: SafetyLimits) -> Iterator[Problem]:
    path: Optional[Path] = values["calibration"]
    if path is None or not path.is_file() or values["max_joint_velocity"] is None or values["gripper_open"] is None:
        return  # already reported: missing, not a file, or refused
    try:
        calibration = _feetech_calibration(values)
    except ArmConfigError as exc:
        key = "max_joint_velocity" if "max_velocity" in str(exc) else "calibration"
        yield key, f"not usable with this calibration: {exc}"
        return
    joints = len(calibration.joints)
    if limits.joint_limits and len(limits.joint_limits) != joints:
        yield ("[safety].joint_limits",
               f"{len(limits.joint_limits)} entries, but the calibration {path.name} has {joints} joints")
# -- piper ----------------------------------------------------------------------------------------------

_PIPER = (
    Option("interface", Field(str, choices=piper.INTERFACES,
                              expected='"socketcan" (a USB-CAN adapter brought up with `ip link`) or "slcan" (a '
                                       'serial-line CAN adapter)'), "socketcan"),
    Option("channel", Field(str, check=lambda c: 0 < len(c) <= MAX_PORT_CHARS and c.isprintable(),
                            expected=f'the CAN interface ("can0") or, with interface = "slcan", the adapter\'s serial '
                                     f'device ("/dev/ttyACM0"), printable, at most {MAX_PORT_CHARS} characters'),
           "can0"),
    Option("timeout_ms", Field(int, low=piper.LINK_TIMEOUT_MS[0], high=piper.LINK_TIMEOUT_MS[1],
                               expected=f"milliseconds {piper.LINK_TIMEOUT_MS[0]} ... {piper.LINK_TIMEOUT_MS[1]}: "
                                        "feedback older than this is a lost link")),
    Option("speed_percent", Field(int, low=1, high=100, expected="the arm's own speed scale, percent 1 ... 100")),
    Option("gripper_open_mm", Field(float, low=piper.GRIPPER_OPEN_MM[0], high=piper.GRIPPER_OPEN_MM[1],
                                    expected=f"mm {piper.GRIPPER_OPEN_MM[0]:g} ... {piper.GRIPPER_OPEN_MM[1]:g}: the "
                                             "stroke of a fully open gripper (opening 1.0)")),
    Option("gripper_effort", Field(float, low=piper.GRIPPER_EFFORT_NM[0], high=piper.GRIPPER_EFFORT_NM[1],
                                   expected=f"N·m {piper.GRIPPER_EFFORT_NM[0]:g} ... {piper.GRIPPER_EFFORT_NM[1]:g}")),
)


def _piper_factory(space: str, values: Values, limits: SafetyLimits) -> ArmFactory:
    others = [o for o in _PIPER if o.name != "channel"]
    return functools.partial(piper.PiperArm, values["channel"], space=space, **_keywords(values, others))


def _piper_check(space: str, values: Values, limits: SafetyLimits) -> Iterator[Problem]:
    if space == "ee" and not limits.workspaces:
        yield ("[safety].workspaces", "empty, but the Piper reports no workspace: end-effector control needs one box "
                                      "(m, the arm's base frame), e.g. [{ lower = [0.1, -0.35, 0.05], upper = "
                                      "[0.55, 0.35, 0.5] }]")
    if len(limits.workspaces) > 1:
        yield "[safety].workspaces", f"{len(limits.workspaces)} boxes, but a Piper is one arm (one box)"
    if limits.joint_limits and len(limits.joint_limits) != len(piper.JOINT_LIMITS):
        yield ("[safety].joint_limits",
               f"{len(limits.joint_limits)} entries, but a Piper has {len(piper.JOINT_LIMITS)} joints")


DRIVERS: Dict[str, Driver] = {d.name: d for d in (
    Driver("sim", SimArm, ("ee", "joint"), (_SIM,), _sim_factory, _sim_check),
    Driver("xvla-serial", XvlaSerialArm, ("ee", "joint"), (_port("xvla-serial"), *_XVLA_SERIAL_LINK),
           _xvla_serial_factory),
    Driver("dynamixel", DynamixelArm, ("joint",),
           (_port("dynamixel"), *_DYNAMIXEL_LINK, Option("calibration", Field(Path), required=True),
            *_LEROBOT_CALIBRATION),
           _dynamixel_factory, _dynamixel_check),
    Driver("feetech", FeetechArm, ("joint",), (_port("feetech"), *_FEETECH), _feetech_factory, _feetech_check),
    Driver("piper", piper.PiperArm, ("ee", "joint"), _PIPER, _piper_factory, _piper_check),
)}


def names() -> Tuple[str, ...]:
    """Every driver's name, in the order of :data:`DRIVERS`."""
    return tuple(DRIVERS)


def lookup(name: str) -> Driver:
    """The driver called ``name``; raises :class:`~drivers.arm.ArmConfigError` naming the available ones."""
    try:
        return DRIVERS[name]
    except KeyError:
        raise ArmConfigError(f"unknown driver {name!r}; available: {', '.join(DRIVERS)}") from None
