"""Prometheus plumbing of the HTTP endpoints: the exposition's content type, the installed version, and a
registry of one's own (not the global one) that starts with ``xvla_build_info`` (package version, Python,
machine). The daemon's and the server's metric sets are built on :func:`new_registry` in their packages.

No ``*_created`` series anywhere (``disable_created_metrics``): counters here start with the process.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Info, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()


def package_version() -> str:
    """The installed xvla-edge version ("unknown" when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xvla-edge")
    except PackageNotFoundError:
        return "unknown"


def new_registry(description: str) -> CollectorRegistry:
    """A registry holding ``xvla_build`` (``description``: its help text) with the package version, Python and
    machine as labels (value 1)."""
    registry = CollectorRegistry(auto_describe=True)
    Info("xvla_build", description, registry=registry).info(
        {"version": package_version(), "python": platform.python_version(), "machine": platform.machine()})
    return registry
