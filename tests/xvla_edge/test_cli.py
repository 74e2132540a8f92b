"""The ``xvla-edge`` dispatcher: robot-side commands load no heavy library, and a missing or broken optional
dependency is one line naming the extra (exit 2), never a traceback or an argparse error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xvla_edge import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "xvla_edge" / "daemon" / "robot.example.toml"
HEAVY = ("torch", "transformers", "onnx", "onnxscript", "safetensors", "matplotlib", "cv2", "tensorrt")


def run_cli(args: list[str], *, prelude: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``xvla-edge ARGS`` in a fresh interpreter, after ``prelude`` (Python run first, e.g. to break an import)."""
    code = f"{prelude}\nimport sys\nfrom xvla_edge.cli import main\nsys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def imported(proc: subprocess.CompletedProcess) -> set[str]:
    """Top-level module names from a ``PYTHONPROFILEIMPORTTIME=1`` run's stderr."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("args, also_absent", [
    (["--help"], ("numpy", "scipy", "onnxruntime")),
    (["config", "check", str(EXAMPLE)], ("onnxruntime",)),
])
@pytest.mark.subprocess
def test_robot_side_commands_import_no_heavy_library(args, also_absent):
    proc = run_cli(args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = imported(proc)
    assert "xvla_edge" in modules  # the profile did record this run's imports
    assert modules.isdisjoint(HEAVY + also_absent), sorted(modules & set(HEAVY + also_absent))


def test_sim_eval_takes_the_daemon_s_chunking_modes_and_default():
    """``sim eval --chunking`` lists its choices without importing the daemon (``--help`` stays light): they are the
    daemon's, default included."""
    from xvla_edge.daemon.chunking import CHUNKING, DEFAULT_CHUNKING

    parser, _ = cli.build_parser()
    args = parser.parse_args(["sim", "eval"])
    assert args.chunking == [DEFAULT_CHUNKING] and args.latency is None
    action = next(a for a in parser._subparsers._group_actions[0].choices["sim"]._subparsers._group_actions[0]
                  .choices["eval"]._actions if a.dest == "chunking")
    assert tuple(action.choices) == CHUNKING


def test_every_command_is_a_module_of_its_name_and_parses_its_own_help():
    parser, runners = cli.build_parser()
    assert set(runners) == set(cli.COMMANDS)
    for name, runner in runners.items():
        assert runner.__module__ == f"xvla_edge.commands.{name}"
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0


BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # `import torch` now raises ImportError"
BROKEN_TORCH = """
import importlib.abc, sys
class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'torch':
            raise OSError('libtorch_cpu.so: cannot open shared object file')
sys.meta_path.insert(0, Broken())
"""


@pytest.mark.parametrize("prelude, cause", [(BLOCK_TORCH, "ModuleNotFoundError"), (BROKEN_TORCH, "OSError")])
@pytest.mark.parametrize("args, extra", [
    (["checkpoint", "{tmp}/ckpt"], "torch"),
    (["export", "{tmp}/ckpt", "--domain-id", "0", "--out", "{tmp}/bundle"], "export"),
    (["demo", "--episodes", "1", "--workdir", "{tmp}/demo"], "export"),
    (["sim", "train", "{tmp}/ckpt"], "torch"),
])
@pytest.mark.subprocess
def test_a_missing_or_broken_dependency_is_one_line_naming_the_extra(tmp_path, prelude, cause, args, extra):
    proc = run_cli([a.format(tmp=tmp_path) for a in args], prelude=prelude)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"xvla-edge {args[0]}: needs the '{extra}' extra" in lines[0] and cause in lines[0]
    assert f"pip install 'xvla-edge[{extra}]'" in lines[0]
    assert not any((tmp_path / name).exists() for name in ("ckpt", "bundle"))


@pytest.mark.subprocess
def test_config_check_and_run_do_not_need_torch(tmp_path):
    """With torch unimportable (even raising OSError), the robot-side commands work as before."""
    assert run_cli(["config", "check", str(EXAMPLE)], prelude=BROKEN_TORCH).returncode == 0
    proc = run_cli(["run", "--config", str(tmp_path / "missing.toml")], prelude=BROKEN_TORCH)
    assert proc.returncode == 2 and "missing.toml" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.subprocess
def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``xvla-edge config check FILE | head -1``: a closed pipe is exit 141 without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "xvla_edge", "config", "check", str(EXAMPLE)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err, err


@pytest.mark.parametrize("command", [["checkpoint"], ["sim", "train"], ["sim", "calibration-set"]])
def test_commands_that_write_a_directory_take_out_as_a_flag_or_the_older_positional(command, capsys):
    from xvla_edge.cli import build_parser
    from xvla_edge.commands import out_path

    parser = build_parser()[0]
    assert out_path(parser.parse_args([*command, "--out", "d1"])) == Path("d1")
    assert out_path(parser.parse_args([*command, "d2"])) == Path("d2")
    for argv, message in (([*command], "one of the arguments OUT --out is required"),
                          ([*command, "d3", "--out", "d4"], "argument --out: not allowed with argument OUT")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
