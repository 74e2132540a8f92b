"""uvicorn's httptools protocol with a bound on a request's head: 431 (414 for the URL) beyond it.

llhttp bounds neither the request line nor the headers, and uvicorn adds no bound: a 1 MB header was read whole
and the request served (issue 33 saw a 100 KB one closed with no reply). Here the request line and
headers of a request may take at most :data:`MAX_HEAD_BYTES`. They are counted twice: as the parser hands them
over (exact, even for a head that arrives in one read) and as bytes arrive while a head is incomplete (so a
head that never ends is refused once the limit is passed, not buffered). Either way the client gets one JSON
error response and the connection is closed. Websocket handshakes are HTTP requests and are bounded too.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from xvla.errors import XVLAError

MAX_HEAD_BYTES = 32 << 10
REASONS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}
log = logging.getLogger("xvla_edge.serve")


class HeadTooLarge(XVLAError):
    """Raised in a parser callback to stop parsing a head over the limit."""


class HeadLimitedProtocol(HttpToolsProtocol):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # from the end of a request (or the connection's start) to the end of the next head
        self._received = 0  # bytes received while in a head
        self._parsed = 0  # bytes of the current head the parser has handed over
        self._refusal: Optional[int] = None

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._received += len(data)
        super().data_received(data)
        if self._in_head and self._received > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._refuse(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 414)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 431)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._received = True, 0

    def _count(self, size: int, status: int) -> None:
        self._parsed += size
        if self._parsed > MAX_HEAD_BYTES:
            self._refusal = status
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which a callback's :class:`HeadTooLarge` becomes."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(self._refusal)

    def _refuse(self, status: int) -> None:
        part = "request line" if status == 414 else "request line and headers"
        log.info("refused a request from %s (%d): %s over %d bytes", self.client, status, part, MAX_HEAD_BYTES)
        body = json.dumps({"error": f"{part} larger than {MAX_HEAD_BYTES} bytes"}).encode()
        head = (f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
