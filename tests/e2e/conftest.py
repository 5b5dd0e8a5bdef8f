"""End-to-end fixtures: real `nanomoni issuer|vendor` subprocesses on loopback ports,
once on SQLite and once on Redis (a redis-server the fixture starts and stops).

Payments are built here with nanomoni.crypto directly (keys, PayWord chains,
Merkle trees), independent of the client library.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_servers import redis_server

from nanomoni import crypto
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.launch import ServiceProcess, start_issuer, start_vendor
from nanomoni.protocol.model import Mode
from nanomoni.store.audit import audit

ADMIN_TOKEN = "e2e-admin-token"
INITIAL_BALANCE = 1_000_000
MODES = [mode.value for mode in Mode]
TREE_MODES = ("paytree", "paytree_first_opt", "paytree_second_opt")


# --- parties and channels ---------------------------------------------------------------


@dataclass
class Party:
    key: crypto.SigningKey

    @classmethod
    def new(cls, kind: str = "p256") -> Party:
        return cls(crypto.SigningKey.generate(kind))

    @property
    def pk(self) -> str:
        return b64encode(self.key.public_key_der)

    def sign_b64(self, message: bytes) -> str:
        return b64encode(self.key.sign(message))


def index_name(mode: str) -> str:
    return "k" if mode == "payword" else "i"


@dataclass
class Channel:
    """An opened channel and the client's commitment; builds payment bodies."""

    mode: str
    channel_id: str
    client: Party
    amount: int
    unit: int
    max_index: int
    alg: str
    chain: crypto.PaywordChain | None = None
    tree: crypto.MerkleTree | None = None
    secrets: list[bytes] = field(default_factory=list)  # leaf j = H(secrets[j])
    open_body: dict[str, Any] = field(default_factory=dict)  # the signed open request
    last: int | None = None  # highest index the vendor accepted (first-opt pruning)
    known: set[tuple[int, int]] = field(default_factory=set)  # second-opt K
    sent: dict[int, dict[str, Any]] = field(default_factory=dict)  # accepted bodies, for replays

    def body(self, index: int) -> dict[str, Any]:
        """The payment for `index`; an accepted index gets its accepted body again (a replay)."""
        if index in self.sent:
            return self.sent[index]
        if self.mode == "signature":
            message = canonical_json(
                {"channel_id": self.channel_id, "cumulative_owed_amount": index}
            )
            return {
                "channel_id": self.channel_id,
                "cumulative_owed_amount": index,
                "signature_b64": self.client.sign_b64(message),
            }
        if self.mode == "payword":
            assert self.chain is not None
            return {"k": index, "token_b64": b64encode(self.chain.token(index))}
        assert self.tree is not None
        siblings = self.tree.proof(index)
        depth = self.tree.depth
        if self.mode == "paytree_first_opt":
            siblings = siblings[: crypto.first_opt_levels(index, self.last, depth)]
        elif self.mode == "paytree_second_opt":
            missing, _ = crypto.second_opt_levels(index, depth, self._is_known)
            siblings = [siblings[level] for level in missing]
        return {
            "i": index,
            "secret_b64": b64encode(self.secrets[index]),
            "siblings_b64": [b64encode(s) for s in siblings],
        }

    def consent(self, action: str = "vendor_close") -> str:
        """The client's signed consent to `action` on this channel (SPEC §4.6, §5.6)."""
        message = canonical_json({"action": action, "channel_id": self.channel_id})
        return self.client.sign_b64(message)

    def payword_settlement(
        self, key: crypto.SigningKey, vendor_pk: str, k: int, final: bool | None = None
    ) -> dict[str, Any]:
        """The settlement body a vendor would send for payword index k (SPEC §4.5);
        `final=False` makes it a checkpoint (the vendor's signature covers it)."""
        assert self.chain is not None
        token = b64encode(self.chain.token(k))
        signed: dict[str, Any] = {"channel_id": self.channel_id, "k": k, "token_b64": token}
        if final is not None:
            signed["final"] = final
        body = {
            "vendor_public_key_der_b64": vendor_pk,
            "k": k,
            "token_b64": token,
            "vendor_signature_b64": b64encode(key.sign(canonical_json(signed))),
        }
        return body if final is None else body | {"final": final}

    def _is_known(self, level: int, pos: int) -> bool:
        assert self.tree is not None
        return level == self.tree.depth or (level, pos) in self.known

    def accepted(self, index: int, body: dict[str, Any]) -> None:
        """Advance what the client knows the vendor knows (after a 2xx)."""
        self.sent.setdefault(index, body)
        self.last = index if self.last is None else max(self.last, index)
        if self.tree is not None:
            for level in range(self.tree.depth + 1):
                self.known.add((level, index >> level))
                if level < self.tree.depth:
                    self.known.add((level, (index >> level) ^ 1))


