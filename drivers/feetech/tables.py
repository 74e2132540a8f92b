"""The STS3215 control table (Feetech STS/SMS series, protocol 0) as plain data.

Addresses and sizes as Feetech's STS/SMS manual and LeRobot's ``motors/feetech/tables.py`` give them; the sign
encodings too: Homing_Offset is sign-magnitude with the sign in bit 11, Goal_Velocity and Present_Velocity in bit
15. Registers below 40 are EEPROM ("EPROM" in Feetech's tables); the servo saves writes to them only while Lock
(55) is 0. Positions are ticks, 4096 a turn; velocities ticks per second.
"""

from __future__ import annotations

import enum

from drivers.serial_bus import Register

TICKS_PER_REV = 4096
MAX_TICK = TICKS_PER_REV - 1  # LeRobot's "max_res": a turn is 4095 ticks in its conversions
MAX_SPEED = 2 * TICKS_PER_REV  # ticks/s no STS servo reaches (an STS3215 turns under once a second)
EEPROM_END = 40
RETURN_DELAY_UNIT_S = 2e-6  # Return_Delay_Time counts in 2 us steps
#: Baud_Rate register value → bit/s (the STS series' settings).
BAUD_RATES = {0: 1_000_000, 1: 500_000, 2: 250_000, 3: 128_000, 4: 115_200, 5: 57_600, 6: 38_400, 7: 19_200}
#: Model_Number → model (the STS series this driver knows; LeRobot's numbers).
MODEL_NUMBERS = {777: "STS3215", 2825: "STS3250"}

# EEPROM
FIRMWARE_MAJOR = Register("Firmware_Major_Version", 0, 1, writable=False)
FIRMWARE_MINOR = Register("Firmware_Minor_Version", 1, 1, writable=False)
MODEL_NUMBER = Register("Model_Number", 3, 2, writable=False)
ID = Register("ID", 5, 1)
BAUD_RATE = Register("Baud_Rate", 6, 1)
RETURN_DELAY_TIME = Register("Return_Delay_Time", 7, 1)
RESPONSE_STATUS_LEVEL = Register("Response_Status_Level", 8, 1)  # 0: answer PING and READ only
MIN_POSITION_LIMIT = Register("Min_Position_Limit", 9, 2)
MAX_POSITION_LIMIT = Register("Max_Position_Limit", 11, 2)
MAX_TEMPERATURE_LIMIT = Register("Max_Temperature_Limit", 13, 1)
MAX_VOLTAGE_LIMIT = Register("Max_Voltage_Limit", 14, 1)
MIN_VOLTAGE_LIMIT = Register("Min_Voltage_Limit", 15, 1)
MAX_TORQUE_LIMIT = Register("Max_Torque_Limit", 16, 2)
PHASE = Register("Phase", 18, 1)
UNLOADING_CONDITION = Register("Unloading_Condition", 19, 1)  # error bits after which torque goes off
LED_ALARM_CONDITION = Register("LED_Alarm_Condition", 20, 1)
P_COEFFICIENT = Register("P_Coefficient", 21, 1)
D_COEFFICIENT = Register("D_Coefficient", 22, 1)
I_COEFFICIENT = Register("I_Coefficient", 23, 1)
HOMING_OFFSET = Register("Homing_Offset", 31, 2, sign_bit=11)
OPERATING_MODE = Register("Operating_Mode", 33, 1)
# SRAM
TORQUE_ENABLE = Register("Torque_Enable", 40, 1)
ACCELERATION = Register("Acceleration", 41, 1)
GOAL_POSITION = Register("Goal_Position", 42, 2)
GOAL_TIME = Register("Goal_Time", 44, 2)
GOAL_VELOCITY = Register("Goal_Velocity", 46, 2, sign_bit=15)
TORQUE_LIMIT = Register("Torque_Limit", 48, 2)
LOCK = Register("Lock", 55, 1)
PRESENT_POSITION = Register("Present_Position", 56, 2, writable=False)
PRESENT_VELOCITY = Register("Present_Velocity", 58, 2, writable=False, sign_bit=15)
PRESENT_LOAD = Register("Present_Load", 60, 2, writable=False)
PRESENT_VOLTAGE = Register("Present_Voltage", 62, 1, writable=False)  # 0.1 V
PRESENT_TEMPERATURE = Register("Present_Temperature", 63, 1, writable=False)  # deg C
STATUS = Register("Status", 65, 1, writable=False)  # the error bits of the status packets
MOVING = Register("Moving", 66, 1, writable=False)
PRESENT_CURRENT = Register("Present_Current", 69, 2, writable=False)

STS_SERIES: tuple[Register, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Register))
#: The registers a calibration lives in (written by ``lerobot-calibrate``, compared on connect and by the probe).
CALIBRATION_REGISTERS = (HOMING_OFFSET, MIN_POSITION_LIMIT, MAX_POSITION_LIMIT)
#: Present_Position and Present_Velocity: what a control tick reads, in one sync read.
STATE_ADDRESS, STATE_LENGTH = PRESENT_POSITION.address, PRESENT_POSITION.size + PRESENT_VELOCITY.size


def is_eeprom(reg: Register) -> bool:
    return reg.address < EEPROM_END


class OperatingMode(enum.IntEnum):
    """Operating_Mode (33) values."""

    POSITION = 0
    VELOCITY = 1
    PWM = 2
    STEP = 3
