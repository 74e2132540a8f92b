"""The part of ``serial.Serial`` the serial arm backends use, so tests and emulators can stand in for it."""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...
