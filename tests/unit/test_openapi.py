"""The services' OpenAPI documents (issue 14): valid OpenAPI 3.1, every reference and
path parameter in place, and no drift from what the apps really serve: a route
added without its line in the operations table fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from openapi_spec_validator import validate

from nanomoni import openapi
from nanomoni.errors import Code, http_status
from nanomoni.http import HotPath
from nanomoni.issuer import operations as issuer_operations
from nanomoni.issuer.app import IssuerConfig
from nanomoni.issuer.app import create_app as create_issuer
from nanomoni.vendor import operations as vendor_operations
from nanomoni.vendor.app import VendorConfig
from nanomoni.vendor.app import create_app as create_vendor

# Served but deliberately not in the documents: Prometheus text, the documents themselves.
UNDOCUMENTED = {("GET", "/metrics"), ("GET", "/schema"), ("GET", "/schema/openapi.json")}
DOCUMENTS = {
    "issuer": openapi.document("issuer", issuer_operations.OPERATIONS),
    "vendor": openapi.document("vendor", vendor_operations.OPERATIONS, vendor_operations.STREAMS),
}


@pytest.fixture(params=sorted(DOCUMENTS))
def doc(request: pytest.FixtureRequest) -> dict[str, Any]:
    return DOCUMENTS[request.param]


def test_documents_are_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves_and_every_path_parameter_is_declared(
    doc: dict[str, Any],
) -> None:
    schemas = doc["components"]["schemas"]
    refs = set(_refs(doc))
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    for path, methods in doc["paths"].items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for op in methods.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == in_path, path


def test_every_answer_has_a_body_schema_and_modes_are_an_enum(doc: dict[str, Any]) -> None:
    modes = {"signature", "payword", "paytree", "paytree_first_opt", "paytree_second_opt"}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for status, answer in op["responses"].items():
                assert status == "204" or "content" in answer, (method, path, status)
            for parameter in op["parameters"]:
                if parameter["name"] == "mode":
                    assert set(parameter["schema"]["enum"]) == modes
            if method == "post":
                assert "requestBody" in op or path.endswith("/closing-channels"), path


def test_every_listed_code_exists_and_has_the_status_it_is_listed_under(
    doc: dict[str, Any],
) -> None:
    for methods in doc["paths"].values():
        for op in methods.values():
            for status, answer in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = answer["content"]["application/json"]["schema"]
                errors = [schema, *schema.get("anyOf", [])]
                listed = [
                    part["properties"]["code"]["enum"]
                    for error in errors
                    for part in error.get("allOf", [])
                    if "properties" in part
                ]
                assert listed, (op["operationId"], status)
                for value in listed[0]:
                    assert http_status(Code(value)) == int(status), (op["operationId"], value)
    assert doc["components"]["schemas"]["ErrorResponse"]["properties"]["code"]["enum"] == sorted(
        code.value for code in Code
    )


def _litestar_routes(app: Litestar) -> set[tuple[str, str]]:
    """(method, path) of every handler, path parameters without their types; not
    Litestar's own automatic OPTIONS answers."""
    served = set()
    for route in app.routes:
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
        for method in getattr(route, "methods", ()):
            if method != "OPTIONS":
                served.add((method, path))
    return served


def _table(operations: tuple[openapi.Operation, ...]) -> set[tuple[str, str]]:
    return {(op.method, op.path) for op in operations}


def test_the_issuer_table_lists_exactly_the_routes_it_serves(tmp_path: Path) -> None:
    app = create_issuer(IssuerConfig(data_dir=tmp_path))
    served = _litestar_routes(app) - UNDOCUMENTED
    assert _table(issuer_operations.OPERATIONS) == served


def test_the_vendor_table_lists_exactly_the_routes_it_serves(tmp_path: Path) -> None:
    front = create_vendor(VendorConfig(data_dir=tmp_path, issuer_url="http://127.0.0.1:9"))
    assert isinstance(front, HotPath)
    hot = {("POST", f"{front.prefix}{{mode}}/{{channel_id}}{front.suffix}")}
    hot |= {("POST", path) for path in front.posts}
    served = (_litestar_routes(front.app) | hot) - UNDOCUMENTED
    assert _table(vendor_operations.OPERATIONS) == served
    assert set(vendor_operations.STREAMS) == set(front.streams)


def test_statuses_come_from_the_codes_a_route_lists() -> None:
    deposit = next(
        op for op in issuer_operations.OPERATIONS if op.path.endswith("/accounts/deposits")
    )
    refused = openapi.refusals(deposit)
    assert refused[401] == [Code.unauthorized] and refused[403] == [Code.forbidden]
    assert refused[404] == [Code.account_not_found] and refused[413] == [Code.payload_too_large]
    assert Code.service_busy in refused[503] and Code.store_unavailable in refused[503]
    document = DOCUMENTS["issuer"]["paths"]["/api/v1/issuer/accounts/deposits"]["post"]
    assert sorted(document["responses"]) == ["200", "400", "401", "403", "404", "413", "422",
                                             "500", "503"]  # fmt: skip
    assert document["security"] == [{"admin": []}]


def test_the_docs_page_names_every_route_and_needs_no_network(doc: dict[str, Any]) -> None:
    page = openapi.docs_page(doc)
    for path, methods in doc["paths"].items():
        for method in methods:
            assert f"{method.upper()} {path}" in page
    for name in doc["components"]["schemas"]:
        assert f"id='{name}'" in page
    # Offline: nothing fetched, no script, no style sheet, no address of another host.
    for outside in ("<script", "<link", "src=", "@import", "http://", "https://"):
        assert outside not in page
