"""The C-FIND SCP: Patient Root and Study Root, patient to instance level (ORTHANC_API.md §11.4).

pynetdicom calls `FindScp.handle_find` in the association's thread; the search runs
on the service's event loop (`run_coroutine_threadsafe`) with the same engine as
`POST /tools/find` (`dicomkeep.common.search`). Answers go out as Pending
(0xFF00) one match at a time, then Success; a C-CANCEL, or more matches than
LimitFindResults/LimitFindInstances, ends with 0xFE00 after the matches sent.
A request that is not allowed (§11.2) aborts the association, as Orthanc does;
an undecodable identifier answers 0xA900; a missing or unknown
QueryRetrieveLevel, a misplaced wildcard or any failure answers 0xC000.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar

from dicomkeep.common import scp_options
from dicomkeep.common.encodings import character_set
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.find import (
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    Constraint,
    build_constraints,
    vr_of,
)
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.logs import patient_text
from dicomkeep.common.orthanc import DimseStatus
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.search import (
    NEVER,
    FileReader,
    effective_limit,
    find_resources,
    tag_values,
)
from dicomkeep.common.settings import Settings
from dicomkeep.common.telemetry import traced
from dicomkeep.ingest.access import AccessControl
from pydicom import dcmread
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Matches whose answers are built in one trip to the event loop.
BATCH = 100

_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_PN_DELIMITERS = {0x5C, 0x3D, 0x5E}
_TEXT_DELIMITERS = {0x5C, 0x09, 0x0A, 0x0C, 0x0D}



@dataclass(frozen=True)
class Key:
    """One key of the identifier: returned in every answer."""

    tag: int
    vr: str
    value: str


@dataclass(frozen=True)
class FindRequest:
    """A parsed C-FIND identifier."""

    level: Level
    level_text: str
    keys: list[Key]
    constraints: list[Constraint]

    @property
    def value_tags(self) -> list[int]:
        """Tags whose values the answers need (sequences excluded)."""
        return [k.tag for k in self.keys if k.vr != "SQ" and k.tag != QUERY_RETRIEVE_LEVEL]

    @property
    def sequence_tags(self) -> list[int]:
        """Requested sequences: copied from the stored file."""
        return [k.tag for k in self.keys if k.vr == "SQ"]


def _text(raw: bytes, vr: str, encodings: Sequence[str]) -> str:
    """Decode a text value as received: charset applied, DICOM padding removed."""
    nul = raw.find(0)
    if nul >= 0:
        raw = raw[:nul]
    raw = raw.rstrip(b" ")
    if raw.isascii() and 0x1B not in raw:
        return raw.decode("ascii")
    delimiters = _PN_DELIMITERS if vr == "PN" else _TEXT_DELIMITERS
    try:
        return decode_bytes(raw, list(encodings), delimiters)
    except (UnicodeError, LookupError):
        return raw.decode("latin-1")


def _key(identifier: Dataset, tag: int, encodings: Sequence[str]) -> Key:
    """Read one key of the identifier without pydicom's value conversions."""
    raw = identifier.get_item(tag)
    vr = (raw.VR if raw is not None else None) or vr_of(tag)
    if vr == "UN" and not (tag >> 16) & 1:  # implicit VR: the dictionary knows better
        vr = vr_of(tag)
    if vr == "SQ":
        return Key(tag, "SQ", "")
    if isinstance(raw, RawDataElement):
        data = raw.value or b""
        if vr in _TEXT_VRS or vr == "UN":
            return Key(tag, vr, _text(bytes(data), vr, encodings))
    element = identifier[tag]
    value = element.value
    if value is None or value == "" or value == b"":
        return Key(tag, vr, "")
    if isinstance(value, bytes):
        return Key(tag, vr, value.decode("latin-1").rstrip(" \0"))
    if isinstance(value, (list, tuple, MultiValue)):
        return Key(tag, vr, "\\".join(str(v) for v in value))
    return Key(tag, vr, str(value))


