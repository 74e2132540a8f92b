"""A real OpenSSH server on a loopback port, with a throwaway host key and user key, hosting "robots" (directories)
reached as ``root@127.0.0.1:PORT:/dir``; the robots run this checkout's xvla-edge (``python -m xvla_edge`` with
``PYTHONPATH`` = this checkout: sshd does not pass the test's environment on, so without it the robot side would
import whatever xvla_edge the interpreter has installed, e.g. another worktree's editable install).

Needs Debian's openssh-server (``.ci/run`` installs it) and root (sshd's privilege separation); the tests skip
naming what is missing otherwise."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).parents[4]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xvla-edge test", "-f", str(path)],
                   check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """(port, known_hosts, identity) of a running sshd; stopped after the session."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        pytest.skip("needs OpenSSH (apt-get install openssh-server openssh-client; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("starting sshd needs root (privilege separation)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    _keygen(d / "host_key")
    _keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "MaxStartups 50\nMaxSessions 50\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", exist_ok=True)
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sshd did not start: {(d / 'sshd.log').read_text()}") from None
            time.sleep(0.1)
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield port, d / "known_hosts", d / "client_key"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def robot_python() -> tuple[str, ...]:
    """How a command on a test robot runs this checkout's Python code (prefix the script or ``-m module``)."""
    return ("env", f"PYTHONPATH={REPO}", sys.executable)


@pytest.fixture
def ssh_options(sshd, robot_python):
    from xvla_edge.deploy.fleet.ssh import SSHOptions

    _, known_hosts, identity = sshd
    return SSHOptions(known_hosts=known_hosts, identity=identity, xvla_edge=(*robot_python, "-m", "xvla_edge"))


@pytest.fixture
def robots(sshd, tmp_path):
    """Two robots: directories on the test's sshd, as ``user@host:port:/path`` targets."""
    from xvla_edge.deploy.fleet.ssh import Robot

    port = sshd[0]
    return [Robot.parse(f"root@127.0.0.1:{port}:{tmp_path / name}") for name in ("arm1", "arm2")]
