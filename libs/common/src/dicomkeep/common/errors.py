"""Domain errors, mapped to Orthanc's error codes and HTTP statuses.

Mirrors Orthanc's `ErrorCode` enumeration (OrthancFramework/Sources/Enumerations.h):
the gateway renders `OrthancError` as Orthanc's JSON error body, ingest as a DIMSE
failure status.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    """An Orthanc error: (OrthancStatus, message, default HTTP status)."""

    INTERNAL_ERROR = (-1, "Internal error", 500)
    NOT_IMPLEMENTED = (2, "Not implemented yet", 500)
    PARAMETER_OUT_OF_RANGE = (3, "Parameter out of range", 400)
    BAD_PARAMETER_TYPE = (5, "Bad type for a parameter", 400)
    BAD_SEQUENCE_OF_CALLS = (6, "Bad sequence of calls", 500)
    INEXISTENT_ITEM = (7, "Accessing an inexistent item", 404)
    BAD_REQUEST = (8, "Bad request", 400)
    NETWORK_PROTOCOL = (9, "Error in the network protocol", 500)
    CANNOT_WRITE_FILE = (14, "Cannot write to file", 500)
    BAD_FILE_FORMAT = (15, "Bad file format", 400)
    TIMEOUT = (16, "Timeout", 500)
    UNKNOWN_RESOURCE = (17, "Unknown resource", 404)
    FULL_STORAGE = (19, "The file storage is full", 507)
    CORRUPTED_FILE = (20, "Corrupted file (e.g. inconsistent MD5 hash)", 500)
    INEXISTENT_TAG = (21, "Inexistent tag", 404)
    UNKNOWN_DICOM_TAG = (27, "Unknown DICOM tag", 500)
    BAD_JSON = (28, "Cannot parse a JSON document", 400)
    UNAUTHORIZED = (29, "Bad credentials were provided to an HTTP request", 401)
    NOT_ACCEPTABLE = (
        34,
        "Cannot send a response which is acceptable according to the Accept HTTP header",
        406,
    )
    DATABASE_UNAVAILABLE = (
        36,
        "The database is currently not available (probably a transient situation)",
        503,
    )
    CANCELED_JOB = (37, "This job was canceled", 500)
    BAD_RANGE = (41, "Incorrect range request", 416)
    DATABASE_CANNOT_SERIALIZE = (
        42,
        "Database could not serialize access due to concurrent update, "
        "the transaction should be retried",
        503,
    )
    REVISION = (
        43,
        "A bad revision number was provided, which might indicate conflict "
        "between multiple writers",
        409,
    )
    FORBIDDEN_ACCESS = (45, "Access to a resource is forbidden", 403)
    DUPLICATE_RESOURCE = (46, "Duplicate resource", 409)
    UNSUPPORTED_MEDIA_TYPE = (3000, "Unsupported media type", 415)
    CREATE_DICOM_NOT_STRING = (
        2019, "Only string values are supported when creating DICOM instances", 400
    )
    CREATE_DICOM_OVERRIDE_TAG = (
        2020, "Trying to override a value inherited from a parent module", 400
    )
    CREATE_DICOM_USE_CONTENT = (
        2021, 'Use "Content" to inject an image into a new DICOM instance', 400
    )
    CREATE_DICOM_NO_PAYLOAD = (2022, "No payload is present for one instance in the series", 400)
    CREATE_DICOM_USE_DATA_URI_SCHEME = (
        2023,
        "The payload of the DICOM instance must be specified according to Data URI scheme",
        400,
    )
    CREATE_DICOM_BAD_PARENT = (
        2024, "Trying to attach a new DICOM instance to an inexistent resource", 400
    )
    CREATE_DICOM_PARENT_IS_INSTANCE = (
        2025,
        "Trying to attach a new DICOM instance to an instance (must be a series, study or patient)",
        400,
    )

    @property
    def status(self) -> int:
        """Orthanc's integer code (`OrthancStatus`)."""
        return self.value[0]

    @property
    def message(self) -> str:
        """Orthanc's fixed text for the code (`OrthancError` and `Message`)."""
        return self.value[1]

    @property
    def http_status(self) -> int:
        """The HTTP status Orthanc answers with for this code."""
        return self.value[2]


