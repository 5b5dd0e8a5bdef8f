"""A lean HTTP/1.1 keep-alive sender for pre-built requests (the bench's timed phase).

The general client (aiohttp) costs about as much CPU per request as the vendor
spends serving it; on a shared machine that would measure the load generator.
Here a request is bytes built before the clock starts and a response is parsed
only as far as status, Content-Length and body.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024


class ResponseError(Exception):
    """The service answered something this sender does not parse (or hung up)."""


def build_post(url: str, path: str, body: bytes) -> bytes:
    """A complete keep-alive POST with a JSON body."""
    host = urlsplit(url).netloc
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class RawConnection:
    """One connection, one request in flight; reconnects after the server closes."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Status and body of the response to one pre-built request."""
        reader, writer = await self._connect()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as error:
            self.close()
            raise ResponseError(f"connection failed: {error!r}") from error
        status_line, _, header_block = head.partition(b"\r\n")
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.close()
            raise ResponseError(f"bad status line {status_line[:80]!r}") from None
        length: int | None = None
        keep_alive = True
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
            elif name == b"transfer-encoding":
                self.close()
                raise ResponseError("chunked responses are not supported here")
        if length is None:
            self.close()
            raise ResponseError("response without Content-Length")
        try:
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, OSError) as error:
            self.close()
            raise ResponseError(f"connection failed: {error!r}") from error
        if not keep_alive:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
