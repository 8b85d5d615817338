"""Metadata names in URLs and listings (ORTHANC_API.md §3).

Core keys 1..17 have fixed names; user keys (1024..65535) get theirs from
`UserMetadata`; any other key is shown, and may be named, as its decimal number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.orthanc import CORE_METADATA, FIRST_USER_METADATA, LAST_USER_METADATA

_CORE_NAMES = {key: name for name, key in CORE_METADATA.items()}
_INTEGER = re.compile(r"[0-9]+")
#: Metadata keys are 16-bit.
MAXIMUM_KEY = LAST_USER_METADATA
#: The first user metadata key; lower keys belong to the core (read-only over REST).
FIRST_USER_KEY = FIRST_USER_METADATA


def is_user_metadata(key: int) -> bool:
    """Tell whether REST clients may write this key (1024..65535); core keys are read-only."""
    return FIRST_USER_KEY <= key <= MAXIMUM_KEY


def metadata_name(key: int, user_metadata: Mapping[str, int]) -> str:
    """Return the name of a key: core name, registered user name, else its number."""
    core = _CORE_NAMES.get(key)
    if core is not None:
        return core
    for name, user_key in user_metadata.items():
        if user_key == key:
            return name
    return str(key)


def metadata_key(name: str, user_metadata: Mapping[str, int]) -> int:
    """Resolve a name from a URL to its key, as Orthanc's StringToMetadata.

    Accepts core names, `UserMetadata` names and any integer 0..65535. Raises 404
    *Accessing an inexistent item* for an unregistered name, 400 *Parameter out
    of range* for an integer beyond 65535.
    """
    if _INTEGER.fullmatch(name):
        key = int(name)
        if key > MAXIMUM_KEY:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Metadata key out of range: {name}")
        return key
    key_or_none = CORE_METADATA.get(name, user_metadata.get(name))
    if key_or_none is None:
        raise OrthancError(ErrorCode.INEXISTENT_ITEM, f"Unknown metadata: {name}")
    return key_or_none
