"""The OpenAPI document of a service (issue 14) and a docs page that needs no network.

Built from the very structs the services decode and encode (`nanomoni.wire`), so
the document cannot drift from the bodies: every operation lists its request
body, its answers, and the SPEC §6 error shape with the codes that route can
answer; modes are an enum taken from the registry; channel ids have their
canonical pattern. Each service lists its operations in one table
(`nanomoni/issuer/operations.py`, `nanomoni/vendor/operations.py`).
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
from nanomoni.wire import ErrorResponse, HealthDegraded, HealthResponse

REF = "#/components/schemas/{name}"
CHANNEL_ID_PATTERN = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"

_REASONS = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}  # fmt: skip
# What every operation may answer whatever it does: a malformed request (a bad path,
# query or header is a schema error too), an internal error, a worker at its
# connection cap (SPEC §6, §7). A route with a body can also get one too large.
ALWAYS = (Code.validation_error, Code.internal_error, Code.service_busy)

# How a request proves who sends it (SPEC §4.2, §4.7, §5.6).
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "admin": {
        "type": "http",
        "scheme": "bearer",
        "description": "The service's admin token (`--admin-token`).",
    },
    "signed": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`NanoMoni key=<DER b64>, ts=<unix seconds>, sig=<b64>`: the key's "
        'signature over canonical `{"method", "path", "ts", "body_sha256_b64"}` (SPEC §4.7).',
    },
}


@dataclass(frozen=True)
class Schema:
    """A component msgspec cannot generate itself (e.g. a list of an untagged union of
    structs), written out from the structs it is made of."""

    name: str
    schema: Mapping[str, Any]
    types: tuple[type, ...] = ()


# A body: a struct, any of several structs (the path's mode decides which), a Schema.
Body = type | tuple[type, ...] | Schema


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and what it answers."""

    method: str
    path: str  # `{mode}` and `{channel_id}` are the parameters SPEC §4–§5 use
    summary: str
    responses: Mapping[int, Body | None]  # success statuses and their bodies (None: empty)
    request: Body | None = None
    errors: Sequence[Code] = ()  # the codes it refuses with, besides ALWAYS
    query: Sequence[tuple[str, str]] = ()  # (name, description), all required
    security: Sequence[str] = ()  # SECURITY_SCHEMES that authorize it; "" = none needed
    content_type: str = "application/json"
    extra: Mapping[str, Any] = field(default_factory=dict)


def ref(body: type | str) -> dict[str, str]:
    """A reference to a component (a struct, or a component's name)."""
    return {"$ref": REF.format(name=body if isinstance(body, str) else body.__name__)}


def _schema(body: Body) -> dict[str, Any]:
    if isinstance(body, tuple):
        return {"anyOf": [ref(t) for t in body]}
    if isinstance(body, Schema):
        return ref(body.name)
    return ref(body)


def _types(body: Body | None) -> list[type]:
    if body is None:
        return []
    if isinstance(body, tuple):
        return list(body)
    if isinstance(body, Schema):
        return list(body.types)
    return [body]


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


def refusals(op: Operation) -> dict[int, list[Code]]:
    """The codes an operation can refuse with, by HTTP status."""
    codes = [*ALWAYS, *op.errors]
    if op.request is not None:
        codes.append(Code.payload_too_large)
    by_status: dict[int, list[Code]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(http_status(code), []).append(code)
    return dict(sorted(by_status.items()))


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, body in op.responses.items():
        answer: dict[str, Any] = {"description": _REASONS.get(status, str(status))}
        if body is not None:
            answer["content"] = {op.content_type: {"schema": _schema(body)}}
        responses[str(status)] = answer
    for status, codes in refusals(op).items():
        names = [code.value for code in codes]
        # The SPEC §6 body, its code one of those this route answers with this status.
        schema: dict[str, Any] = {
            "allOf": [ref(ErrorResponse), {"properties": {"code": {"enum": names}}}]
        }
        described = f"{_REASONS.get(status, str(status))}: {', '.join(names)}"
        if str(status) in responses:  # a body of its own (e.g. /health's 503) or an error
            answer = responses[str(status)]
            answer["description"] += f", or an error: {', '.join(names)}"
            mine = answer["content"]["application/json"]["schema"]
            answer["content"]["application/json"]["schema"] = {"anyOf": [mine, schema]}
            continue
        responses[str(status)] = {
            "description": described,
            "content": {"application/json": {"schema": schema}},
        }
    responses = dict(sorted(responses.items()))
    operation_id = f"{op.method}_{op.path}".lower()
    for char in "/{}-":
        operation_id = operation_id.replace(char, "_" if char in "/-" else "")
    operation: dict[str, Any] = {
        "summary": op.summary,
        "operationId": "_".join(part for part in operation_id.split("_") if part),
        "parameters": [_parameter(name) for name in _names(op.path)]
        + [_query(name, what) for name, what in op.query],
        "responses": responses,
        **op.extra,
    }
    if op.security:
        operation["security"] = [{name: []} if name else {} for name in op.security]
    if op.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(op.request)}},
        }
    return operation