def assert_error(reply: httpx.Response, status: int, code: str, *words: str) -> None:
    """The SPEC §6 error body with this status and code; the detail mentions every word."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code, body
    for word in words:
        assert word in body["detail"].lower(), body


class Stack:
    """HTTP access to one issuer + vendor pair."""

    def __init__(self, issuer: ServiceProcess, vendor: ServiceProcess) -> None:
        self.issuer_url = issuer.url
        self.vendor_url = vendor.url
        self.issuer = httpx.Client(base_url=issuer.url + "/api/v1/issuer", timeout=30)
        self.vendor = httpx.Client(base_url=vendor.url + "/api/v1/vendor", timeout=30)
        self.vendor_pk = self._vendor_key()

    def _vendor_key(self) -> str:
        deadline = time.monotonic() + 20
        key: str = self.vendor.get("/keys/public").json()["public_key_der_b64"]
        # The vendor registers itself in the background: wait until it has.
        while self.issuer.get("/accounts", params={"public_key_der_b64": key}).status_code != 200:
            assert time.monotonic() < deadline, "vendor never registered at the issuer"
            time.sleep(0.05)
        return key

    expect_error = staticmethod(assert_error)

    @staticmethod
    def party(kind: str = "p256") -> Party:
        """A fresh key, not registered."""
        return Party.new(kind)

    def use_vendor(self, vendor: ServiceProcess) -> None:
        """Talk to another (e.g. restarted) vendor process."""
        self.vendor.close()
        self.vendor_url = vendor.url
        self.vendor = httpx.Client(base_url=vendor.url + "/api/v1/vendor", timeout=30)

    def close(self) -> None:
        self.issuer.close()
        self.vendor.close()

    def register(self, party: Party) -> int:
        reply = self.issuer.post("/accounts", json={"client_public_key_der_b64": party.pk})
        assert reply.status_code == 201, reply.text
        return int(reply.json()["balance"])

    def balance(self, pk: str) -> int:
        reply = self.issuer.get("/accounts", params={"public_key_der_b64": pk})
        assert reply.status_code == 200, reply.text
        return int(reply.json()["balance"])

    def client(self, kind: str = "p256") -> Party:
        party = Party.new(kind)
        assert self.register(party) == INITIAL_BALANCE
        return party

    def open_request(
        self,
        mode: str,
        client: Party,
        *,
        amount: int,
        unit: int,
        max_index: int,
        alg: str | None,
        root: bytes | None,
        vendor_pk: str | None = None,
        nonce: bytes | None = None,
        issuer_key: str | None = None,
        ttl_s: int | None = None,
    ) -> dict[str, Any]:
        """A signed open body; a fresh 16-byte nonce unless one is given."""
        body: dict[str, Any] = {
            "client_public_key_der_b64": client.pk,
            "vendor_public_key_der_b64": vendor_pk or self.vendor_pk,
            "amount": amount,
        }
        if alg is not None:
            body["hash_alg"] = alg
        # A fresh nonce: equal terms are then a new channel, not a replay of an earlier open.
        body["nonce_b64"] = b64encode(os.urandom(16) if nonce is None else nonce)
        if issuer_key is not None:
            body["issuer_public_key_der_b64"] = issuer_key
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        if mode != "signature":
            assert root is not None
            body[f"{mode}_root_b64"] = b64encode(root)
            body[f"{mode}_unit_value"] = unit
            body[f"{mode}_max_{index_name(mode)}"] = max_index
        body["open_signature_b64"] = client.sign_b64(canonical_json(body))
        return body

    def open(
        self,
        mode: str,
        client: Party | None = None,
        *,
        amount: int = 1000,
        unit: int = 10,
        max_index: int = 64,
        alg: str | None = None,
        vendor_pk: str | None = None,
        ttl_s: int | None = None,
    ) -> Channel:
        client = client or self.client()
        suite = alg or "sha256"
        chain = tree = None
        root = None
        secrets: list[bytes] = []
        if mode == "payword":
            chain = crypto.PaywordChain(os.urandom(32), max_index, suite)
            root = chain.root
        elif mode in TREE_MODES:
            secrets = [os.urandom(32) for _ in range(max_index + 1)]
            tree = crypto.MerkleTree.from_secrets(secrets, suite)
            root = tree.root
        body = self.open_request(
            mode,
            client,
            amount=amount,
            unit=unit,
            max_index=max_index,
            alg=alg,
            root=root,
            vendor_pk=vendor_pk,
            ttl_s=ttl_s,
        )
        reply = self.issuer.post(f"/channels/{mode}", json=body)
        assert reply.status_code == 201, reply.text
        opened = reply.json()
        assert opened["balance"] == 0 and opened["amount"] == amount and opened["hash_alg"] == suite
        return Channel(
            mode,
            opened["channel_id"],
            client,
            amount,
            1 if mode == "signature" else unit,
            max_index,
            suite,
            chain,
            tree,
            secrets,
            body,
        )

    def pay(
        self, channel: Channel, index: int, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        body = body if body is not None else channel.body(index)
        path = f"/channels/{channel.mode}/{channel.channel_id}/payments"
        reply = self.vendor.post(path, json=body)
        if reply.status_code in (200, 201):
            channel.accepted(index, body)
        return reply

    def close_channel(self, channel: Channel) -> httpx.Response:
        """The client asks the vendor to settle (signed consent, SPEC §5.6)."""
        return self.vendor.post(
            f"/channels/{channel.mode}/{channel.channel_id}/closure-requests",
            json={"channel_id": channel.channel_id, "client_signature_b64": channel.consent()},
        )

    def read(self, channel: Channel) -> dict[str, Any]:
        reply = self.issuer.get(f"/channels/{channel.mode}/{channel.channel_id}")
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result


# --- fixtures ------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Store URLs and data directories for one issuer + vendor pair."""

    root: Path
    issuer_store: str | None
    vendor_store: str | None

    def start_issuer(self, **kwargs: Any) -> ServiceProcess:
        return start_issuer(
            data_dir=self.root / "issuer",
            store=self.issuer_store,
            admin_token=ADMIN_TOKEN,
            initial_balance=INITIAL_BALANCE,
            **kwargs,
        )

    def start_vendor(self, issuer_url: str, **kwargs: Any) -> ServiceProcess:
        return start_vendor(
            data_dir=self.root / "vendor", issuer_url=issuer_url, store=self.vendor_store, **kwargs
        )


