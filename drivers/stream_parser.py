"""The streaming skeleton shared by the serial protocols' parsers: buffer, find a header, resynchronise.

A subclass names its ``HEADER`` bytes and the ``HEAD_SIZE`` of a frame's head (through its length field and
any check of the head), and supplies two hooks: :meth:`StreamParser._frame_size` (the whole frame's size
from its head, or None for a bad head) and :meth:`StreamParser._decode` (the decoded frame, or None when its
checks fail). :func:`decode_one` decodes a buffer that must hold exactly one frame. Pure, no I/O, no numpy.
"""

from __future__ import annotations

import abc
from typing import Callable, ClassVar, Generic, TypeVar

T = TypeVar("T")


class StreamParser(abc.ABC, Generic[T]):
    """Streaming decoder: feed raw bytes, get whole frames; never raises on input.

    Bytes that cannot start a frame are dropped and counted in ``discarded``. A candidate whose head or
    checks are bad counts in ``corrupt``, and the search resumes one byte after its header, so a frame
    hidden behind a corrupted length is still found.
    """

    HEADER: ClassVar[bytes]
    HEAD_SIZE: ClassVar[int]  # bytes a frame's head takes (header, length, any head check)

    def __init__(self) -> None:
        self._buf = bytearray()
        self.discarded = 0
        self.corrupt = 0

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet part of a decoded frame."""
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[T]:
        self._buf += data
        frames: list[T] = []
        while True:
            start = self._buf.find(self.HEADER)
            if start < 0:
                self._drop(len(self._buf) - self._partial_header_len())
                return frames
            self._drop(start)
            if len(self._buf) < self.HEAD_SIZE:
                return frames
            size = self._frame_size(self._buf)
            if size is None:
                self._reject()
                continue
            if len(self._buf) < size:
                return frames
            frame = self._decode(bytes(self._buf[:size]))
            if frame is None:
                self._reject()
                continue
            del self._buf[:size]
            frames.append(frame)

    @abc.abstractmethod
    def _frame_size(self, head: bytearray) -> int | None:
        """The size of the frame starting at ``head`` (at least ``HEAD_SIZE`` bytes), or None if the head is bad."""

    @abc.abstractmethod
    def _decode(self, raw: bytes) -> T | None:
        """The frame in ``raw`` (exactly one frame's bytes), or None when its checks fail."""

    def _reject(self) -> None:
        self.corrupt += 1
        self._drop(1)

    def _drop(self, n: int) -> None:
        self.discarded += n
        del self._buf[:n]

    def _partial_header_len(self) -> int:
        """How many bytes at the buffer's end could begin a header (kept for the next feed)."""
        for n in range(min(len(self.HEADER) - 1, len(self._buf)), 0, -1):
            if self._buf.endswith(self.HEADER[:n]):
                return n
        return 0


def decode_one(parser: StreamParser[T], data: bytes, error: Callable[[str], Exception], what: str) -> T:
    """The one ``what`` (a frame, a packet) in ``data``, decoded by a fresh ``parser``; raises ``error(message)``
    when ``data`` holds none, several, or bytes besides it."""
    frames = parser.feed(data)
    if len(frames) != 1 or parser.pending or parser.discarded:
        raise error(f"expected exactly one valid {what} in {len(data)} bytes, found {len(frames)} "
                    f"({parser.discarded} bytes discarded, {parser.pending} left over)")
    return frames[0]
