"""The systemd notify protocol: ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` as datagrams to ``$NOTIFY_SOCKET``.

Written here (a dozen lines of socket code) rather than taken from the ``systemd`` Python bindings: those
need libsystemd headers to build, which robot images often lack, and the protocol is one datagram per
message. Sends never raise: the watchdog ping runs inside the control loop's real-time tick, and a
process not started by systemd (no ``$NOTIFY_SOCKET``) simply gets ``False``.

The control-loop process is a child of the daemon, so the unit needs ``NotifyAccess=all``;
``$WATCHDOG_PID`` is therefore not used to exclude children (see :func:`watchdog_interval`).
"""

from __future__ import annotations

import os
import socket
from typing import Optional


def notify(message: str) -> bool:
    """Send one notify message; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), address)
        return True
    except OSError:
        return False


def ready() -> bool:
    return notify("READY=1")


def stopping() -> bool:
    return notify("STOPPING=1")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> Optional[float]:
    """``WatchdogSec`` in seconds from ``$WATCHDOG_USEC``, or None when systemd expects no pings.

    ``$WATCHDOG_PID`` names the daemon's main process; its control-loop child pings on its behalf
    (``NotifyAccess=all``), so the variable is accepted for the main process and its children alike.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None