def _encodings(identifier: Dataset) -> list[str]:
    """Return the Python encodings named by the identifier's SpecificCharacterSet."""
    item = identifier.get_item(SPECIFIC_CHARACTER_SET)
    value = None if item is None else item.value
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
    elif isinstance(value, str) or value is None:
        text = value or ""
    else:
        text = "\\".join(str(v) for v in value)
    terms = [t.strip() for t in text.split("\\")] if text.strip() else ["ISO_IR 6"]
    try:
        return list(convert_encodings(terms))
    except LookupError:
        return ["iso8859"]


def parse_identifier(identifier: Dataset, *, case_sensitive_pn: bool) -> FindRequest:
    """Parse a C-FIND identifier: its level, the keys to return and the constraints.

    Raises OrthancError BAD_REQUEST without QueryRetrieveLevel, PARAMETER_OUT_OF_RANGE
    for an unknown level or a misplaced wildcard. Group lengths are ignored and
    never answered, as Orthanc (which removes them from C-FIND answers); so are
    file meta elements (group 0002), which never belong in a DIMSE data set.
    """
    encodings = _encodings(identifier)
    keys = [
        _key(identifier, int(tag), encodings)
        for tag in sorted(identifier.keys())
        if int(tag) & 0xFFFF != 0 and int(tag) >> 16 != 0x0002 and int(tag) != SPECIFIC_CHARACTER_SET
    ]
    level_key = next((k for k in keys if k.tag == QUERY_RETRIEVE_LEVEL), None)
    if level_key is None or not level_key.value.strip():
        raise OrthancError(
            ErrorCode.BAD_REQUEST, "C-FIND request without the tag 0008,0052 (QueryRetrieveLevel)"
        )
    level = Level.parse(level_key.value)
    constraints = build_constraints(
        level,
        [(k.tag, k.value) for k in keys if k.vr != "SQ"],
        case_sensitive=True,
        case_sensitive_pn=case_sensitive_pn,
        vrs={k.tag: k.vr for k in keys},
    )
    return FindRequest(level, level_key.value.strip(), keys, constraints)


def _element_value(vr: str, text: str) -> Any:
    """Convert an answer's string to what pydicom writes for `vr` (None = empty)."""
    if not text:
        return None
    try:
        if vr in _INT_VRS:
            values: list[Any] = [int(v) for v in text.split("\\")]
        elif vr in _FLOAT_VRS:
            values = [float(v) for v in text.split("\\")]
        elif vr in _TEXT_VRS:
            return text
        else:
            return text.encode("utf-8")
    except ValueError:
        return None
    return values[0] if len(values) == 1 else values


