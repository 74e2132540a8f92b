"""The official X-VLA server's connection-info file, for the clients that wait for it (``serve --connection-info``).

The official ``deploy.py`` writes ``info.json`` — ``{"host": str, "port": int, "job_id": str, "node_list": str}``,
the last two from ``SLURM_JOB_ID`` and ``SLURM_NODELIST`` (``"none"`` outside SLURM) — and refuses to start
while one exists. Its LIBERO, CALVIN and Simpler clients, given ``--connection_info PATH``, wait until the path
exists, read it once and post to ``http://{host}:{port}/act``. :func:`write` writes the same fields, with values
true to the socket the server listens on: ``port`` as bound (``--port 0``: the one the system chose), ``host`` as
a client reaches it (:func:`client_host`).

The file appears whole or not at all: the JSON is written to a temporary file in the same directory, which is
then hard-linked to the path — a link never replaces a file, so two servers cannot both claim one path, and a
client polling for the path never reads it half-written. :func:`published` removes it when the server stops
cleanly (Ctrl-C or SIGTERM), if it is still the file this server wrote; a killed server leaves it behind, and the
next start refuses it by name, as the official server does. Call :func:`published`'s block while the socket is
still open: the file's host and port are then this server's alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from xvla_edge.serve.server import ServeError

# Addresses reserved for documentation (RFC 5737, RFC 3849): connecting a UDP socket to one picks the interface
# of the default route and sends nothing.
_ROUTE_PROBES = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


def check_free(path: Path) -> None:
    """Refuse a path that exists (another server's file, or one a killed server left), creating the directory."""
    if path.exists() or path.is_symlink():
        raise _exists(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServeError(f"--connection-info {path}: cannot create its directory ({exc.strerror or exc})") from None


def _exists(path: Path) -> ServeError:
    return ServeError(f"--connection-info {path} already exists: another server is still running, or one stopped "
                      "without removing it; remove it, or name another path")


def client_host(bound: str) -> str:
    """The host a client reaches a socket bound to address ``bound`` at: that address; for a wildcard
    (``0.0.0.0``, ``::``) this machine's address on its default route (loopback where there is none). IPv6
    addresses come in brackets, so that ``f"http://{host}:{port}"`` is a URL."""
    address = ipaddress.ip_address(bound.split("%", 1)[0])
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    if address.is_unspecified:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((_ROUTE_PROBES[family], 9))
                bound = probe.getsockname()[0]
            except OSError:  # no route: only this machine can connect
                bound = "::1" if address.version == 6 else "127.0.0.1"
    return f"[{bound}]" if family == socket.AF_INET6 else bound


def fields(bound: str, port: int, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The file's fields for a socket bound to ``bound``:``port``, as the official server names and types them."""
    return {"host": client_host(bound), "port": int(port), "job_id": env.get("SLURM_JOB_ID", "none"),
            "node_list": env.get("SLURM_NODELIST") or "none"}


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection-info file written by :func:`write`: its path, its fields, its text and its identity (device,
    inode)."""

    path: Path
    fields: dict[str, Any]
    text: str
    identity: tuple[int, int]

    def remove(self) -> None:
        """Delete the file if it is still the one written: the same inode (a new file may be given a freed one)
        holding the same text (no other live server can name this server's host and port)."""
        with contextlib.suppress(OSError, UnicodeDecodeError):
            st = self.path.stat()
            if (st.st_dev, st.st_ino) == self.identity and self.path.read_text(encoding="utf-8") == self.text:
                self.path.unlink()


def write(path: Path, bound: str, port: int, env: Mapping[str, str] = os.environ) -> ConnectionInfo:
    """Write the file for a socket bound to ``bound``:``port`` at ``path``, whole at once; refuse if it exists."""
    info = fields(bound, port, env)
    text = json.dumps(info, indent=4)  # as deploy.py's json.dump(infos, f, indent=4)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep clients of other users out
        os.link(tmp, path)
        st = path.stat()
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise ServeError(f"--connection-info {path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return ConnectionInfo(path, info, text, (st.st_dev, st.st_ino))


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def published(path: Path, bound: str, port: int) -> Iterator[ConnectionInfo]:
    """The file, written for the duration of the block and removed after it. Meanwhile SIGTERM ends the process
    through ``SystemExit`` (uvicorn, which handles SIGTERM itself, raises it again after its graceful shutdown),
    so the file goes on SIGTERM as on Ctrl-C. Call from the main thread."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        info = write(path, bound, port)
        try:
            yield info
        finally:
            info.remove()
    finally:
        signal.signal(signal.SIGTERM, previous)
