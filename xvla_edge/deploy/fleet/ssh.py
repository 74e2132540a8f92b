"""Reaching a robot computer over SSH, with the system's OpenSSH client.

Why the ``ssh`` program rather than a Python SSH library: it is on every workstation and CI runner, and it
already honours what operators configure for their fleet — ``~/.ssh/config`` (host aliases, ``ProxyJump``
through a bastion, ports, users), ``known_hosts`` files (including hashed and ``@cert-authority`` entries) and
the ssh-agent or hardware keys — which a library would have to re-implement or leave out. Every call is one
``ssh`` process running ``xvla-edge fleet agent`` on the robot (:mod:`xvla_edge.deploy.fleet.agent`) with file
bytes on stdin and one JSON answer on stdout.

Always: ``BatchMode=yes`` (no password or passphrase prompt, ever: keys or an agent only), and
``StrictHostKeyChecking=yes`` (a host whose key is not in known_hosts, or has changed, is refused, never
added). ``--known-hosts FILE`` and ``--identity FILE`` select those files instead of ssh's defaults.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional, Sequence, Union

from xvla.errors import XVLAError

# user@host[:port]:/absolute/path — host a name, an IPv4 address or a bracketed IPv6 address
_TARGET = re.compile(r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
                     r"(?::(?P<port>\d{1,5}))?:(?P<path>/.*)")


class RemoteError(XVLAError, RuntimeError):
    """A step on a robot failed; the message names the robot and the step."""


class HostKeyError(RemoteError):
    """The robot's host key is unknown or changed: nothing was sent."""


@dataclass(frozen=True)
class Robot:
    """``user@host[:port]:/path``: a robot computer and its bundle directory."""

    host: str
    path: str
    user: Optional[str] = None
    port: Optional[int] = None

    @classmethod
    def parse(cls, text: str) -> Robot:
        match = _TARGET.fullmatch(text)
        if match is None:
            raise RemoteError(f"--robot {text!r}: expected user@host[:port]:/absolute/path (or a local directory)")
        port = match["port"]
        if port is not None and not 1 <= int(port) <= 65535:
            raise RemoteError(f"--robot {text!r}: port {port} is not 1 ... 65535")
        path = match["path"]
        if "/../" in f"{path}/" or "\x00" in path:
            raise RemoteError(f"--robot {text!r}: the path must not contain '..'")
        return cls(host=match["host"].strip("[]"), path=path, user=match["user"],
                   port=int(port) if port else None)

    @staticmethod
    def is_remote(text: str) -> bool:
        return _TARGET.fullmatch(text) is not None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}:{self.path}"


@dataclass(frozen=True)
class SSHOptions:
    """How to reach every robot: ``xvla_edge``: the command that runs xvla-edge there."""

    known_hosts: Optional[Path] = None
    identity: Optional[Path] = None
    xvla_edge: Sequence[str] = ("xvla-edge",)
    connect_timeout_s: int = 10
    extra: Sequence[str] = ()  # more ``-o`` options, e.g. from the tests


class Agent:
    """``xvla-edge fleet agent`` on one robot, over ssh."""

    def __init__(self, robot: Robot, options: SSHOptions) -> None:
        self.robot = robot
        self.options = options

    def argv(self, op: str, *args: str) -> list[str]:
        """ssh running the agent operation ``op`` on the robot."""
        return [*self._ssh(), shlex.join([*self.options.xvla_edge, "fleet", "agent", self.robot.path, op, *args])]

    def shell(self, step: str, command: str, timeout_s: float = 300.0) -> None:
        """Run an operator's command on the robot (e.g. ``sudo systemctl restart xvla-edge``); RemoteError with its
        output when it fails."""
        try:
            proc = subprocess.run([*self._ssh(), command], capture_output=True, timeout=timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.robot}: {step}: `{command}` did not finish within {timeout_s:g} s") from None
        if proc.returncode != 0:
            out = _last(proc.stderr.decode("utf-8", "replace")) or _last(proc.stdout.decode("utf-8", "replace"))
            raise RemoteError(f"{self.robot}: {step}: `{command}` exited {proc.returncode}: {out}")

    def _ssh(self) -> list[str]:
        """The ssh command up to the host (the remote command follows)."""
        o = self.options
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"ConnectTimeout={int(o.connect_timeout_s)}", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3", "-T"]
        if o.known_hosts is not None:
            cmd += ["-o", f"UserKnownHostsFile={o.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if o.identity is not None:
            cmd += ["-i", str(o.identity), "-o", "IdentitiesOnly=yes"]
        if self.robot.port is not None:
            cmd += ["-p", str(self.robot.port)]
        if self.robot.user is not None:
            cmd += ["-l", self.robot.user]
        for extra in o.extra:
            cmd += ["-o", extra]
        return [*cmd, "--", self.robot.host]

    def call(self, step: str, op: str, *args: str, stdin: Union[bytes, BinaryIO, None] = None,
             timeout_s: float = 600.0) -> dict[str, Any]:
        """The agent's JSON answer; :class:`HostKeyError` / :class:`RemoteError` naming robot and step."""
        feed: dict[str, Any] = ({"input": stdin} if isinstance(stdin, bytes)
                                else {"stdin": subprocess.DEVNULL if stdin is None else stdin})
        try:
            proc = subprocess.run(self.argv(op, *args), capture_output=True, timeout=timeout_s, **feed)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.robot}: {step}: no answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise RemoteError(f"{self.robot}: {step}: cannot run ssh ({exc})") from None
        err = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode == 255:
            if "host key" in err.lower() or "host identification has changed" in err.lower():
                raise HostKeyError(f"{self.robot}: {step}: the host key of {self.robot.host} is not in known_hosts "
                                   f"({self.options.known_hosts or 'ssh defaults'}) or has changed; refused, nothing "
                                   f"sent (check its fingerprint, then add it). ssh said: {_last(err)}")
            raise RemoteError(f"{self.robot}: {step}: ssh failed: {_last(err) or 'exit 255'}")
        answer = _answer(proc.stdout)
        if answer is None:
            raise RemoteError(f"{self.robot}: {step}: no answer from the agent (exit {proc.returncode}; is "
                              f"`{' '.join(self.options.xvla_edge)}` installed there?){': ' + _last(err) if err else ''}")
        if "error" in answer or proc.returncode != 0:
            raise RemoteError(f"{self.robot}: {step}: {answer.get('error', f'exit {proc.returncode}')}")
        return answer


def _answer(stdout: bytes) -> Optional[dict[str, Any]]:
    """The last line of the agent's output as a JSON object (None when there is none)."""
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def _last(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