def assert_audited(deployment: Deployment) -> None:
    """Whatever a module did to a deployment, its books balance (`nanomoni audit`)."""
    urls = [
        deployment.issuer_store or f"sqlite:{deployment.root / 'issuer' / 'issuer.sqlite3'}",
        deployment.vendor_store or f"sqlite:{deployment.root / 'vendor' / 'vendor.sqlite3'}",
    ]
    for url in urls:
        if url.startswith("sqlite:") and not Path(url.removeprefix("sqlite:")).is_file():
            continue  # this module never started that service
        report = asyncio.run(audit(url))
        assert report.ok, "\n".join([url, *report.lines])


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"e2e-{request.param}")
    if request.param == "sqlite":
        deployment = Deployment(root, None, None)  # the embedded default store in each data dir
        yield deployment
        assert_audited(deployment)
        return
    with redis_server() as redis:
        base = redis.url.rsplit("/", 1)[0]
        deployment = Deployment(root, f"{base}/0", f"{base}/1")
        yield deployment
        assert_audited(deployment)


@pytest.fixture(scope="module")
def stack(deployment: Deployment) -> Iterator[Stack]:
    """An issuer and a vendor shared by the tests of one module (each test uses fresh parties)."""
    with deployment.start_issuer() as issuer, deployment.start_vendor(issuer.url) as vendor:
        net = Stack(issuer, vendor)
        try:
            yield net
        finally:
            net.close()
            assert vendor.stop() == 0
            assert issuer.stop() == 0


@pytest.fixture(scope="session")
def stack_factory() -> type[Stack]:
    """Builds a Stack for services a test started itself: stack_factory(issuer, vendor)."""
    return Stack
