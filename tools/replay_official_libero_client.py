"""Run the OFFICIAL X-VLA LIBERO evaluation client, unchanged, against a server, with the simulator stood in for.

This is our own driver; the official client is NOT part of this repository. It runs
``evaluation/libero/libero_client.py`` from a separate checkout given with ``--official-src`` (a ``git archive``
of official commit 6bc2513), as its README says to run it, in ``--connection_info`` mode or with
``--server_ip``/``--server_port``. LIBERO and robosuite (a MuJoCo simulator) cannot be installed here, so the
modules the client imports from them are replaced by stand-ins written to a temporary directory: one suite of
one task, an environment that renders random 256x256 camera images, reports an end-effector pose and ends the
episode after ``--steps`` steps, and the four robosuite rotation helpers (their values are not checked). So are
``imageio`` (videos) and ``torchvision`` (imported, unused). Everything the client does over the network is its
own code: waiting for the connection-info file, building its queries, posting them, reading the chunks.

Usage (the project venv has torch, json_numpy, requests and tqdm, which the client imports)::

    python tools/replay_official_libero_client.py --official-src /tmp/xvla-official \
        --connection-info logs/info.json [--steps 45]

It prints the client's output and the number of actions the stand-in environment executed, and exits with the
client's status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STANDINS = {
    "libero/__init__.py": "",
    "libero/libero/__init__.py": '''
import numpy as np
from types import SimpleNamespace


class _Suite:
    tasks = [SimpleNamespace(name="standin_task", language="put the bowl on the plate", problem_folder="standin",
                             bddl_file="standin.bddl")]

    def get_task(self, i):
        return self.tasks[i]

    def get_task_init_states(self, i):
        return np.zeros((1, 4))


class benchmark:
    @staticmethod
    def get_benchmark_dict():
        return {name: _Suite for name in ("libero_goal", "libero_object", "libero_spatial", "libero_10", "libero_90")}


def get_libero_path(kind):
    return "/nonexistent"
''',
    "libero/libero/envs/__init__.py": '''
import os
from types import SimpleNamespace

import numpy as np

STEPS = int(os.environ["STANDIN_STEPS"])
SETTLE = 10  # the client's own settling steps after reset


class OffScreenRenderEnv:
    def __init__(self, **kwargs):
        self.rng = np.random.default_rng(0)
        controller = SimpleNamespace(ee_ori_mat=np.eye(3), ee_pos=np.array([0.4, 0.0, 0.3]), use_delta=True)
        self.env = SimpleNamespace(robots=[SimpleNamespace(controller=controller)])
        self.t = 0

    def seed(self, seed):
        self.rng = np.random.default_rng(seed)

    def _obs(self):
        return {"agentview_image": self.rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
                "robot0_eye_in_hand_image": self.rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)}

    def reset(self):
        return self._obs()

    def set_init_state(self, state):
        return self._obs()

    def step(self, action):
        self.t += 1
        if self.t > SETTLE:
            assert np.asarray(action).shape == (7,) and np.isfinite(action).all(), action
            with open(os.environ["STANDIN_LOG"], "a") as f:
                f.write("action\\n")
        return self._obs(), 0.0, self.t >= SETTLE + STEPS, {}

    def close(self):
        pass


SubprocVectorEnv = None
''',
    "robosuite/__init__.py": "",
    "robosuite/utils/__init__.py": "",
    "robosuite/utils/transform_utils.py": '''
import numpy as np


def mat2quat(m):
    return np.array([0.0, 0.0, 0.0, 1.0])


def quat2axisangle(q):
    return np.zeros(3)


def quat2mat(q):
    return np.eye(3)


def axisangle2quat(a):
    return np.array([0.0, 0.0, 0.0, 1.0])
''',
    "torchvision/__init__.py": "from . import transforms  # noqa: F401\n",
    "torchvision/transforms.py": "",
    "imageio/__init__.py": "def mimsave(path, images, fps=30):\n    pass\n",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-src", type=Path, required=True, help="a checkout of the official X-VLA repository")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--connection-info", type=Path, help="the client's --connection_info (it waits for the file)")
    where.add_argument("--server", metavar="HOST:PORT", help="the client's --server_ip and --server_port")
    p.add_argument("--steps", type=int, default=45, help="steps of the one episode (default 45: two chunks)")
    args = p.parse_args(argv)
    client = args.official_src / "evaluation" / "libero" / "libero_client.py"
    if not client.is_file():
        p.error(f"{client}: not found (--official-src is the official repository's root)")
    with tempfile.TemporaryDirectory(prefix="libero-standins-") as tmp:
        for name, text in STANDINS.items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_text(text)
        log = Path(tmp) / "actions.log"
        log.touch()
        if args.connection_info is not None:
            target = ["--connection_info", str(args.connection_info.resolve())]
        else:
            host, _, port = args.server.rpartition(":")
            target = ["--server_ip", host, "--server_port", port]
        env = {**os.environ, "PYTHONPATH": tmp, "STANDIN_STEPS": str(args.steps), "STANDIN_LOG": str(log)}
        done = subprocess.run([sys.executable, client.name, *target, "--task_suites", "libero_goal", "--eval_time", "1",
                               "--output_dir", str(Path(tmp) / "out")], cwd=client.parent, env=env)
        print(f"[replay] the client exited with {done.returncode}; the environment executed "
              f"{len(log.read_text().splitlines())} of its actions")
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
