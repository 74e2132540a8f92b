"""Every JSON file the project reads from outside refuses a hostile one (nested 100,000 deep, not UTF-8) with
its own named error, never a RecursionError or UnicodeDecodeError traceback."""

from __future__ import annotations

import pytest

from calibration.errors import CalibrationError
from calibration.sets import load_set
from drivers.arm import ArmError
from drivers.dynamixel.joint_offsets import ArmCalibration
from xvla.config import load_config
from xvla.errors import XVLAError
from xvla.preprocessing import ImageProcessor

try:
    from xvla.lora import read_adapter
except ImportError:  # no safetensors (a robot install): the adapter reader is not there
    read_adapter = None

HOSTILE = {"nested": ("[" * 100_000 + "]" * 100_000).encode(), "latin-1": '{"name": "caf\xe9"}'.encode("latin-1")}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_json_is_refused_by_name(tmp_path, kind):
    for name in ("calibration.json", "config.json", "preprocessor_config.json", "arm.json", "adapter_config.json"):
        (tmp_path / name).write_bytes(HOSTILE[kind])
    with pytest.raises(CalibrationError, match="calibration.json: not valid JSON"):
        load_set(tmp_path)
    with pytest.raises(XVLAError, match="config.json: not valid JSON"):
        load_config(tmp_path)
    with pytest.raises(XVLAError, match="preprocessor_config.json: not valid JSON"):
        ImageProcessor.from_dir(tmp_path)
    with pytest.raises(ArmError, match="cannot read calibration .*arm.json"):
        ArmCalibration.load(tmp_path / "arm.json")
    if read_adapter is not None:
        with pytest.raises(XVLAError, match="adapter_config.json: not valid JSON"):
            read_adapter(tmp_path)
