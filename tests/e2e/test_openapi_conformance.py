"""The services against their own OpenAPI documents (issue 14).

Generated: schemathesis builds requests from /schema/openapi.json of a running issuer
and vendor — its coverage phase (boundaries, members left out, other methods), then
schema-valid and schema-invalid ones, also on real channels of every mode — and checks
every answer: never a 500, a documented status and content type, a body the document
describes (an error: a code that route documents for that status), whatever breaks
the document refused, a 405 with its Allow header.
Lived: a whole lifecycle (every mode, replays, batch, top-up, checkpoint, closes,
the closing list) through the e2e helpers, each answer validated against the document.

Bounded and reproducible: a fixed number of examples per operation, derandomized,
no example database; every request goes to the two services on loopback.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from e2e.conftest import ADMIN_TOKEN, MODES, Channel, Deployment, Stack
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    missing_required_header,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from nanomoni import crypto, openapi
from nanomoni.encoding import b64encode, canonical_json
from nanomoni.issuer import operations as issuer_operations
from nanomoni.protocol.signed_requests import authorization
from nanomoni.vendor import operations as vendor_operations

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,  # what breaks the document is refused (4xx)
    # These two judge the coverage phase's cases: another method (405 with Allow),
    # a required header left out.
    unsupported_method,
    missing_required_header,
]
EXAMPLES = {GenerationMode.POSITIVE: 50, GenerationMode.NEGATIVE: 30}
# A batch is refused as a whole only for its envelope; an item that breaks the document
# is that item's refusal inside a 200 (SPEC §12), so a "schema-violating" batch passes.
ITEMS_JUDGED_ALONE = {"POST /api/v1/vendor/payments/batch"}
ON_A_CHANNEL = 10  # generated examples per operation on each real channel
CLOSING_PATH = "/api/v1/issuer/vendors/closing-channels"

# One store is enough here: the documents do not depend on it (and time is bounded).
pytestmark = pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)


def _checks(operation: Any) -> list[Any]:
    if operation.label in ITEMS_JUDGED_ALONE:
        return [check for check in CHECKS if check is not negative_data_rejection]
    return CHECKS


def load(base_url: str) -> Any:
    return schemathesis.openapi.from_url(base_url + "/schema/openapi.json")


class Generated:
    """Calls one service with generated cases, counting them per operation."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.schema = load(base_url)
        self.operations = [result.ok() for result in self.schema.get_all_operations()]
        self.session = requests.Session()
        self.cases: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()

    def examples(self, operation: Any, count: int, mode: GenerationMode, **fixed: Any) -> None:
        checks = _checks(operation)

        @settings(
            max_examples=count,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy(generation_mode=mode, **fixed))
        def call(case: Any) -> None:
            self.call(operation, case, checks)

        call()

    def call(self, operation: Any, case: Any, checks: list[Any]) -> None:
        response = case.call_and_validate(
            base_url=self.base_url, session=self.session, checks=checks, timeout=30
        )
        self.cases[operation.label] += 1
        self.statuses[response.status_code] += 1

    def coverage(self, operation: Any) -> None:
        """Schemathesis's coverage phase: boundary values, each required member or
        parameter left out, methods the route does not have (deterministic by itself)."""
        checks = _checks(operation)
        config = HypothesisTestConfig(
            project=self.schema.config,
            modes=[HypothesisTestMode.COVERAGE],
            settings=settings(derandomize=True, database=None, deadline=None),
        )
        create_test(
            operation=operation,
            test_func=lambda case: self.call(operation, case, checks),
            config=config,
        )()

    def run(self, channels: list[Channel]) -> int:
        try:
            for operation in self.operations:
                self.coverage(operation)
                inputs = len(operation.path_parameters) + len(operation.query) + len(operation.body)
                for mode, count in EXAMPLES.items():
                    if inputs or mode is GenerationMode.POSITIVE:  # else nothing to get wrong
                        self.examples(operation, count, mode)
                if "{channel_id}" in operation.path:  # past the 404 of an unknown channel
                    for channel in channels:
                        where = {"mode": channel.mode, "channel_id": channel.channel_id}
                        self.examples(
                            operation, ON_A_CHANNEL, GenerationMode.POSITIVE, path_parameters=where
                        )
        finally:
            self.session.close()
        assert set(self.cases) == {op.label for op in self.operations}  # every one was called
        return sum(self.cases.values())


@pytest.fixture
def channels(stack: Stack) -> list[Channel]:
    """One channel of each mode with one payment accepted."""
    opened = []
    for mode in MODES:
        channel = stack.open(mode, amount=640, max_index=64)
        assert stack.pay(channel, 1).status_code == 201
        opened.append(channel)
    return opened


def test_issuer_answers_generated_requests_as_documented(
    stack: Stack, channels: list[Channel]
) -> None:
    issuer = Generated(stack.issuer_url)
    total = issuer.run(channels)
    print(f"\nschemathesis, issuer: {total} cases, by status {sorted(issuer.statuses.items())}")
    assert issuer.statuses[200] >= len(channels)  # the real channels read back as documented
    for channel in channels:  # nothing generated could settle or close them
        assert stack.read(channel)["state"] == "open"


def test_vendor_answers_generated_requests_as_documented(
    stack: Stack, channels: list[Channel]
) -> None:
    vendor = Generated(stack.vendor_url)
    total = vendor.run(channels)
    print(f"\nschemathesis, vendor: {total} cases, by status {sorted(vendor.statuses.items())}")
    assert vendor.statuses[404] and vendor.statuses[422]
    for channel in channels:
        assert stack.read(channel)["state"] == "open"


