"""The OpenAPI document of a service (issue 14) and a docs page that needs no network.

Built from the very structs the services decode and encode (`nanomoni.wire`), so
the document cannot drift from the bodies: every operation lists its request
body, its answers, and the SPEC §6 error shape with the code enum; modes are an
enum taken from the registry; channel ids have their canonical pattern.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from nanomoni import __version__
from nanomoni.errors import Code, http_status
from nanomoni.protocol.modes import ALL
from nanomoni.wire import ErrorResponse, HealthResponse

REF = "#/components/schemas/{name}"
CHANNEL_ID_PATTERN = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}  # fmt: skip
# What every operation may answer whatever it does: a malformed request, an internal
# error, a store that does not answer, a worker at its connection cap (SPEC §6, §7).
ALWAYS = (400, 422, 500, 503)


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and what it answers."""

    method: str
    path: str  # `{mode}` and `{channel_id}` are the parameters SPEC §4–§5 use
    summary: str
    responses: Mapping[int, type | None]  # a success status and its body type (None: empty)
    request: type | None = None
    errors: Sequence[int] = ()  # statuses answered with the error body, besides ALWAYS
    query: Sequence[tuple[str, str]] = ()  # (name, description), all required
    authorization: str | None = None  # what the Authorization header carries, if used
    content_type: str = "application/json"
    extra: Mapping[str, Any] = field(default_factory=dict)


def _parameter(name: str) -> dict[str, Any]:
    if name == "mode":
        schema = {"type": "string", "enum": [rules.mode.value for rules in ALL]}
        return {"name": name, "in": "path", "required": True, "schema": schema}
    if name == "channel_id":
        schema = {"type": "string", "pattern": CHANNEL_ID_PATTERN}
        return {"name": name, "in": "path", "required": True, "schema": schema}
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": True,
        "description": what,
        "schema": {"type": "string"},
    }


def _names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def document(service: str, operations: Sequence[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`."""
    types: list[Any] = [ErrorResponse, HealthResponse]
    for op in operations:
        types += [t for t in (op.request, *op.responses.values()) if t is not None]
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    codes = sorted(code.value for code in Code)
    components["ErrorResponse"]["properties"]["code"] = {"type": "string", "enum": codes}
    error_body = {"application/json": {"schema": {"$ref": REF.format(name="ErrorResponse")}}}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        responses: dict[str, Any] = {}
        for status, body in op.responses.items():
            answer: dict[str, Any] = {"description": _REASONS.get(status, str(status))}
            if body is not None:
                ref = {"$ref": REF.format(name=body.__name__)}
                answer["content"] = {op.content_type: {"schema": ref}}
            responses[str(status)] = answer
        for status in sorted({*ALWAYS, *op.errors}):
            codes_here = [c.value for c in Code if http_status(c) == status]
            described = _REASONS.get(status, str(status))
            if codes_here:
                described += ": " + ", ".join(codes_here)
            responses[str(status)] = {"description": described, "content": error_body}
        operation: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}_{op.path}".replace("/", "_").strip("_"),
            "parameters": [_parameter(name) for name in _names(op.path)]
            + [_query(name, what) for name, what in op.query],
            "responses": responses,
            **op.extra,
        }
        if op.authorization is not None:
            operation["parameters"].append(
                {
                    "name": "Authorization",
                    "in": "header",
                    "required": False,
                    "description": op.authorization,
                    "schema": {"type": "string"},
                }
            )
        if op.request is not None:
            ref = {"$ref": REF.format(name=op.request.__name__)}
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": f"NanoMoni {service}", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }


def docs_page(doc: Mapping[str, Any]) -> str:
    """A self-contained HTML page of the document: every route, its body and answers."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(doc['info']['title'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "pre{background:#f4f4f4;padding:.6em;overflow:auto}</style></head><body>",
        f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>",
        "<p>The machine-readable document: <a href='/schema/openapi.json'>"
        "/schema/openapi.json</a>.</p>",
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            out.append(f"<h2>{method.upper()} {html.escape(path)}</h2>")
            out.append(f"<p>{html.escape(op['summary'])}</p>")
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                out.append(f"<p>Body: {html.escape(ref.rsplit('/', 1)[1])}</p>")
            answers = ", ".join(f"{s} {r['description']}" for s, r in op["responses"].items())
            out.append(f"<p>Answers: {html.escape(answers)}</p>")
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        text = json.dumps(schema, indent=2)
        out.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>")
        out.append(f"<pre>{html.escape(text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
