"""Orthanc's answer formats: pretty JSON, plain text, empty bodies, JSON error bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from dicomkeep.common.errors import ErrorCode
from starlette.responses import JSONResponse, Response

JSON_MEDIA_TYPE = "application/json; charset=utf-8"
PLAIN_MEDIA_TYPE = "text/plain"


class OrthancJSONResponse(JSONResponse):
    """JSON as Orthanc writes it: 3-space indent, keys sorted, UTF-8, trailing newline.

    Orthanc's JSON objects are ordered maps, so keys come out sorted; clients must
    not depend on the layout, but equal answers then give byte-equal bodies.
    """

    media_type = JSON_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        """Serialise `content`; raises TypeError/ValueError for non-JSON values."""
        text = json.dumps(content, indent=3, sort_keys=True, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")


def plain(text: str, *, headers: Mapping[str, str] | None = None) -> Response:
    """Return a 200 `text/plain` answer (no charset parameter, as Orthanc)."""
    all_headers = {"Content-Type": PLAIN_MEDIA_TYPE, **(headers or {})}
    return Response(text.encode("utf-8"), headers=all_headers)


def empty(status: int = 200, *, headers: Mapping[str, str] | None = None) -> Response:
    """Return an answer with an empty body (`Content-Length: 0`).

    A 200 carries `Content-Type: text/plain`, as Orthanc's `AnswerBuffer("",
    MimeType_PlainText)` (PUT/DELETE of modalities, peers, protection, /changes...):
    pyorthanc reads the type of every successful answer. Errors, 304 and other
    empty answers have no content type, as in Orthanc.
    """
    all_headers = dict(headers or {})
    if status == 200:
        all_headers.setdefault("Content-Type", PLAIN_MEDIA_TYPE)
    return Response(status_code=status, headers=all_headers)


def error_body(
    code: ErrorCode, status: int, method: str, uri: str, details: str | None
) -> dict[str, Any]:
    """Return Orthanc's JSON error body (ORTHANC_API.md §16).

    `Message` and `OrthancError` are the fixed text of the code, `HttpError` the
    reason phrase of `status`, `Uri` the request path without query; `Details`
    only when a specific message exists.
    """
    body: dict[str, Any] = {
        "HttpError": reason_phrase(status),
        "HttpStatus": status,
        "Message": code.message,
        "Method": method,
        "OrthancError": code.message,
        "OrthancStatus": code.status,
        "Uri": uri,
    }
    if details:
        body["Details"] = details
    return body


def reason_phrase(status: int) -> str:
    """Return the HTTP reason phrase of a status, e.g. `Insufficient Storage` for 507."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