def document(
    service: str, operations: Sequence[Operation], streams: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`; `streams` (WebSocket path: what it
    does) go into `x-websockets`, as OpenAPI has no words for them."""
    types: list[Any] = [ErrorResponse, HealthResponse, HealthDegraded]
    extra_components: dict[str, Any] = {}
    for op in operations:
        for body in (op.request, *op.responses.values()):
            types += _types(body)
            if isinstance(body, Schema):
                extra_components[body.name] = dict(body.schema)
    _, components = msgspec.json.schema_components(list(dict.fromkeys(types)), ref_template=REF)
    components |= extra_components
    components["ErrorResponse"]["properties"]["code"] = {
        "type": "string",
        "enum": sorted(code.value for code in Code),
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    used = {name for op in operations for name in op.security if name}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"NanoMoni {service}",
            "version": __version__,
            "description": 'Every 4xx/5xx answer is `{"detail", "code"}` (a 422 may add '
            '`errors` naming each bad member); each answer lists the codes it can carry.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {name: SECURITY_SCHEMES[name] for name in sorted(used)},
        },
    }
    if streams:
        doc["x-websockets"] = dict(streams)
    return doc


def _body_names(schema: Mapping[str, Any]) -> list[str]:
    """The component names a body schema refers to."""
    if "$ref" in schema:
        return [str(schema["$ref"]).rsplit("/", 1)[1]]
    parts = [*schema.get("anyOf", ()), *schema.get("allOf", ())]
    return [name for part in parts for name in _body_names(part)]


def _links(schema: Mapping[str, Any]) -> str:
    names = dict.fromkeys(_body_names(schema))
    return " or ".join(f"<a href='#{html.escape(n)}'>{html.escape(n)}</a>" for n in names)


def docs_page(doc: Mapping[str, Any]) -> str:
    """A self-contained HTML page of the document: every route, its body and answers."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(doc['info']['title'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "pre{background:#f4f4f4;padding:.6em;overflow:auto}</style></head><body>",
        f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>",
        f"<p>{html.escape(doc['info'].get('description', ''))}</p>",
        "<p>The machine-readable document: <a href='/schema/openapi.json'>"
        "/schema/openapi.json</a>.</p>",
    ]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            out.append(f"<h2>{method.upper()} {html.escape(path)}</h2>")
            out.append(f"<p>{html.escape(op['summary'])}</p>")
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                out.append(f"<p>Body: {_links(schema)}</p>")
            answers = []
            for status, answer in op["responses"].items():
                bodies = [_links(c["schema"]) for c in answer.get("content", {}).values()]
                shown = f" ({', '.join(bodies)})" if bodies else ""
                answers.append(f"<li>{status} {html.escape(answer['description'])}{shown}</li>")
            out.append(f"<p>Answers:</p><ul>{''.join(answers)}</ul>")
    for path, what in doc.get("x-websockets", {}).items():
        out.append(f"<h2>WebSocket {html.escape(path)}</h2><p>{html.escape(what)}</p>")
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        text = json.dumps(schema, indent=2)
        out.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>")
        out.append(f"<pre>{html.escape(text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
