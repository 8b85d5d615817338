"""Request bodies of the JSON routes, for the OpenAPI document (`dicomkeep --openapi`).

Routes read their bodies raw (Orthanc's lenient parsing: tags as names or
`gggg,eeee`, arrays or objects), so FastAPI cannot infer these schemas. Declared
here, they let clients and API fuzzers (schemathesis, tests/integration/
test_badinput.py) generate realistic bodies. Documentation only: a body outside
them is still parsed as Orthanc does, and refused with its 400.
"""

from __future__ import annotations

from typing import Any

_TEXT = {"type": "string"}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """Return `openapi_extra` declaring a required JSON request body of `schema`."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


FIND = json_body({
    "type": "object",
    "required": ["Level", "Query"],
    "properties": {
        "Level": {"enum": ["Patient", "Study", "Series", "Instance"]},
        "Query": {"type": "object", "additionalProperties": _TEXT},
        "Expand": {"type": "boolean"},
        "CaseSensitive": {"type": "boolean"},
        "Limit": {"type": "integer", "minimum": 0},
        "Since": {"type": "integer", "minimum": 0},
        "Labels": {"type": "array", "items": _TEXT},
        "LabelsConstraint": {"enum": ["All", "Any", "None"]},
        "RequestedTags": {"type": "array", "items": _TEXT},
    },
})

MODALITY = json_body({"oneOf": [
    {"type": "array", "prefixItems": [_TEXT, _TEXT, {"type": "integer"}], "minItems": 3,
     "maxItems": 4},
    {"type": "object", "required": ["AET", "Host", "Port"], "properties": {
        "AET": _TEXT, "Host": _TEXT, "Port": {"type": "integer"}, "Manufacturer": _TEXT,
        "AllowEcho": {"type": "boolean"}, "AllowFind": {"type": "boolean"},
        "AllowStore": {"type": "boolean"}, "Timeout": {"type": "integer"},
    }},
]})

PEER = json_body({"oneOf": [
    {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 3},
    {"type": "object", "required": ["Url"], "properties": {
        "Url": _TEXT, "Username": _TEXT, "Password": _TEXT,
        "HttpHeaders": {"type": "object", "additionalProperties": _TEXT},
        "Timeout": {"type": "integer"}, "Pkcs11": {"type": "boolean"},
    }},
]})

QUERY = json_body({
    "type": "object",
    "required": ["Level", "Query"],
    "properties": {
        "Level": {"enum": ["Patient", "Study", "Series", "Instance"]},
        "Query": {"type": "object", "additionalProperties": _TEXT},
        "Normalize": {"type": "boolean"},
        "Timeout": {"type": "integer"},
    },
})
