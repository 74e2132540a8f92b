"""robot.toml ranges: every value that ``xvla-edge config check`` accepts is one the control loop, the drivers and
the cameras can live with. The values of issue 33 (accepted, then fatal at run time) and one value per class of
key are refused, each by file, key, value and the allowed range; files that would exhaust the parser are refused
before it runs."""

from __future__ import annotations

import pytest

from xvla_edge.daemon.config import MAX_CONFIG_BYTES, MAX_DOTS_PER_LINE, ConfigError, ConfigFileError, load_config

from tests.support.robot_configs import MINIMAL, check, problems

SERIAL = 'driver = "xvla-serial"\nport = "/dev/ttyACM0"'
BAUDS = ("50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, "
         "460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000")


@pytest.mark.parametrize("old, new, expected", [
    ("[arm]", "[splice]\nblend_window_s = 1e300\n[arm]",
     ["[splice].blend_window_s = 1e+300: SplicePolicy.blend_window_s: expected 0.01 ... 1 s, got 1e+300"]),
    ("[arm]", "[splice]\nblend_step_s = 1e-300\n[arm]",
     ["[splice].blend_step_s = 1e-300: SplicePolicy.blend_step_s: expected 0.005 ... 0.1 s, got 1e-300"]),
    ("[arm]", '[splice]\nblend_window_s = 5\nblend_step_s = 1e-6\n[inference]\nchunking = "blend"\n[arm]',
     ["[splice].blend_window_s = 5: SplicePolicy.blend_window_s: expected 0.01 ... 1 s, got 5.0",
      "[splice].blend_step_s = 1e-06: SplicePolicy.blend_step_s: expected 0.005 ... 0.1 s, got 1e-06"]),
    ("[arm]", "[control]\nmax_trajectory_lag = 1e12\n[arm]",
     ["[control].max_trajectory_lag = 1000000000000.0: LoopConfig.max_trajectory_lag (1000000000000.0) must be in "
      "0.1..100 (a fraction of the trajectory's span)"]),
    ("[arm]", "[control]\nmax_trajectory_lag = 0\n[arm]",
     ["[control].max_trajectory_lag = 0: LoopConfig.max_trajectory_lag (0.0) must be in 0.1..100"]),
    ('driver = "sim"', SERIAL + "\nbaud = 1000000000000",
     [f"[arm].baud = 1000000000000: expected one of {BAUDS} (the standard serial rates)"]),
    ('driver = "sim"', SERIAL + "\nbaud = 1e12", [f"[arm].baud = 1000000000000.0: expected one of {BAUDS}"]),
])
def test_the_values_of_issue_33_are_refused_by_config_check(write, capsys, old, new, expected):
    path = write(MINIMAL.replace(old, new, 1))
    assert check(path) == 1
    lines = capsys.readouterr().err.splitlines()
    for line in expected:
        assert any(got.startswith(f"{path}: {line}") for got in lines), (line, lines)
    assert lines[-1] == f"{path}: invalid ({len(expected)} problem{'s' if len(expected) > 1 else ''})"


