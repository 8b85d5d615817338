"""ETag, If-Match and If-None-Match as Orthanc writes and parses them (ORTHANC_API.md §5).

An ETag is `"<revision>-<md5>"`: the item's revision counter and the hex MD5 of a
metadata value or of an attachment's uncompressed bytes. Orthanc 1.9.3+ sends it
on every GET and PUT of a metadata value or an attachment, whatever
CheckRevisions says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.index import Expected
from starlette.requests import Request

IF_MATCH = "If-Match"
IF_NONE_MATCH = "If-None-Match"
#: Revisions are 64-bit in Orthanc; 18 digits always fit.
_REVISION = re.compile(r"[0-9]{1,18}")


def etag(revision: int, md5: str) -> str:
    """Return the ETag header value `"<revision>-<md5>"` (quotes included)."""
    return f'"{revision}-{md5}"'


def parse_etag(header: str, value: str) -> Expected:
    """Parse an If-Match / If-None-Match value into (revision, md5).

    Mirrors Orthanc's GetRevisionHeader: surrounding spaces and one pair of
    double quotes are optional; the text must be an integer, a `-`, then the MD5
    (possibly empty). Anything else raises 400 *Parameter out of range*. A bare
    revision (`"0"`, the 1.9.2 format) is therefore refused.
    """
    text = value.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    revision, dash, md5 = text.partition("-")
    if dash and _REVISION.fullmatch(revision):
        return Expected(revision=int(revision), md5=md5)
    raise OrthancError(
        ErrorCode.PARAMETER_OUT_OF_RANGE,
        f'The "{header}" HTTP header should contain the ETag (revision followed by '
        f"MD5 hash), but found: {text}",
    )


def expected_revision(request: Request) -> Expected | None:
    """Return the If-Match condition of a PUT/DELETE, None without the header.

    Raises 400 *Parameter out of range* for a malformed header.
    """
    value = request.headers.get(IF_MATCH)
    return None if value is None else parse_etag(IF_MATCH, value)


class AnsweredError(OrthancError):
    """An OrthancError whose answer also carries headers (e.g. the current ETag)."""

    def __init__(self, error: OrthancError, headers: Mapping[str, str]) -> None:
        super().__init__(error.code, error.details, http_status=error.http_status)
        self.headers = dict(headers)


def is_not_modified(request: Request, revision: int, md5: str) -> bool:
    """Tell whether If-None-Match names exactly this revision and MD5 (-> 304).

    Absent -> False. A malformed header raises 400 *Parameter out of range* whose
    answer still carries the current `ETag`, as Orthanc 1.10.1 answers (it sets the
    header before parsing the condition).
    """
    value = request.headers.get(IF_NONE_MATCH)
    if value is None:
        return False
    try:
        condition = parse_etag(IF_NONE_MATCH, value)
    except OrthancError as exc:
        raise AnsweredError(exc, {"ETag": etag(revision, md5)}) from exc
    return condition == Expected(revision=revision, md5=md5)


def require_if_match(expected: Expected | None, *, check_revisions: bool) -> None:
    """Refuse a DELETE without If-Match when CheckRevisions is on: 409, as Orthanc.

    Orthanc checks this before looking the item (or even the resource) up, so a
    missing header is a 409 *Revision* even for an unknown resource.
    """
    if expected is None and check_revisions:
        raise OrthancError(
            ErrorCode.REVISION,
            'HTTP header "If-Match" is missing, as "CheckRevisions" is "true"',
        )
