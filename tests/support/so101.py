"""An SO-101 as the Feetech tests and the daemon test use it: the emulator's ``lerobot-calibrate`` file
(:data:`drivers.feetech.emulator.SO101_CALIBRATION`) written to a folder, and servos that hold it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drivers.feetech import emulator

CALIBRATION = emulator.SO101_CALIBRATION


def write_calibration(folder: Path, data: dict[str, Any] | None = None, name: str = "so101_follower.json") -> Path:
    """The calibration file ``folder/name`` holding ``data`` (default :data:`CALIBRATION`)."""
    path = Path(folder) / name
    path.write_text(json.dumps(CALIBRATION if data is None else data, indent=4))
    return path


def chain_config(data: dict[str, Any] | None = None, **fields: Any) -> emulator.ChainConfig:
    """Emulated servos holding ``data``'s homing offsets and ranges (as ``lerobot-calibrate`` leaves them)."""
    return emulator.ChainConfig.from_lerobot(CALIBRATION if data is None else data, **fields)
