"""The backend sections: `PostgreSQL`, `AwsS3Storage`, `RabbitMQ`, `Redis`, `DicomKeep`.

Sections reuse the option names of Orthanc's plugins where they exist
(`PostgreSQL`, `AwsS3Storage`); ours (`RabbitMQ`, `Redis`, `DicomKeep`) use the
same casing. Only the distributed mode uses the first four.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from dicomkeep.common.settings.base import MODEL_CONFIG as _MODEL_CONFIG
from dicomkeep.common.settings.base import Count, Port, Positive
from pydantic import BaseModel, Field

#: DicomKeep's own variables, applied last: name -> option path.
DIRECT_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "DICOMKEEP_POSTGRES_DSN": ("PostgreSQL", "ConnectionUri"),
    "DICOMKEEP_AMQP_URL": ("RabbitMQ", "Url"),
    "DICOMKEEP_REDIS_URL": ("Redis", "Url"),
    "DICOMKEEP_S3_ENDPOINT": ("AwsS3Storage", "Endpoint"),
    "DICOMKEEP_S3_BUCKET": ("AwsS3Storage", "BucketName"),
    "DICOMKEEP_S3_ACCESS_KEY": ("AwsS3Storage", "AccessKey"),
    "DICOMKEEP_S3_SECRET_KEY": ("AwsS3Storage", "SecretKey"),
    "DICOMKEEP_SECRET_KEY": ("DicomKeep", "SecretKey"),
}


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
    ingest_workers: Annotated[int, Field(ge=1, le=1)] = 1
    """Ingest worker tasks; only 1 (run more ingest processes to receive in parallel).
    Default 1."""
    ops_port: Port = 0
    """Port of the health and metrics endpoints (/livez, /readyz, /metrics); 0 = none.
    Default 0."""
    blob_store: Literal["files", "s3"] | None = None
    """Where the blobs go: "files" (under StorageDirectory; in distributed mode a
    folder that every service shares, as `dicomkeep cluster start` uses) or "s3"
    (the AwsS3Storage section). Default: "files" all-in-one, "s3" distributed."""
    ops_host: str = "127.0.0.1"
    """Address the ops endpoints listen on; "0.0.0.0" for every interface (needed for
    probes from outside a container). Default "127.0.0.1"."""
    store_timeout: Annotated[float, Field(gt=0)] = 30.0
    """Seconds to wait for a store to complete. Default 30."""
    orphan_grace_period: Annotated[float, Field(ge=0)] = 600.0
    """Seconds before an unreferenced blob is collected. Default 600."""
    maximum_upload_size: Annotated[int, Field(ge=0)] = 2048
    """Largest `POST /instances` body accepted, in MB (like MaximumStorageSize); a
    larger one answers 413, before it is read when Content-Length declares it;
    0 = no limit. Default 2048."""
    secret_key: str = ""
    """Fernet key (44 url-safe base64 characters) that seals the passwords of peers
    set over REST in the index (dicomkeep.common.secrets). Default "": the
    SecretKeyFile, else all-in-one creates `<IndexDirectory>/dicomkeep-secret.key`
    and distributed refuses REST peers with a password. Environment:
    DICOMKEEP_SECRET_KEY."""
    secret_key_file: str = ""
    """File holding the SecretKey (e.g. a container secret). Default ""."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as "text" (`time LEVEL logger message`) or "json" (one JSON object
    per line, with the trace and span ids). `--log-format` overrides it.
    Default "text"."""
