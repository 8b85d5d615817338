"""DicomKeep's DICOM conformance statement (`GET /tools/dicom-conformance`).

Built from the same pynetdicom lists the ingest service's AE is configured with
(services/ingest scp.py: every storage SOP class in every transfer syntax,
Verification, Patient/Study Root C-FIND and C-MOVE), in Orthanc's layout.
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)


def _table(uids: list[str]) -> list[str]:
    names = [(UID(uid).keyword or UID(uid).name, uid) for uid in uids]
    width = max(len(name) for name, _ in names)
    return [f"  {name.ljust(width)} | {uid}" for name, uid in sorted(names)]


def _section(title: str, intro: str, uids: list[str]) -> list[str]:
    rule = "-" * len(title)
    return [rule, title, rule, "", intro, "", *_table(uids), "", ""]


@lru_cache(maxsize=1)
def conformance_statement() -> str:
    """Return the statement as plain text (the same on every call)."""
    storage = [str(context.abstract_syntax) for context in AllStoragePresentationContexts]
    lines = [
        "=" * 40,
        "DICOM Conformance Statement of DicomKeep",
        "=" * 40,
        "",
        "",
        *_section(
            "Echo SCP Conformance",
            "DicomKeep supports the following SOP Classes as an SCP for C-Echo:",
            [str(Verification)],
        ),
        *_section(
            "Store SCP Conformance",
            "DicomKeep supports the following SOP Classes as an SCP for C-Store:",
            storage,
        ),
        *_section(
            "Find SCP Conformance",
            "DicomKeep supports the following SOP Classes as an SCP for C-Find:",
            [str(PatientRootQueryRetrieveInformationModelFind),
             str(StudyRootQueryRetrieveInformationModelFind)],
        ),
        *_section(
            "Move SCP Conformance",
            "DicomKeep supports the following SOP Classes as an SCP for C-Move:",
            [str(PatientRootQueryRetrieveInformationModelMove),
             str(StudyRootQueryRetrieveInformationModelMove)],
        ),
        *_section(
            "Transfer Syntaxes",
            "DicomKeep accepts the following transfer syntaxes for C-Store:",
            [str(uid) for uid in ALL_TRANSFER_SYNTAXES],
        ),
        "DicomKeep does not support extended negotiation.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)
