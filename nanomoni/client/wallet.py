"""The client's key: generate one of the three kinds, or load/save PKCS#8 PEM."""

from __future__ import annotations

import os
from pathlib import Path

from nanomoni.crypto import SigningKey
from nanomoni.encoding import b64encode


class Wallet:
    """One signing key and the public identity derived from it."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        # The issuer compares keys by their base64 text, so compute it once.
        self.public_key_b64 = b64encode(key.public_key_der)

    @property
    def kind(self) -> str:
        return self.key.kind

    @classmethod
    def generate(cls, kind: str = "p256") -> Wallet:
        return cls(SigningKey.generate(kind))

    @classmethod
    def load(cls, path: Path) -> Wallet:
        return cls(SigningKey.from_pem(path.read_bytes()))

    @classmethod
    def load_or_create(cls, path: Path, kind: str = "p256") -> Wallet:
        """Reuse the key at `path`, or create it there (owner-only permissions)."""
        if path.exists():
            return cls.load(path)
        wallet = cls.generate(kind)
        wallet.save(path)
        return wallet

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.key.to_pem())

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def sign_b64(self, message: bytes) -> str:
        return b64encode(self.key.sign(message))
