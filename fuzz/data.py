"""Typed values read off the front of a fuzz input.

Every read succeeds: past the end of the input the bytes are zeros, so any
input is a valid case, and the fuzzer's mutations map onto small changes of
the values read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class FuzzInput:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return max(len(self._data) - self._pos, 0)

    def take(self, n: int) -> bytes:
        """Exactly n bytes, zero-padded past the end of the input."""
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk + bytes(n - len(chunk))

    def uint(self, nbytes: int) -> int:
        """An unsigned little-endian int of nbytes bytes."""
        return int.from_bytes(self.take(nbytes), "little")

    def below(self, n: int) -> int:
        """An int in [0, n), n <= 2**32."""
        return self.uint(1 if n <= 256 else 2 if n <= 65536 else 4) % n

    def flag(self) -> bool:
        return self.uint(1) & 1 == 1

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def blob(self, max_len: int) -> bytes:
        """Variable-length bytes: a length (1 or 2 bytes), then that many bytes."""
        length = self.uint(1 if max_len < 256 else 2) % (max_len + 1)
        return self.take(min(length, self.remaining()))

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk
