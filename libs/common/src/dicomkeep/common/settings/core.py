"""Orthanc's core options: storage, index, jobs, search, user metadata and attachments.

Mirrors ORTHANC_API.md §3, §4, §5, §8, §9, §10, §13 and §15; the registration
checks of `UserMetadata` and `UserContentType` are Orthanc's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from dicomkeep.common import orthanc
from dicomkeep.common.settings.base import MODEL_CONFIG as _MODEL_CONFIG
from dicomkeep.common.settings.base import Count
from pydantic import BaseModel, Field, field_validator, model_validator

#: Core metadata names (ORTHANC_API.md §3): a user metadata cannot reuse them.
CORE_METADATA = tuple(orthanc.CORE_METADATA)
#: Core attachment names (ORTHANC_API.md §4): a user content type cannot reuse them.
CORE_CONTENT_TYPES = tuple(orthanc.CORE_CONTENT_TYPES)
#: The MIME type of a user content type registered without one.
DEFAULT_MIME = "application/octet-stream"
#: Range of user metadata keys and user content types (the same in Orthanc).
USER_KEY_RANGE = (orthanc.FIRST_USER_METADATA, orthanc.LAST_USER_METADATA)

_INTEGER_RE = re.compile(r"[+-]?[0-9]+")


class CoreOptions(BaseModel):
    """Storage, index, jobs and search options (Orthanc's core)."""

    model_config = _MODEL_CONFIG

    # -- storage and index (ORTHANC_API.md §3, §4, §5, §8, §9, §15) --
    name: str = "MyOrthanc"
    """Name shown by /system. Default "MyOrthanc"."""
    storage_directory: str = "OrthancStorage"
    """Folder of the stored files. Default "OrthancStorage"."""
    index_directory: Annotated[str | None, Field(examples=["OrthancStorage"])] = None
    """Folder of the SQLite index. Default: StorageDirectory."""
    temporary_directory: Annotated[str | None, Field(examples=["/tmp"])] = None
    """Folder of temporary files. Default: the system's."""
    storage_compression: bool = False
    """Store new attachments zlib-compressed. Default false."""
    maximum_storage_size: Count = 0
    """Storage quota in MB (1048576 bytes of stored attachments); 0 = none. Default 0."""
    maximum_patient_count: Count = 0
    """Maximum number of patients; 0 = none. Default 0."""
    maximum_storage_mode: Literal["Recycle", "Reject"] = "Recycle"
    """At a limit, "Recycle" the oldest unprotected patient or "Reject" the store.
    Default "Recycle"."""
    maximum_storage_cache_size: Count = 128
    """Cache of DICOM files in MB. Default 128."""
    store_dicom: bool = True
    """Store the DICOM files. Default true."""
    store_md5_for_attachments: bool = True
    """Compute the MD5 hashes of attachments. Default true."""
    overwrite_instances: bool = False
    """A second store of an instance replaces it. Default false."""
    stable_age: int = 60
    """Seconds without a new instance before a patient, study or series is stable;
    <= 0 means 60. Default 60."""
    user_metadata: dict[str, int] = {}
    """User metadata: name -> key in 1024..65535. Default {}."""
    user_content_type: dict[str, int | list[int | str]] = {}
    """User attachments: name -> type in 1024..65535, or [type, "MIME type"]. Default {}."""
    check_revisions: bool = False
    """Require If-Match to overwrite or delete metadata and attachments. Default false."""
    database_server_identifier: Annotated[str | None, Field(examples=["dicomkeep-1"])] = None
    """Identity of this server among the writers of one database. Default: derived."""
    extra_main_dicom_tags: dict[str, Any] = {}
    """Extra main DICOM tags per level (accepted, ignored). Default {}."""

    # -- jobs (§10) --
    save_jobs: bool = True
    """Persist the jobs across restarts. Default true."""
    concurrent_jobs: Count = 2
    """Jobs running at once; 0 = number of CPUs. Default 2."""
    jobs_history_size: Count = 10
    """Finished jobs kept. Default 10."""
    media_archive_size: Count = 1
    """Archives of asynchronous Archive/Media jobs kept for `GET /jobs/{id}/archive`
    (in the blob store, oldest dropped first). Default 1."""
    synchronous_zip_stream: bool = True
    """Stream synchronous ZIP archives while they are built; false = build the whole
    ZIP in a temporary file, then send it with its Content-Length. Default true."""
    log_exported_resources: bool = False
    """Log exported resources in /exports. Default false."""

    # -- monitoring and logs --
    metrics_enabled: bool = True
    """Collect the metrics of /tools/metrics-prometheus (PUT /tools/metrics changes
    it at run time). Default true."""
    deidentify_logs: bool = True
    """Keep patient data (names, DICOM identifiers) out of the logs. Default true."""

    # -- search (§11.4, §13) --
    storage_access_on_find: Literal["Always", "Answers", "Never"] = "Always"
    """Reading of files during find: "Always", "Answers" or "Never". Default "Always"."""
    limit_find_results: Count = 0
    """Maximum results of C-FIND and /tools/find; 0 = none. Default 0."""
    limit_find_instances: Count = 0
    """Maximum instance-level results; 0 = none. Default 0."""
    case_sensitive_pn: bool = False
    """C-FIND person-name matching is case-sensitive. Default false."""
    query_retrieve_size: Count = 100
    """REST queries kept in /queries. Default 100."""

    @field_validator("stable_age")
    @classmethod
    def _stable_age(cls, value: int) -> int:
        # Orthanc: "StableAge <= 0" falls back to the default.
        return value if value > 0 else 60

    @field_validator("user_metadata")
    @classmethod
    def _user_metadata(cls, value: dict[str, int]) -> dict[str, int]:
        _check_user_names("UserMetadata", value, CORE_METADATA)
        return value

    @field_validator("user_content_type")
    @classmethod
    def _user_content_type(
        cls, value: dict[str, int | list[int | str]]
    ) -> dict[str, int | list[int | str]]:
        keys = {name: _content_type_entry(name, entry)[0] for name, entry in value.items()}
        _check_user_names("UserContentType", keys, CORE_CONTENT_TYPES)
        return value

    @model_validator(mode="after")
    def _revisions_need_md5(self) -> CoreOptions:
        if self.check_revisions and not self.store_md5_for_attachments:
            raise ValueError(
                '"CheckRevisions" is true but "StoreMD5ForAttachments" is false: '
                "revisions compare MD5s, enable StoreMD5ForAttachments"
            )
        return self

    @property
    def effective_index_directory(self) -> str:
        """The SQLite index folder: IndexDirectory, else StorageDirectory."""
        return self.index_directory or self.storage_directory

    @property
    def user_attachment_types(self) -> dict[str, tuple[int, str]]:
        """UserContentType as name -> (content type, MIME), MIME defaulted."""
        return {
            name: _content_type_entry(name, entry) for name, entry in self.user_content_type.items()
        }


def _content_type_entry(name: str, entry: int | list[int | str]) -> tuple[int, str]:
    """Return (type, MIME) of one UserContentType entry; raise ValueError if malformed."""
    if isinstance(entry, int):
        return entry, DEFAULT_MIME
    if len(entry) in (1, 2) and isinstance(entry[0], int):
        mime = entry[1] if len(entry) == 2 else DEFAULT_MIME
        if isinstance(mime, str):
            return entry[0], mime
    raise ValueError(
        f'UserContentType "{name}": expected a type number or [type, "MIME type"], got {entry}'
    )


def _check_user_names(option: str, keys: Mapping[str, int], core_names: tuple[str, ...]) -> None:
    """Mirror Orthanc's registration checks: user range, unique keys and names."""
    low, high = USER_KEY_RANGE
    owners: dict[int, str] = {}
    for name, key in keys.items():
        if not low <= key <= high:
            raise ValueError(f'{option} "{name}": key {key} is outside {low}..{high}')
        if _INTEGER_RE.fullmatch(name.strip()):
            raise ValueError(f'{option} "{name}": a name cannot be an integer')
        if name in core_names:
            raise ValueError(f'{option} "{name}": this name is reserved by Orthanc')
        if key in owners:
            raise ValueError(f'{option}: key {key} is used by both "{owners[key]}" and "{name}"')
        owners[key] = name
