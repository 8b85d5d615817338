"""What every settings area shares: Orthanc's option names, strictness, value types.

Fields are snake_case; the JSON keys are Orthanc's (`StableAge`, `DicomAet`,
`CheckRevisions`) through `orthanc_alias`, so an existing Orthanc configuration
file loads unchanged (unknown keys are ignored). Types are strict, as in Orthanc:
`"StableAge": "60"` or `"DicomPort": true` is an error.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

#: Field names whose Orthanc spelling is not plain PascalCase.
_ALIAS_EXCEPTIONS = {
    "synchronous_cmove": "SynchronousCMove",
    "case_sensitive_pn": "CaseSensitivePN",
    "https_ca_certificates": "HttpsCACertificates",
    "store_md5_for_attachments": "StoreMD5ForAttachments",
    "postgresql": "PostgreSQL",
    "rabbitmq": "RabbitMQ",
    "dicomkeep": "DicomKeep",
}


def orthanc_alias(field_name: str) -> str:
    """Return the Orthanc option name of a field: `stable_age` -> `StableAge`."""
    exception = _ALIAS_EXCEPTIONS.get(field_name)
    if exception is not None:
        return exception
    return "".join(word.capitalize() for word in field_name.split("_"))


Port = Annotated[int, Field(ge=0, le=65535)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]

MODEL_CONFIG = ConfigDict(
    frozen=True,
    populate_by_name=True,
    alias_generator=orthanc_alias,
    extra="ignore",
    strict=True,
    use_attribute_docstrings=True,  # each field's docstring is its description
)
