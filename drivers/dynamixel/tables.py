"""X-series control table (Protocol 2.0) as plain data.

Addresses, sizes and access from the ROBOTIS e-Manual control tables, which are identical for the
models listed in ``MODEL_NUMBERS`` (e.g. https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/#control-table).
Registers below address 64 are EEPROM: the servo refuses writes to them while torque is on.
"""

from __future__ import annotations

import enum

from drivers import serial_bus

TICKS_PER_REV = 4096
CENTER_TICK = 2048
EEPROM_END = 64
WATCHDOG_UNIT_S = 0.020  # Bus_Watchdog counts in 20 ms steps
RETURN_DELAY_UNIT_S = 2e-6  # Return_Delay_Time counts in 2 us steps
VELOCITY_UNIT_RPM = 0.229  # Present_Velocity / Goal_Velocity unit
#: The rates an X-series servo's Baud_Rate register selects (values 0 ... 7), bit/s.
BAUD_RATES = (9600, 57600, 115200, 1_000_000, 2_000_000, 3_000_000, 4_000_000, 4_500_000)


class Register(serial_bus.Register):
    """One control-table entry (:class:`drivers.serial_bus.Register`); registers below 64 are EEPROM."""

    @property
    def eeprom(self) -> bool:
        return self.address < EEPROM_END


# EEPROM area
MODEL_NUMBER = Register("Model_Number", 0, 2, writable=False)
FIRMWARE_VERSION = Register("Firmware_Version", 6, 1, writable=False)
ID = Register("ID", 7, 1)
BAUD_RATE = Register("Baud_Rate", 8, 1)
RETURN_DELAY_TIME = Register("Return_Delay_Time", 9, 1)
DRIVE_MODE = Register("Drive_Mode", 10, 1)
OPERATING_MODE = Register("Operating_Mode", 11, 1)
SECONDARY_ID = Register("Secondary_ID", 12, 1)
HOMING_OFFSET = Register("Homing_Offset", 20, 4, signed=True)
VELOCITY_LIMIT = Register("Velocity_Limit", 44, 4)
MAX_POSITION_LIMIT = Register("Max_Position_Limit", 48, 4)
MIN_POSITION_LIMIT = Register("Min_Position_Limit", 52, 4)
SHUTDOWN = Register("Shutdown", 63, 1)
# RAM area
TORQUE_ENABLE = Register("Torque_Enable", 64, 1)
LED = Register("LED", 65, 1)
STATUS_RETURN_LEVEL = Register("Status_Return_Level", 68, 1)
HARDWARE_ERROR_STATUS = Register("Hardware_Error_Status", 70, 1, writable=False)
POSITION_D_GAIN = Register("Position_D_Gain", 80, 2)
POSITION_I_GAIN = Register("Position_I_Gain", 82, 2)
POSITION_P_GAIN = Register("Position_P_Gain", 84, 2)
BUS_WATCHDOG = Register("Bus_Watchdog", 98, 1, signed=True)  # 0 off/clear, 1..127 x 20 ms, -1 tripped
GOAL_PWM = Register("Goal_PWM", 100, 2, signed=True)
GOAL_CURRENT = Register("Goal_Current", 102, 2, signed=True)
GOAL_VELOCITY = Register("Goal_Velocity", 104, 4, signed=True)
PROFILE_ACCELERATION = Register("Profile_Acceleration", 108, 4)
PROFILE_VELOCITY = Register("Profile_Velocity", 112, 4)
GOAL_POSITION = Register("Goal_Position", 116, 4, signed=True)
MOVING = Register("Moving", 122, 1, writable=False)
PRESENT_CURRENT = Register("Present_Current", 126, 2, writable=False, signed=True)
PRESENT_VELOCITY = Register("Present_Velocity", 128, 4, writable=False, signed=True)
PRESENT_POSITION = Register("Present_Position", 132, 4, writable=False, signed=True)
PRESENT_INPUT_VOLTAGE = Register("Present_Input_Voltage", 144, 2, writable=False)
PRESENT_TEMPERATURE = Register("Present_Temperature", 146, 1, writable=False)

X_SERIES: tuple[Register, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Register))
GOAL_REGISTERS = (GOAL_PWM, GOAL_CURRENT, GOAL_VELOCITY, GOAL_POSITION)  # read-only after a watchdog trip
WATCHDOG_TRIPPED = -1

MODEL_NUMBERS = {
    1020: "XM430-W350",
    1030: "XM430-W210",
    1060: "XL430-W250",
    1120: "XM540-W270",
    1190: "XL330-M077",
    1200: "XL330-M288",
}


class OperatingMode(enum.IntEnum):
    """Operating_Mode (11) values."""

    CURRENT = 0  # torque control
    VELOCITY = 1
    POSITION = 3  # one turn, Min/Max_Position_Limit enforced
    EXTENDED_POSITION = 4  # multi-turn, limits not enforced
    CURRENT_BASED_POSITION = 5  # multi-turn with current limit
    PWM = 16


POSITION_MODES = (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION, OperatingMode.CURRENT_BASED_POSITION)


class HardwareError(enum.IntFlag):
    """Hardware_Error_Status (70) bits; any set bit raises the alert bit in status packets."""

    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20


def describe_hardware_error(bits: int) -> str:
    names = [flag.name for flag in HardwareError if bits & flag]
    return "+".join(n for n in names if n) or "none"