class FindScp:
    """The EVT_C_FIND handler, answering from the index (and files) on `loop`."""

    def __init__(
        self,
        settings: Settings,
        index: Index,
        blobs: BlobStore,
        loop: asyncio.AbstractEventLoop,
        *,
        access: AccessControl,
        timeout: float = 120.0,
    ) -> None:
        self.settings = settings
        self.index = index
        self.blobs = blobs
        self.loop = loop
        self.access = access
        self.timeout = timeout

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(self.timeout)

    def handle_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        """Answer one C-FIND request (pynetdicom EVT_C_FIND handler).

        Checks access and parses the identifier at once (a refusal aborts the
        association); returns the iterator of (status, identifier) answers.
        """
        assoc = event.assoc
        remote_aet = str(assoc.requestor.ae_title).strip()
        if not self.access.allows(assoc, "Find"):
            return iter(())
        try:
            identifier = event.identifier
        except Exception:
            log.warning("C-FIND aet=%s: undecodable identifier", remote_aet)
            return iter([(DimseStatus.IDENTIFIER_DOES_NOT_MATCH, None)])
        try:
            request = parse_identifier(
                identifier, case_sensitive_pn=self.settings.case_sensitive_pn
            )
        except (OrthancError, ValueError, KeyError, TypeError) as error:
            log.warning("C-FIND aet=%s: bad identifier: %s", remote_aet, patient_text(error))
            return iter([(DimseStatus.UNABLE_TO_PROCESS, None)])
        return traced(
            self._answers(event, request, remote_aet), "C-FIND",
            attributes={"dicom.calling_ae_title": remote_aet,
                        "dicom.query_level": str(request.level.value)},
        )

    def _answers(
        self, event: Any, request: FindRequest, remote_aet: str
    ) -> Iterator[tuple[int, Dataset | None]]:
        settings = self.settings
        limit = effective_limit(
            request.level, 0, settings.limit_find_results, settings.limit_find_instances
        )
        try:
            options = self._run(scp_options.current(settings, self.index))
            outcome = self._run(
                find_resources(
                    self.index, self.blobs, request.level, request.constraints,
                    limit=limit, storage_access=settings.storage_access_on_find,
                )
            )
        except Exception:
            log.exception("C-FIND failed aet=%s level=%s", remote_aet, request.level.value)
            yield DimseStatus.UNABLE_TO_PROCESS, None
            return
        log.info(
            "C-FIND aet=%s level=%s matches=%d complete=%s",
            remote_aet, request.level.value, len(outcome.ids), outcome.complete,
        )
        reader = None if settings.storage_access_on_find == NEVER else FileReader(self.index, self.blobs)
        for start in range(0, len(outcome.ids), BATCH):
            chunk = outcome.ids[start : start + BATCH]
            try:
                values, sequences = self._run(self._collect(request, chunk, reader))
            except Exception:
                log.exception("C-FIND answers failed aet=%s", remote_aet)
                yield DimseStatus.UNABLE_TO_PROCESS, None
                return
            for public_id in chunk:
                if public_id not in values:
                    continue  # deleted meanwhile
                if event.is_cancelled:
                    yield DimseStatus.CANCEL, None
                    return
                yield DimseStatus.PENDING, self._answer(
                    request, values[public_id], sequences.get(public_id, {}), options.default_encoding
                )
        if not outcome.complete:
            yield DimseStatus.CANCEL, None

    async def _collect(
        self, request: FindRequest, ids: Sequence[str], reader: FileReader | None
    ) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, DataElement]]]:
        """Values of the requested keys and requested sequences, per resource."""
        values = await tag_values(self.index, request.level, ids, request.value_tags, reader=reader)
        sequences: dict[str, dict[int, DataElement]] = {}
        if request.sequence_tags and reader is not None:
            for public_id in values:
                found = await reader.data(request.level, public_id)
                if found is not None:
                    sequences[public_id] = await asyncio.to_thread(
                        _file_sequences, found[0], request.sequence_tags
                    )
        return values, sequences

    def _answer(
        self,
        request: FindRequest,
        values: dict[int, str],
        sequences: dict[int, DataElement],
        default_encoding: str,
    ) -> Dataset:
        """Build one answer: every requested key (its value or empty), RetrieveAETitle,
        QueryRetrieveLevel echoed, SpecificCharacterSet per DefaultEncoding (the
        configuration's, or the one of `PUT /tools/default-encoding`)."""
        answer = Dataset()
        answer.add_new(SPECIFIC_CHARACTER_SET, "CS", character_set(default_encoding))
        answer.add_new(RETRIEVE_AE_TITLE, "AE", self.settings.dicom_aet)
        for key in request.keys:
            if key.tag == RETRIEVE_AE_TITLE:
                continue
            if key.tag == QUERY_RETRIEVE_LEVEL:
                answer.add_new(key.tag, "CS", request.level_text)
            elif key.vr == "SQ":
                if key.tag in sequences:
                    answer.add(sequences[key.tag])
            else:
                vr = "UN" if key.vr == "UN" else key.vr
                answer.add_new(key.tag, vr, _element_value(vr, values.get(key.tag, "")))
        return answer


def _file_sequences(data: bytes, tags: Sequence[int]) -> dict[int, DataElement]:
    """Return the requested top-level sequences of a stored file (absent ones left out)."""
    try:
        dataset = dcmread(BytesIO(data), stop_before_pixels=True, force=True)
    except (InvalidDicomError, ValueError, EOFError, OSError):
        return {}
    found: dict[int, DataElement] = {}
    for tag in tags:
        if tag in dataset and dataset[tag].VR == "SQ":
            element = dataset[tag]
            found[tag] = DataElement(tag, "SQ", DicomSequence(list(element.value)))
    return found