def test_both_services_serve_their_document_and_an_offline_page(stack: Stack) -> None:
    built = {
        stack.issuer_url: openapi.document("issuer", issuer_operations.OPERATIONS),
        stack.vendor_url: openapi.document(
            "vendor", vendor_operations.OPERATIONS, vendor_operations.STREAMS
        ),
    }
    for url, doc in built.items():
        served = httpx.get(url + "/schema/openapi.json")
        assert served.headers["content-type"] == "application/json"
        assert served.json() == json.loads(json.dumps(doc))  # the table's document, as built
        page = httpx.get(url + "/schema")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/schema/openapi.json" in page.text and "https://" not in page.text
        # Litestar's own document and its CDN-backed viewers are gone.
        stack.expect_error(httpx.get(url + "/schema/swagger"), 404, "not_found")


class Validator:
    """An httpx response hook: every answer must be one the document describes."""

    def __init__(self, base_url: str) -> None:
        self.schema = load(base_url)
        self.seen: Counter[tuple[str, int]] = Counter()

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        operation = self.schema.find_operation_by_path(request.method, request.url.path)
        assert operation is not None, f"undocumented: {request.method} {request.url.path}"
        assert operation.responses.find_by_status_code(response.status_code) is not None, (
            f"{operation.label} answered an undocumented {response.status_code}: {response.text}"
        )
        operation.validate_response(response)
        self.seen[(operation.label, response.status_code)] += 1


@pytest.fixture
def validated(stack: Stack) -> Iterator[tuple[Validator, Validator]]:
    """The stack's clients with every answer validated against its service's document."""
    issuer, vendor = Validator(stack.issuer_url), Validator(stack.vendor_url)
    stack.issuer.event_hooks["response"].append(issuer)
    stack.vendor.event_hooks["response"].append(vendor)
    try:
        yield issuer, vendor
    finally:
        stack.issuer.event_hooks["response"].remove(issuer)
        stack.vendor.event_hooks["response"].remove(vendor)


def test_a_lifecycle_is_answered_as_documented(
    stack: Stack, deployment: Deployment, validated: tuple[Validator, Validator]
) -> None:
    issuer, vendor = validated
    client = stack.client()  # registers (201)
    stack.balance(client.pk)
    deposit = stack.issuer.post(
        "/accounts/deposits",
        json={"public_key_der_b64": client.pk, "amount": 5},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert deposit.status_code == 200, deposit.text
    stats = stack.issuer.get("/stats", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert stats.status_code == 200, stats.text
    opened = {mode: stack.open(mode, client, amount=640, max_index=64) for mode in MODES}
    for channel in opened.values():
        again = stack.issuer.post(f"/channels/{channel.mode}", json=channel.open_body)
        assert again.status_code == 200, again.text  # the same open: answered as the first
        for index, status in ((1, 201), (1, 200), (2, 201)):
            assert stack.pay(channel, index).status_code == status
    signature, payword = opened["signature"], opened["payword"]
    items = [
        {"mode": "signature", **signature.body(3)},
        {"mode": "payword", "channel_id": payword.channel_id, **payword.body(3)},
        {"mode": "payword", "channel_id": payword.channel_id, **payword.body(1)},  # refused
    ]
    batch = stack.vendor.post("/payments/batch", json={"payments": items})
    assert [item["status"] for item in batch.json()["results"]] == [201, 201, 400]
    up: dict[str, Any] = {
        "channel_id": signature.channel_id,
        "amount": 10,
        "nonce_b64": b64encode(os.urandom(16)),
    }
    up["client_signature_b64"] = client.sign_b64(canonical_json(up))
    topped = stack.issuer.post(f"/channels/signature/{signature.channel_id}/top-ups", json=up)
    assert topped.status_code == 200, topped.text
    vendor_key = crypto.SigningKey.from_pem(
        (deployment.root / "vendor" / "vendor-key.pem").read_bytes()
    )
    checkpoint = payword.payword_settlement(vendor_key, stack.vendor_pk, 2, final=False)
    settled = stack.issuer.post(
        f"/channels/payword/{payword.channel_id}/settlements", json=checkpoint
    )
    assert settled.status_code == 200, settled.text
    for channel in (signature, payword):
        assert stack.close_channel(channel).status_code == 204
    tree = opened["paytree"]
    consent = {"channel_id": tree.channel_id, "client_signature_b64": tree.consent("client_close")}
    closing = stack.issuer.post(
        f"/channels/paytree/{tree.channel_id}/client-closures", json=consent
    )
    assert closing.status_code == 202, closing.text
    signed = authorization(vendor_key, "GET", CLOSING_PATH, b"", int(time.time()))
    listed = stack.issuer.get("/vendors/closing-channels", headers={"authorization": signed})
    assert tree.channel_id in {c["channel_id"] for c in listed.json()["channels"]}
    for channel in opened.values():
        stack.read(channel)  # open, closing and closed views, every mode
    stack.expect_error(stack.pay(signature, 4), 400, "channel_closed")
    print(f"\nlived answers validated: issuer {issuer.seen.total()}, vendor {vendor.seen.total()}")
    every = {"/health", "/api/v1/issuer/keys/public", "/api/v1/vendor/keys/public"}
    for validator in (issuer, vendor):  # every route that moves or shows money was lived
        labels = {label for label, _ in validator.seen}
        documented = {r.ok().label for r in validator.schema.get_all_operations()}
        assert labels == {label for label in documented if label.split(" ")[1] not in every}
