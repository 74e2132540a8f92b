"""What follows a switch of ``current``: make it durable, record it in the history, clean up.

Once ``current`` has changed, the operation has happened: a failure of what follows is reported as a warning,
never raised, so a caller reports what ``current`` points at.

Clean-up runs after a successful switch only (never on a refused or failed command) and removes only names a
flash creates: ``.staging-<pid>`` and ``.staging-<pid>.<link>`` in ``DIR``, and in ``bundles/`` the
``<embodiment>-d<domain>-<precision>-<12 hex>`` directories (with their ``.N`` suffixes) that neither
``current`` nor ``previous`` points at. Those are what a failed or killed flash left; the lock held here means
no live flash owns them. Anything else there (``<name>.keep``, notes) is left alone and named once in the
output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from xvla.files import fsync_directory, remove_path
from xvla_edge.deploy.history import record
from xvla_edge.deploy.layout import BUNDLES, CURRENT, HISTORY, INSTALLED_NAME, PREVIOUS, STAGING_NAME, link_target


def settle(robot: Path, say: Callable[[str], None], action: str, active: Path, previous: Optional[Path],
           **extra: object) -> None:
    """Make the switch to ``active`` durable, record it, clean up; a failure is a warning through ``say``."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("make the switch durable (fsync)", lambda: fsync_directory(robot)),
        (f"append to {HISTORY}", lambda: record(robot, action, active, previous, say, **extra)),
        ("clean up", lambda: clean(robot, say))]
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - any failure after the switch: reported, not raised
            say(f"warning: {action} done ({robot / CURRENT} -> {active.name}), but could not {what}: "
                f"{type(exc).__name__}: {exc}")


def clean(robot: Path, say: Callable[[str], None]) -> None:
    """Remove staging leftovers and the installed bundles neither ``current`` nor ``previous`` points at, by the
    names a flash gives them (:data:`~xvla_edge.deploy.layout.STAGING_NAME`,
    :data:`~xvla_edge.deploy.layout.INSTALLED_NAME`); say which other names in ``bundles/`` are left alone."""
    keep = {link_target(robot, CURRENT), link_target(robot, PREVIOUS)}
    bundles = sorted((robot / BUNDLES).iterdir()) if (robot / BUNDLES).is_dir() else []
    foreign = [b.name for b in bundles if not INSTALLED_NAME.fullmatch(b.name)]
    for path in [*(p for p in robot.iterdir() if STAGING_NAME.fullmatch(p.name)),
                 *(b for b in bundles if INSTALLED_NAME.fullmatch(b.name) and b.resolve() not in keep)]:
        remove_path(path)
    if foreign:
        say(f"left alone in {robot / BUNDLES} (not names flash gives): {', '.join(foreign[:5])}"
            + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""))
