"""The OpenAPI 3.1 document at ``/rest-api/openapi.json``, generated from the
routes of the app and the pydantic models their handlers parse and answer
with (``rest.endpoint``): nothing here repeats a field by hand."""

from __future__ import annotations

import typing
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from . import models

ENDPOINT_ATTR = "__sipstream_endpoint__"
REF = "#/components/schemas/{model}"
# What any operation may answer besides its own codes.
COMMON_ERRORS = {
    401: "missing or wrong bearer token (rest_auth_token)",
    403: "the request's Origin is not allowed (cors_origins)",
    413: "the body is larger than max_body_bytes",
    429: "too many requests from this address (rest_rate_limit)",
}
ERROR_TEXT = {
    400: "a field is missing, malformed or not allowed",
    404: "nothing matches",
    409: "a duplicate, or the object is not in a state for this",
    415: "the body is not application/json",
    503: "a limit is reached (see Retry-After) or the server is stopping",
}


def _models_of(returns: Any) -> list[type[BaseModel]]:
    if returns is None:
        return []
    if typing.get_origin(returns) is list:
        return [typing.get_args(returns)[0]]
    return [returns]


def _schema_of(returns: Any) -> dict[str, Any]:
    if typing.get_origin(returns) is list:
        return {"type": "array", "items": {"$ref": REF.format(model=typing.get_args(returns)[0].__name__)}}
    return {"$ref": REF.format(model=returns.__name__)}


def build(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    used: set[type[BaseModel]] = {models.Error}
    for route in app.router.routes():
        spec = getattr(route.handler, ENDPOINT_ATTR, None)
        resource = route.resource
        if spec is None or resource is None or route.method == "HEAD":
            continue
        path = resource.canonical
        for method in [route.method.lower()]:
            operation = _operation(spec, method)
            paths.setdefault(path, {})[method] = operation
            used.update(_models_of(spec.returns))
            if method == "post":
                used.add(spec.body or models.Empty)
    _, components = models_json_schema([(m, "validation" if issubclass(m, models.Request) else "serialization")
                                        for m in sorted(used, key=lambda m: m.__name__)], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "sipstream", "version": __version__,
                 "description": "WCS-compatible REST API: SIP calls as live streams"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(spec: Any, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if spec.returns is None:
        responses["200"] = {"description": "done (an empty body)"}
    else:
        responses["200"] = {"description": "OK", "content": {"application/json": {"schema": _schema_of(spec.returns)}}}
    error = {"content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
    codes = set(spec.errors) | set(COMMON_ERRORS)
    if method == "post":
        codes |= {400, 415}
    for code in sorted(codes):
        text = COMMON_ERRORS.get(code) or ERROR_TEXT.get(code, "error")
        responses[str(code)] = {"description": text, **error}
    operation: dict[str, Any] = {"summary": spec.summary, "responses": responses, "security": [{}, {"bearer": []}]}
    if method == "post":
        body = spec.body or models.Empty
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}},
        }
    return operation


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build(request.app))