class OrthancError(Exception):
    """An error with an Orthanc code; `details` is the optional `Details` text."""

    def __init__(
        self, code: ErrorCode, details: str | None = None, *, http_status: int | None = None
    ) -> None:
        super().__init__(details or code.message)
        self.code = code
        self.details = details
        self.http_status = http_status or code.http_status


class NoAnswer(Exception):
    """The handler has no answer: Orthanc then replies 404 (400 for POST), empty body.

    Mirrors Orthanc's REST layer, which answers an empty 404 for `GET /{level}/{unknown}`
    and similar (ORTHANC_API.md §0).
    """

    def __init__(self, http_status: int | None = None) -> None:
        super().__init__("no answer")
        self.http_status = http_status


class Forbidden(Exception):
    """A write to a core metadata key or attachment type: 403 with an empty body."""


class RemoteUnavailable(Exception):
    """Another process (a responder over the bus) could not reach a backend it needs.

    Its text is the remote error's. `unavailability` maps it to 503, as it would
    the remote error itself had it been raised here.
    """


def unknown_resource(details: str | None = None) -> OrthancError:
    """Return the 404 *Unknown resource* error."""
    return OrthancError(ErrorCode.UNKNOWN_RESOURCE, details)


#: SQLite result codes (by name, `sqlite3.Error.sqlite_errorname`) that say the
#: database cannot be reached right now: locked, unreadable, read-only, I/O error.
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                       "SQLITE_READONLY", "SQLITE_PROTOCOL", "SQLITE_NOTADB")
#: PostgreSQL SQLSTATE prefixes of the same kind: connection exceptions (08),
#: insufficient resources (53), operator intervention (57P: shutdown, cannot
#: connect now), invalid catalog (3D000: database dropped), invalid authorization
#: (28: role revoked or password changed), insufficient privilege (42501) and
#: "database is not accepting connections" (55000).
_SQLSTATE_UNAVAILABLE = ("08", "53", "57P", "3D000", "28", "42501", "55000")
#: Driver packages whose every exception means "the broker or clock is unreachable"
#: (the gateway and the services only talk to them through the bus and the clock).
_BROKER_MODULES = ("aiormq", "aio_pika", "pamqp", "redis")


def unavailability(exc: BaseException) -> OrthancError | None:
    """Return the 503 *database unavailable* error if `exc` says that the database,
    the broker or the clock cannot be reached right now; None for any other error.

    Mirrors Orthanc, which maps its database plugins' connection failures to
    `ErrorCode_DatabaseUnavailable` (HTTP 503: the client should retry later).
    The exception, its causes and the members of exception groups are examined
    by type and driver error code only, so that no driver is imported here:
    `OSError` (refused or reset connections), `TimeoutError`, sqlite3 errors
    with a locked/I/O/cannot-open code, asyncpg errors with a connection-class
    SQLSTATE or none (interface errors: pool closed, connection lost), and any
    error of the AMQP or Redis client packages.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        reason = _unavailable_reason(current)
        if reason is not None:
            return OrthancError(ErrorCode.DATABASE_UNAVAILABLE, reason)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    return None


def _unavailable_reason(exc: BaseException) -> str | None:
    if isinstance(exc, OrthancError):
        return None
    if isinstance(exc, RemoteUnavailable):
        return f"A backend of another service is unreachable ({exc})"
    module = type(exc).__module__ or ""
    package = module.split(".", 1)[0]
    if package in _BROKER_MODULES:
        return f"The message broker or the stability clock is unreachable ({type(exc).__name__})"
    if package == "asyncpg":
        state = str(getattr(exc, "sqlstate", "") or "")
        if not state or state.startswith(_SQLSTATE_UNAVAILABLE):
            return f"The database is unreachable ({type(exc).__name__})"
        return None
    if package == "sqlite3":
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        if name.startswith(_SQLITE_UNAVAILABLE):
            return f"The database is unavailable ({name})"
        return None
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return f"A backend is unreachable ({type(exc).__name__})"
    return None
