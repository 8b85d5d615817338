"""Attachment (content type) names and MIME types in URLs (ORTHANC_API.md §4).

Core types 1..3 have fixed names; user types (1024..65535) get theirs and their
MIME type from `UserContentType`; any other type is shown, and may be named, as
its decimal number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.orthanc import (
    CORE_CONTENT_TYPES,
    FIRST_USER_CONTENT_TYPE,
    LAST_USER_CONTENT_TYPE,
    FileContentType,
)

_CORE_NAMES = {content_type: name for name, content_type in CORE_CONTENT_TYPES.items()}
#: Orthanc's GetFileContentMime for the core types; others default to binary.
_CORE_MIME = {FileContentType.DICOM: "application/dicom", FileContentType.DICOM_AS_JSON: "application/json"}
BINARY_MIME = "application/octet-stream"
#: Content types are 16-bit.
MAXIMUM_CONTENT_TYPE = LAST_USER_CONTENT_TYPE
_INTEGER = re.compile(r"[0-9]+")

#: UserContentType as the settings expose it: name -> (content type, MIME type).
UserTypes = Mapping[str, tuple[int, str]]


def is_user_content_type(content_type: int) -> bool:
    """Tell whether REST clients may write this type (1024..65535)."""
    return FIRST_USER_CONTENT_TYPE <= content_type <= MAXIMUM_CONTENT_TYPE


def content_type_name(content_type: int, user_types: UserTypes) -> str:
    """Return the name of a type: core name, registered user name, else its number."""
    core = _CORE_NAMES.get(content_type)
    if core is not None:
        return core
    for name, (user_type, _) in user_types.items():
        if user_type == content_type:
            return name
    return str(content_type)


def content_type_of(name: str, user_types: UserTypes) -> int:
    """Resolve a name from a URL to its content type, as Orthanc's StringToContentType.

    Accepts core names, `UserContentType` names and any integer 0..65535. Raises
    404 *Accessing an inexistent item* for an unregistered name, 400 *Parameter
    out of range* for an integer beyond 65535.
    """
    if _INTEGER.fullmatch(name):
        content_type = int(name)
        if content_type > MAXIMUM_CONTENT_TYPE:
            raise OrthancError(
                ErrorCode.PARAMETER_OUT_OF_RANGE, f"Attachment type out of range: {name}"
            )
        return content_type
    core = CORE_CONTENT_TYPES.get(name)
    if core is not None:
        return core
    user = user_types.get(name)
    if user is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown attachment: {name}")
    return user[0]


def content_type_mime(content_type: int, user_types: UserTypes) -> str:
    """Return the MIME type of `/data`: the registered one, else Orthanc's default."""
    if is_user_content_type(content_type):
        for user_type, mime in user_types.values():
            if user_type == content_type:
                return mime
    return _CORE_MIME.get(content_type, BINARY_MIME)
