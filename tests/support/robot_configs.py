"""robot.toml pieces and checks the daemon and config tests share: the smallest valid file, small cameras and a
slow loop for test daemons, and ``xvla-edge config check`` called in-process."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from xvla_edge.commands import config as config_cli
from xvla_edge.daemon.config import ConfigError, load_config

MINIMAL = """\
instruction = "wave"
[bundle]
path = "bundle"
[[cameras]]
slot = 0
source = "synthetic"
[arm]
driver = "sim"
"""
SMALL_CAMERA = {"width": 96, "height": 64, "max_age_s": 0.3}
SLOW_LOOP = {"rate_hz": 100, "realtime_priority": 0}


def problems(path: Path) -> list:
    """The lines of the :class:`ConfigError` loading ``path`` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).splitlines()


def check(path: Path) -> int:
    """``xvla-edge config check PATH``, in-process; its exit code."""
    parser = argparse.ArgumentParser()
    config_cli.add_arguments(parser)
    return config_cli.run(parser.parse_args(["check", str(path)]))
