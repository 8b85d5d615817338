"""DicomKeep's settings: Orthanc's options under Orthanc's names, plus backend sections.

One frozen pydantic model. Fields are snake_case; the JSON keys are Orthanc's
(`StableAge`, `DicomAet`, `CheckRevisions`) through an alias generator, so an
existing Orthanc configuration file loads unchanged (unknown keys are ignored).
Types are strict, as in Orthanc: `"StableAge": "60"` or `"DicomPort": true` is an
error. Backend sections reuse Orthanc plugin names where they exist (`PostgreSQL`,
`AwsS3Storage`); ours (`RabbitMQ`, `Redis`, `DicomKeep`) use the same casing.

`load_settings` reads, low to high: defaults, a JSON file or folder, `ORTHANC_JSON`,
`ORTHANC__...` variables and their `_SECRET` files, then the `DICOMKEEP_*`
variables (ORTHANC_API.md §15). A plain `pydantic-settings` model is not used: it
would name variables after the aliases, not after the orthancteam convention.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from dicomkeep.common.config_files import (
    ConfigError,
    deep_merge,
    describe_validation_error,
    env_name,
    option_paths,
    overlay_from_variables,
    parse_json_object,
    read_configuration,
    render_sample,
    resolve_secrets,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

__all__ = [
    "DIRECT_VARIABLES",
    "ConfigError",
    "DicomKeepSettings",
    "PostgresSettings",
    "RabbitSettings",
    "RedisSettings",
    "S3Settings",
    "Settings",
    "env_name",
    "load_settings",
    "parse_settings",
    "sample_configuration",
    "settings_variables",
]

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

#: DicomKeep's own variables, applied last: name -> option path.
DIRECT_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "DICOMKEEP_POSTGRES_DSN": ("PostgreSQL", "ConnectionUri"),
    "DICOMKEEP_AMQP_URL": ("RabbitMQ", "Url"),
    "DICOMKEEP_REDIS_URL": ("Redis", "Url"),
    "DICOMKEEP_S3_ENDPOINT": ("AwsS3Storage", "Endpoint"),
    "DICOMKEEP_S3_BUCKET": ("AwsS3Storage", "BucketName"),
    "DICOMKEEP_S3_ACCESS_KEY": ("AwsS3Storage", "AccessKey"),
    "DICOMKEEP_S3_SECRET_KEY": ("AwsS3Storage", "SecretKey"),
}

#: Core metadata names (ORTHANC_API.md §3): a user metadata cannot reuse them.
CORE_METADATA = (
    "IndexInSeries", "ReceptionDate", "RemoteAET", "ExpectedNumberOfInstances",
    "ModifiedFrom", "AnonymizedFrom", "LastUpdate", "Origin", "TransferSyntax",
    "SopClassUid", "RemoteIP", "CalledAET", "HttpUsername", "PixelDataOffset",
    "MainDicomTagsSignature", "MainDicomSequences", "PixelDataVR",
)  # fmt: skip
#: Core attachment names (ORTHANC_API.md §4): a user content type cannot reuse them.
CORE_CONTENT_TYPES = ("dicom", "dicom-as-json", "dicom-until-pixel-data")
#: The MIME type of a user content type registered without one.
DEFAULT_MIME = "application/octet-stream"
#: Range of user metadata keys and user content types.
USER_KEY_RANGE = (1024, 65535)

_INTEGER_RE = re.compile(r"[+-]?[0-9]+")


def orthanc_alias(field_name: str) -> str:
    """Return the Orthanc option name of a field: `stable_age` -> `StableAge`."""
    exception = _ALIAS_EXCEPTIONS.get(field_name)
    if exception is not None:
        return exception
    return "".join(word.capitalize() for word in field_name.split("_"))


Port = Annotated[int, Field(ge=0, le=65535)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]

_MODEL_CONFIG = ConfigDict(
    frozen=True,
    populate_by_name=True,
    alias_generator=orthanc_alias,
    extra="ignore",
    strict=True,
    use_attribute_docstrings=True,  # each field's docstring is its description
)


class PostgresSettings(BaseModel):
    """The `PostgreSQL` section (option names of Orthanc's PostgreSQL plugin)."""

    model_config = _MODEL_CONFIG

    enable_index: bool = False
    """Keep the index in PostgreSQL. Default false."""
    host: str = "127.0.0.1"
    """Server host. Default "127.0.0.1"."""
    port: Port = 5432
    """Server TCP port. Default 5432."""
    database: str = "dicomkeep"
    """Database name. Default "dicomkeep"."""
    username: str = "postgres"
    """User name. Default "postgres"."""
    password: str = ""
    """Password. Default "" (none)."""
    enable_ssl: bool = False
    """Require TLS (sslmode=require). Default false."""
    connection_uri: Annotated[
        str | None, Field(examples=["postgresql://postgres@127.0.0.1:5432/dicomkeep"])
    ] = None
    """libpq URI overriding Host, Port, Database, Username, Password. Default unset.
    Environment: DICOMKEEP_POSTGRES_DSN."""
    index_connections_count: Positive = 10
    """Size of the index connection pool. Default 10."""
    maximum_connection_retries: Count = 10
    """Connection attempts, 1 s apart, before giving up. Default 10."""

    def dsn(self) -> str:
        """Return `ConnectionUri` if set, else a `postgresql://` URI built from the parts.

        User, password and database are percent-encoded; an IPv6 host is bracketed.
        """
        if self.connection_uri:
            return self.connection_uri
        userinfo = quote(self.username, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        dsn = f"postgresql://{userinfo}@{host}:{self.port}/{quote(self.database, safe='')}"
        return dsn + "?sslmode=require" if self.enable_ssl else dsn


class S3Settings(BaseModel):
    """The `AwsS3Storage` section (option names of Orthanc's AWS S3 storage plugin)."""

    model_config = _MODEL_CONFIG

    bucket_name: str = "dicomkeep"
    """Bucket of the blobs. Default "dicomkeep". Environment: DICOMKEEP_S3_BUCKET."""
    region: str = "us-east-1"
    """Region. Default "us-east-1"."""
    access_key: str = ""
    """Access key. Default "". Environment: DICOMKEEP_S3_ACCESS_KEY."""
    secret_key: str = ""
    """Secret key. Default "". Environment: DICOMKEEP_S3_SECRET_KEY."""
    endpoint: str = ""
    """Endpoint URL such as "http://127.0.0.1:9000"; "" = AWS in Region. Default "".
    Environment: DICOMKEEP_S3_ENDPOINT."""
    virtual_addressing: bool = False
    """Virtual-host style bucket URLs; false = path style. Default false."""

    def endpoint_address(self) -> tuple[str, bool]:
        """Return (`host[:port]`, uses TLS) of the endpoint, as an S3 client takes it.

        An empty Endpoint means AWS: `s3.<Region>.amazonaws.com` over TLS. An endpoint
        without a scheme is taken as HTTPS.
        """
        if not self.endpoint:
            return f"s3.{self.region}.amazonaws.com", True
        parts = urlsplit(self.endpoint if "://" in self.endpoint else "https://" + self.endpoint)
        return parts.netloc, parts.scheme != "http"


class RabbitSettings(BaseModel):
    """The `RabbitMQ` section: the message bus of the distributed mode."""

    model_config = _MODEL_CONFIG

    url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """AMQP URL. Default "amqp://guest:guest@127.0.0.1:5672/".
    Environment: DICOMKEEP_AMQP_URL."""
    prefetch: Positive = 64
    """Unacknowledged messages per consumer. Default 64."""
    publish_changes: bool = False
    """All-in-one mode only: also publish the change events on this broker's
    `dicomkeep.changes` exchange (the distributed mode always does). Default false."""


class RedisSettings(BaseModel):
    """The `Redis` section: the stability clock of the distributed mode."""

    model_config = _MODEL_CONFIG

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL. Default "redis://127.0.0.1:6379/0". Environment: DICOMKEEP_REDIS_URL."""


class DicomKeepSettings(BaseModel):
    """The `DicomKeep` section: options with no Orthanc counterpart."""

    model_config = _MODEL_CONFIG

    mode: Literal["allinone", "distributed"] = "allinone"
    """"allinone" (SQLite, files, in-process bus) or "distributed" (PostgreSQL, S3,
    RabbitMQ, Redis). Default "allinone"."""
    ingest_workers: Positive = 1
    """Ingest worker tasks. Default 1."""
    ops_port: Port = 0
    """Port of the health and metrics endpoints; 0 = none. Default 0."""
    store_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds to wait for a store to complete. Default 30."""
    orphan_grace_period: Annotated[float, Field(ge=0)] = 600.0
    """Seconds before an unreferenced blob is collected. Default 600."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as "text" (`time LEVEL logger message`) or "json" (one JSON object
    per line, with the trace and span ids). `--log-format` overrides it.
    Default "text"."""


class Settings(BaseModel):
    """All options. Defaults are Orthanc 1.12's; JSON keys are Orthanc's names.

    Frozen; constructed by name (`Settings(stable_age=5)`) or by alias. Raises
    pydantic's ValidationError when built directly; `parse_settings` and
    `load_settings` raise ConfigError instead.
    """

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
    """Archives kept for later download. Default 1."""
    synchronous_zip_stream: bool = True
    """Stream ZIP archives while they are built. Default true."""
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

    # -- HTTP server and security (§14) --
    http_server_enabled: bool = True
    """Serve the REST API. Default true."""
    http_port: Port = 8042
    """REST API port. Default 8042."""
    http_describe_errors: bool = True
    """Send JSON error bodies. Default true."""
    http_compression_enabled: bool = False
    """Gzip the HTTP answers. Default false."""
    remote_access_allowed: bool = False
    """Accept HTTP clients other than localhost. Default false."""
    authentication_enabled: Annotated[bool | None, Field(examples=[True])] = None
    """Require HTTP Basic authentication. Default: RemoteAccessAllowed."""
    registered_users: dict[str, str] = {}
    """HTTP users: name -> password. Default {}."""
    ssl_enabled: bool = False
    """HTTPS on HttpPort. Default false."""
    ssl_certificate: str = "certificate.pem"
    """PEM file with the certificate and its key. Default "certificate.pem"."""
    ssl_minimum_protocol_version: Count = 4
    """Minimum TLS version; 4 = TLS 1.2. Default 4."""
    ssl_verify_peers: bool = False
    """Require client certificates. Default false."""
    ssl_trusted_client_certificates: str = "trustedClientCertificates.pem"
    """Trusted client certificates. Default "trustedClientCertificates.pem"."""
    http_threads_count: Positive = 50
    """HTTP worker threads. Default 50."""
    http_request_timeout: Count = 30
    """Seconds to receive an HTTP request. Default 30."""
    keep_alive: bool = True
    """HTTP keep-alive. Default true."""
    keep_alive_timeout: Count = 1
    """Keep-alive in seconds. Default 1."""
    execute_lua_enabled: bool = False
    """Allow /tools/execute-script. Default false."""
    rest_api_write_to_file_system_enabled: bool = False
    """Allow POST /instances/{id}/export. Default false."""
    web_dav_enabled: bool = True
    """WebDAV share (not served by DicomKeep). Default true."""

    # -- DICOM networking (§11) --
    dicom_server_enabled: bool = True
    """Run the DICOM SCP. Default true."""
    dicom_aet: Annotated[str, Field(max_length=16)] = "ORTHANC"
    """Our AE title, at most 16 characters. Default "ORTHANC"."""
    dicom_port: Port = 4242
    """DICOM SCP port. Default 4242."""
    dicom_check_called_aet: bool = False
    """Refuse associations whose called AET is not DicomAet. Default false."""
    strict_aet_comparison: bool = False
    """Compare AETs case-sensitively. Default false."""
    dicom_check_modality_host: bool = False
    """The caller's IP must be the Host of its modality. Default false."""
    dicom_always_allow_echo: bool = True
    """Accept C-ECHO from unknown AETs. Default true."""
    dicom_always_allow_store: bool = True
    """Accept C-STORE from unknown AETs. Default true."""
    dicom_always_allow_find: bool = False
    """Accept C-FIND from unknown AETs. Default false."""
    dicom_always_allow_find_worklist: bool = False
    """Accept worklist C-FIND from unknown AETs. Default false."""
    dicom_always_allow_get: bool = False
    """Accept C-GET from unknown AETs. Default false."""
    dicom_always_allow_move: bool = False
    """Accept C-MOVE from unknown AETs. Default false."""
    unknown_sop_class_accepted: bool = False
    """The C-STORE SCP accepts any SOP class. Default false."""
    accepted_transfer_syntaxes: list[str] = ["1.2.840.10008.1.*"]
    """Transfer syntaxes accepted by the SCP (wildcards * and ?).
    Default ["1.2.840.10008.1.*"]."""
    dicom_scp_timeout: Count = 30
    """Idle seconds before the SCP closes an association. Default 30."""
    dicom_scu_timeout: Count = 10
    """Seconds our SCU waits for an answer. Default 10."""
    dicom_modalities: dict[str, list[Any] | dict[str, Any]] = {}
    """Modalities: name -> ["AET", "host", port] or an object. Default {}."""
    dicom_modalities_in_database: bool = False
    """Keep the modalities in the database. Default false."""
    dicom_echo_checks_find: bool = False
    """A REST C-ECHO also sends a C-FIND. Default false."""
    synchronous_cmove: bool = True
    """The C-MOVE SCP answers after its sub-operations. Default true."""
    dicom_association_close_delay: Count = 5
    """Seconds before an idle SCU association is closed. Default 5."""
    dicom_threads_count: Positive = 4
    """Concurrent DICOM SCP operations. Default 4."""
    default_encoding: str = "Latin1"
    """Character set assumed without SpecificCharacterSet. Default "Latin1"."""
    dicom_scu_preferred_transfer_syntax: str = "1.2.840.10008.1.2.1"
    """Transcoding target of our SCU. Default "1.2.840.10008.1.2.1"."""

    # -- peers and outgoing HTTP (§12) --
    orthanc_peers: dict[str, list[Any] | dict[str, Any]] = {}
    """Peers: name -> ["url"], ["url", "user", "password"] or an object. Default {}."""
    orthanc_peers_in_database: bool = False
    """Keep the peers in the database. Default false."""
    http_timeout: Count = 60
    """Seconds of an outgoing HTTP request; 0 = none. Default 60."""
    https_verify_peers: bool = True
    """Verify the certificates of HTTPS peers. Default true."""
    https_ca_certificates: str = ""
    """CA bundle of outgoing HTTPS; "" = the system's. Default ""."""
    http_proxy: str = ""
    """Proxy of outgoing HTTP. Default ""."""
    http_verbose: bool = False
    """Log outgoing HTTP. Default false."""

    # -- DicomKeep backends --
    postgresql: PostgresSettings = PostgresSettings()
    """PostgreSQL index (distributed mode)."""
    aws_s3_storage: S3Settings = S3Settings()
    """S3 blob storage (distributed mode)."""
    rabbitmq: RabbitSettings = RabbitSettings()
    """RabbitMQ bus (distributed mode)."""
    redis: RedisSettings = RedisSettings()
    """Redis stability clock (distributed mode)."""
    dicomkeep: DicomKeepSettings = DicomKeepSettings()
    """DicomKeep's own options."""

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
    def _revisions_need_md5(self) -> Settings:
        if self.check_revisions and not self.store_md5_for_attachments:
            raise ValueError(
                '"CheckRevisions" is true but "StoreMD5ForAttachments" is false: '
                "revisions compare MD5s, enable StoreMD5ForAttachments"
            )
        return self

    @property
    def effective_authentication(self) -> bool:
        """Whether HTTP authentication is on: AuthenticationEnabled, else RemoteAccessAllowed."""
        if self.authentication_enabled is None:
            return self.remote_access_allowed
        return self.authentication_enabled

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


def settings_variables() -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """Map each `ORTHANC__...` variable name to its option path and field.

    Computed with `env_name` from every alias of `Settings`, sections included
    (`ORTHANC__POSTGRESQL` and `ORTHANC__POSTGRESQL__HOST`); the inverse of the name
    rule, restricted to known options.
    """
    return {env_name(path): (path, field) for path, field in option_paths(Settings)}


def parse_settings(data: Mapping[str, Any]) -> Settings:
    """Validate an option object (Orthanc's keys) into Settings; raise ConfigError.

    The message lists every bad option by its Orthanc path and the JSON type found.
    """
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    secrets_dir: str | Path = "/run/secrets",
) -> Settings:
    """Load the settings from defaults, a file or folder, and the environment.

    Sources, low to high: defaults; `path` (a JSON file, or every `*.json` of a
    folder; comments and `${VAR:-default}` allowed); `ORTHANC_JSON` (deep-merged);
    `ORTHANC__...` variables (see `env_name`), whose `NAME_SECRET=file` form reads
    `secrets_dir/file`; then `DICOMKEEP_POSTGRES_DSN`, `DICOMKEEP_AMQP_URL`,
    `DICOMKEEP_REDIS_URL`, `DICOMKEEP_S3_*` (also with `_SECRET`). `environ`
    defaults to `os.environ`. Unknown keys and variables are ignored. Raises
    ConfigError on unreadable or invalid input; reads nothing but those files.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        data = read_configuration(Path(path), env)
    if env.get("ORTHANC_JSON"):
        data = deep_merge(data, parse_json_object(env["ORTHANC_JSON"], "ORTHANC_JSON"))
    variables = settings_variables()
    fields = dict(variables.values())
    direct = {name: (p, fields[p]) for name, p in DIRECT_VARIABLES.items()}
    env = resolve_secrets(env, set(variables) | set(direct), Path(secrets_dir))
    data = deep_merge(data, overlay_from_variables(env, variables))
    data = deep_merge(data, overlay_from_variables(env, direct))
    return parse_settings(data)


def sample_configuration() -> str:
    """Return an annotated Orthanc-style JSON of every option at its default.

    Like `Orthanc --config=file`: `//` comments give each option's meaning, unit
    and default; options without a default value are commented out. Loading the
    text with `load_settings` yields `Settings()`.
    """
    header = (
        "DicomKeep configuration, Orthanc-compatible: an Orthanc configuration file\n"
        "loads unchanged, unknown options are ignored. Comments are allowed."
    )
    return render_sample(Settings, header)