@pytest.mark.parametrize("old, new, expected", [
    ('source = "synthetic"', 'source = "synthetic"\nheight = 100000000', "[[cameras]] #1.height = 100000000: expected "
                                                                          "pixels 1 ... 4096"),
    ('source = "synthetic"', 'source = "v4l2"\ndevice = 100000', '[[cameras]] #1.device = 100000: expected a device '
                                                                 'path such as "/dev/video0", or an index 0 ... 255'),
    ('source = "synthetic"', f'source = "v4l2"\ndevice = "{"9" * 30}"',
     f'[[cameras]] #1.device = "{"9" * 30}": expected a device path such as "/dev/video0", or an index 0 ... 255'),
    ('source = "synthetic"', 'source = "v4l2"\ndevice = "²"', '[[cameras]] #1.device = "\\u00b2": expected a device'),
    ('source = "synthetic"', 'source = "gstreamer"\npipeline = "v ! \\u0000 ! appsink"',
     '[[cameras]] #1.pipeline = "v ! \\u0000 ! appsink": expected a GStreamer pipeline ending in appsink (printable'),
    ('driver = "sim"', 'driver = "sim"\n[arm.sim]\nn_arms = 1000000000',
     "[arm.sim].n_arms = 1000000000: expected an integer 1 ... 4"),
    ('driver = "sim"', 'driver = "sim"\n[arm.sim]\ntime_constant = 1e300',
     "[arm.sim].time_constant = 1e+300: expected seconds in (0, 10]"),
    ('driver = "sim"', 'driver = "sim"\n[arm.sim]\ninitial_position = [1e300, 0, 0.3]',
     "[arm.sim].initial_position = [1e+300, 0, 0.3]: expected [x, y, z] in metres, each within ±10"),
    ('driver = "sim"', 'driver = "xvla-serial"\nport = "/dev/tty\\u001b"', '[arm].port = "/dev/tty\\u001b": expected '
                                                                           "a serial device"),
    ('driver = "sim"', 'driver = "dynamixel"\nport = "/dev/ttyUSB0"\ncalibration = "c.json"\nbaud = 921600',
     "[arm].baud = 921600: expected one of 9600, 57600, 115200, 1000000, 2000000, 3000000, 4000000, 4500000 "
     "(the X-series Baud_Rate settings)"),
    ('driver = "sim"', 'driver = "dynamixel"\nport = "/dev/ttyUSB0"\ncalibration = "c.json"\nmax_joint_velocity = 1e-300',
     "[arm].max_joint_velocity = 1e-300: expected rad/s 0.001 ... 4π"),
    ("[arm]", "[safety]\nmax_linear_accel = 1e-300\n[arm]", "[safety].max_linear_accel = 1e-300: SafetyLimits."
                                                            "max_linear_accel must be at least 0.001 m/s^2"),
    ("[arm]", "[safety]\nworkspaces = [" + ", ".join(["{ lower = [0, 0, 0], upper = [1, 1, 1] }"] * 5) + "]\n[arm]",
     "[safety].workspaces = [{ lower = |: expected an array of {lower=[x,y,z], upper=[x,y,z]}, one per arm, at most 4"),
    ("[arm]", "[safety]\njoint_limits = [" + ", ".join(["{ lower = 0, upper = 1, max_velocity = 1 }"] * 33) + "]\n[arm]",
     "[safety].joint_limits = [{ lower = |: expected an array of {lower=, upper=, max_velocity=}, one per joint, at "
     "most 32"),
    ("[arm]", "[inference]\nmax_latency_s = 1e-300\n[arm]",
     "[inference].max_latency_s = 1e-300: expected seconds 0.01 ... 60"),
    ("[arm]", "[splice]\nmax_latency_s = 1e300\n[arm]", "[splice].max_latency_s = 1e+300: SplicePolicy.max_latency_s: "
                                                        "expected 0.01 ... 10 s"),
    ("[arm]", "[splice]\nspeed_margin = 1e300\n[arm]", "[splice].speed_margin = 1e+300: SplicePolicy.speed_margin: "
                                                       "expected 1 ... 10, got 1e+300"),
    ("[arm]", "[control]\nrate_hz = 0x" + "f" * 5000 + "\n[arm]",
     "[control].rate_hz = an integer of 20000 bits: expected a finite number"),
    ("[arm]", f"[control]\nrealtime_priority = -{10**39}\n[arm]",
     "[control].realtime_priority = an integer of 130 bits: expected an integer"),
    ('path = "bundle"', 'path = "bun\\u0000dle"', '[bundle].path = "bun\\u0000dle": expected a path: printable, '
                                                  "1 ... 4096 bytes"),
    ('path = "bundle"', f'path = "/{"b" * 5000}"', '[bundle].path = "/bbb|: expected a path: printable, 1 ... 4096 bytes'),
    ('path = "bundle"', 'path = "~no-such-user-here-33/b"', '[bundle].path = "~no-such-user-here-33/b": expected a '
                                                             "usable path"),
    ("[arm]", '[health]\nhost = "b\\u0000x"\n[arm]', '[health].host = "b\\u0000x": expected a host name or address: '
                                                    "ASCII letters, digits and . : % _ -, at most 253 characters"),
    ("[arm]", '[health]\nhost = "ééé.local"\n[arm]', '[health].host = "\\u00e9\\u00e9\\u00e9.local": expected a host name'),
    ('[bundle]\npath = "bundle"', '[policy]\nurl = "ws://127.0.0.1\\u0000:8000"',
     '[policy].url = "ws://127.0.0.1\\u0000:8000": expected a websocket URL'),
    ('source = "synthetic"', f'source = "folder"\npath = "{"f" * 300}"',  # one name longer than any file system's
     '[[cameras]] #1.path = "fff|...: expected a usable path: File name too long'),
])
def test_each_class_of_key_has_a_range(write, old, new, expected):
    """``expected``: how the line starts, and after a ``|`` how it ends (a long value is shown shortened)."""
    path = write(MINIMAL.replace(old, new, 1))
    head, _, tail = expected.partition("|")
    lines = problems(path)
    assert any(line.startswith(f"{path}: {head}") and line.endswith(tail) for line in lines), lines


def test_a_file_larger_than_the_bound_is_refused_before_parsing(write, tmp_path, capsys):
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # 50 MB of NUL bytes (sparse): never read past the bound
    assert check(big) == 2
    assert capsys.readouterr().err == (f"{big}: cannot read: 52428800 bytes: expected at most {MAX_CONFIG_BYTES} bytes "
                                       "(256 KiB) for a robot.toml\n")
    padded = MINIMAL + "#" * (MAX_CONFIG_BYTES - len(MINIMAL) - 1) + "\n"
    assert load_config(write(padded)).instruction == "wave"  # exactly the bound is fine
    with pytest.raises(ConfigFileError, match=f"{MAX_CONFIG_BYTES + 1} bytes: expected at most"):
        load_config(write(padded + "\n"))


def test_a_dotted_key_bomb_is_refused_before_parsing(write):
    """``a.a.a...`` 30 000 deep (60 KB) costs the TOML parser gigabytes and seconds (quadratic in the depth)."""
    path = write(MINIMAL + "a." * 30000 + "b = 1\n")
    with pytest.raises(ConfigError, match=rf"^{path}: line 9 has 30000 dots: expected at most {MAX_DOTS_PER_LINE} "):
        load_config(path)
    deep = write(MINIMAL + "[control]\n" + "a." * MAX_DOTS_PER_LINE + "b = 1\n")  # at the bound: parsed, then named
    assert any("[control].a: unknown key" in line for line in problems(deep))


def test_arrays_nested_too_deeply_are_refused(write):
    path = write(MINIMAL + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid TOML: arrays or inline tables nested too deeply$"):
        load_config(path)
