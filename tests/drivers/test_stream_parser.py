"""drivers.stream_parser: both serial protocols' parsers are small subclasses of one skeleton, which buffers,
resynchronises and counts the same way for any header (shown here on a toy protocol)."""

from __future__ import annotations

from drivers.dynamixel.protocol import PacketParser
from drivers.stream_parser import StreamParser
from drivers.xvla_serial.codec import FrameParser


class ToyParser(StreamParser[bytes]):
    """``AB CD | LEN | payload | sum``: LEN <= 4, the last byte is the payload's sum mod 256."""

    HEADER = b"\xab\xcd"
    HEAD_SIZE = 3

    def _frame_size(self, head: bytearray) -> int | None:
        return 4 + head[2] if head[2] <= 4 else None

    def _decode(self, raw: bytes) -> bytes | None:
        return raw[3:-1] if sum(raw[3:-1]) % 256 == raw[-1] else None


def toy(payload: bytes) -> bytes:
    return b"\xab\xcd" + bytes([len(payload)]) + payload + bytes([sum(payload) % 256])


def test_both_protocol_parsers_share_the_skeleton():
    for parser in (PacketParser, FrameParser):
        assert issubclass(parser, StreamParser)
        for name in ("feed", "clear", "pending", "_reject", "_drop", "_partial_header_len"):
            assert name not in vars(parser), (parser.__name__, name)  # only the hooks are their own


def test_garbage_is_discarded_and_a_partial_header_kept():
    parser = ToyParser()
    assert parser.feed(b"\x00\x01" + toy(b"hi") + b"\x02\xab") == [b"hi"]
    assert (parser.discarded, parser.corrupt, parser.pending) == (3, 0, 1)
    assert parser.feed(b"\xcd\x01\x05\x05") == [b"\x05"] and parser.pending == 0


def test_split_delivery():
    parser, frames = ToyParser(), []
    for byte in toy(b"one") + toy(b"") + toy(b"two"):
        frames += parser.feed(bytes([byte]))
    assert frames == [b"one", b"", b"two"] and parser.discarded == 0


def test_a_bad_candidate_is_counted_and_the_scan_resumes_one_byte_after_its_header():
    bad_length = b"\xab\xcd\x09"  # LEN 9: the head is refused before its bytes arrive
    bad_sum = toy(b"abcd")[:-1] + b"\x00"
    hiding = b"\xab\xcd\x04"  # a corrupted header whose LEN swallows the next frame, which is still found
    parser = ToyParser()
    assert parser.feed(bad_length + bad_sum + hiding + toy(b"") + toy(b"ok")) == [b"", b"ok"]
    assert (parser.corrupt, parser.discarded, parser.pending) == (3, len(bad_length + bad_sum + hiding), 0)
