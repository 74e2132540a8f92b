"""robot.toml validation: the shipped example is valid, every kind of mistake is named with key and value."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.xvla_serial.client import XvlaSerialArm
from runtime.daemon.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[3] / "runtime" / "daemon" / "robot.example.toml"
MINIMAL = """
instruction = "wave"
[bundle]
path = "bundle"
[[cameras]]
slot = 0
source = "synthetic"
[arm]
driver = "sim"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "robot.toml"
    path.write_text(text)
    return path


def test_the_shipped_example_is_valid_and_builds_the_driver_objects():
    cfg = load_config(EXAMPLE)
    loop = cfg.loop_config()
    assert loop.rate_hz == 200 and loop.limits.workspaces[0].upper == (0.7, 0.4, 0.6)
    factory = cfg.arm_factory()
    assert isinstance(factory, functools.partial) and factory.func is XvlaSerialArm
    assert factory.args == ("/dev/ttyACM0",) and factory.keywords == {"space": "ee", "timeout_ms": 200}
    assert cfg.cameras[0].device == "/dev/video0" and cfg.health.port == 8765


def test_defaults_and_relative_paths(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.bundle.path == tmp_path / "bundle" and cfg.recorder.directory == tmp_path / "recordings"
    assert cfg.inference.start_fraction == 0.5 and cfg.splice.mode == "replace" and cfg.arm.timeout_ms == 200


@pytest.mark.parametrize(("edit", "expected"), [
    (('driver = "sim"', 'driver = "dynamixl"'), '[arm].driver = \'dynamixl\': expected one of \'sim\''),
    (('slot = 0', 'slot = 5'), "[[cameras]] #1.slot = 5: expected a view slot 0, 1 or 2"),
    (('source = "synthetic"', 'source = "synthetic"\nfsp = 30'), "#1.fsp is not a known key (did you mean 'fps'?)"),
    (('driver = "sim"', 'driver = "xvla-serial"'), "[arm].port is missing"),
    (('[arm]', '[control]\nrate_hz = 1000\n[arm]'), "[control].rate_hz = 1000.0: expected 50 ... 500 (Hz)"),
    (('[arm]', '[splice]\nmode = "fade"\n[arm]'), "[splice]: SplicePolicy.mode: expected 'replace' or 'blend'"),
    (('[arm]', '[safety]\nmax_linear_speed = -1\n[arm]'), "[safety].max_linear_speed = -1.0: expected a number > 0"),
    (('[arm]', '[inference]\nstart_fraction = 1.5\n[arm]'), "[inference].start_fraction = 1.5: expected 0 < f < 1"),
    (('source = "synthetic"', 'source = "folder"\npath = "nowhere"'), "#1.path = 'nowhere': expected an existing path"),
    (('source = "synthetic"', 'source = "synthetic"\npipeline = "x"'), "no pipeline for source 'synthetic'"),
])
def test_mistakes_are_named(tmp_path, edit, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL.replace(*edit)))
    assert expected in str(info.value) and str(tmp_path / "robot.toml") in str(info.value)


def test_all_errors_are_reported_together(tmp_path):
    text = MINIMAL.replace('driver = "sim"', 'driver = "sim"\nspeed = 3').replace('instruction = "wave"', "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    lines = str(info.value).splitlines()
    assert len(lines) == 2 and "instruction is missing" in str(info.value) and "[arm].speed" in str(info.value)


def test_config_check_command(tmp_path):
    def check(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "xvla.cli", "config", "check", str(path)],
                              capture_output=True, text=True, timeout=60)

    ok = check(EXAMPLE)
    assert ok.returncode == 0 and "valid" in ok.stdout and "xvla-serial /dev/ttyACM0" in ok.stdout
    bad = check(write(tmp_path, MINIMAL.replace("slot = 0", "slot = 1")))
    assert bad.returncode == 1 and "slot 0 (the main view) must have a camera" in bad.stderr
    assert check(tmp_path / "missing.toml").returncode == 2
