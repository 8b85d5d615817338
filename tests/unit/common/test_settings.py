"""Settings: Orthanc defaults, file formats, environment overrides and validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dicomkeep.common.config_files import (
    ENV_SEGMENT_EXCEPTIONS,
    option_paths,
    strip_json_comments,
    substitute_variables,
)
from dicomkeep.common.settings import (
    ConfigError,
    PostgresSettings,
    S3Settings,
    Settings,
    env_name,
    load_settings,
    parse_settings,
    sample_configuration,
    settings_variables,
)
from pydantic import ValidationError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_json(tmp_path: Path, document: object, **environ: str) -> Settings:
    config = write(tmp_path / "orthanc.json", json.dumps(document))
    return load_settings(config, environ=environ)


# -- defaults ------------------------------------------------------------------


def test_defaults_are_orthancs() -> None:
    settings = load_settings(environ={})

    assert settings == Settings()
    assert settings.http_port == 8042
    assert settings.dicom_port == 4242
    assert settings.dicom_aet == "ORTHANC"
    assert settings.stable_age == 60
    assert settings.name == "MyOrthanc"
    assert settings.storage_directory == "OrthancStorage"
    assert settings.effective_index_directory == "OrthancStorage"
    assert settings.storage_compression is False
    assert settings.maximum_storage_size == 0
    assert settings.maximum_patient_count == 0
    assert settings.maximum_storage_mode == "Recycle"
    assert settings.check_revisions is False
    assert settings.store_md5_for_attachments is True
    assert settings.overwrite_instances is False
    assert settings.synchronous_cmove is True
    assert settings.remote_access_allowed is False
    assert settings.authentication_enabled is None
    assert settings.effective_authentication is False
    assert settings.registered_users == {}
    assert settings.user_metadata == {} and settings.user_content_type == {}
    assert settings.dicom_modalities == {} and settings.orthanc_peers == {}
    assert settings.concurrent_jobs == 2
    assert settings.jobs_history_size == 10
    assert settings.limit_find_results == 0 and settings.limit_find_instances == 0
    assert settings.case_sensitive_pn is False
    assert settings.http_describe_errors is True
    assert settings.dicom_check_called_aet is False
    assert settings.strict_aet_comparison is False
    assert (settings.dicom_scp_timeout, settings.dicom_scu_timeout) == (30, 10)
    assert settings.dicom_always_allow_echo and settings.dicom_always_allow_store
    assert not settings.dicom_always_allow_find and not settings.dicom_always_allow_move
    assert settings.accepted_transfer_syntaxes == ["1.2.840.10008.1.*"]
    assert settings.http_timeout == 60
    assert settings.https_verify_peers is True
    assert settings.https_ca_certificates == ""
    assert settings.dicomkeep.mode == "allinone"
    assert settings.dicomkeep.ops_port == 0
    assert settings.dicomkeep.orphan_grace_period == 600.0


def test_backend_defaults() -> None:
    settings = Settings()

    assert settings.postgresql.enable_index is False
    assert settings.postgresql.dsn() == "postgresql://postgres@127.0.0.1:5432/dicomkeep"
    assert settings.aws_s3_storage.bucket_name == "dicomkeep"
    assert settings.aws_s3_storage.virtual_addressing is False
    assert settings.rabbitmq.url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.rabbitmq.prefetch == 64
    assert settings.redis.url == "redis://127.0.0.1:6379/0"


def test_fields_are_set_by_name_or_alias_and_frozen() -> None:
    by_name = Settings(stable_age=5, dicom_aet="KEEP", synchronous_cmove=False)
    by_alias = Settings.model_validate(
        {"StableAge": 5, "DicomAet": "KEEP", "SynchronousCMove": False}
    )

    assert by_name == by_alias
    assert by_name.model_dump(by_alias=True)["SynchronousCMove"] is False
    with pytest.raises(ValidationError):
        by_name.stable_age = 6  # type: ignore[misc, unused-ignore]


def test_every_option_documents_its_default() -> None:
    sections = {"PostgreSQL", "AwsS3Storage", "RabbitMQ", "Redis", "DicomKeep"}
    for path, field in option_paths(Settings):
        assert field.description, path
        if path[-1] not in sections:
            assert "Default" in field.description, path


def test_orthanc_aliases() -> None:
    aliases = {field.alias for field in Settings.model_fields.values()}

    assert {
        "StableAge",
        "SynchronousCMove",
        "CaseSensitivePN",
        "HttpsCACertificates",
        "StoreMD5ForAttachments",
        "DicomAet",
        "UnknownSopClassAccepted",
        "RestApiWriteToFileSystemEnabled",
        "PostgreSQL",
        "AwsS3Storage",
        "RabbitMQ",
        "Redis",
        "DicomKeep",
    } <= aliases


# -- JSON text -------------------------------------------------------------------


def test_comments_are_removed_outside_strings(tmp_path: Path) -> None:
    config = write(
        tmp_path / "orthanc.json",
        """
        // a line comment with "quotes
        {
          /* block
             comment */ "Name" : "http://example.org//x /* kept */", // trailing
          "HttpsCACertificates" : "a\\"//b",
          "RegisteredUsers" : { "alice" : "pw//1" , },
          "AcceptedTransferSyntaxes" : [ "1.2.840.10008.1.2", ],
        }
        """,
    )

    settings = load_settings(config, environ={})

    assert settings.name == "http://example.org//x /* kept */"
    assert settings.https_ca_certificates == 'a"//b'
    assert settings.registered_users == {"alice": "pw//1"}
    assert settings.accepted_transfer_syntaxes == ["1.2.840.10008.1.2"]


def test_block_comments_keep_line_numbers_in_errors(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.json", '{\n/* one\ntwo */\n"StableAge" : oops\n}')

    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 4"):
        load_settings(config, environ={})


def test_strip_json_comments_is_exact() -> None:
    assert strip_json_comments('{"a": 1} // c') == '{"a": 1}  '
    assert json.loads(strip_json_comments('["//", "/*", 1 /* x */, ]')) == ["//", "/*", 1]


def test_variables_are_substituted_before_parsing(tmp_path: Path) -> None:
    config = write(
        tmp_path / "orthanc.json",
        """{
          "DicomAet" : "${AET}",
          "HttpPort" : ${HTTP_PORT:-8043},
          "Name" : "${UNSET_NAME}",
          "StorageDirectory" : "${EMPTY:-fallback}",
          // ${COMMENTED} is harmless
          "PostgreSQL" : { "Password" : "${PG_PASSWORD:-secret}" }
        }""",
    )

    settings = load_settings(config, environ={"AET": "KEEPER", "EMPTY": ""})

    assert settings.dicom_aet == "KEEPER"
    assert settings.http_port == 8043
    assert settings.name == ""
    assert settings.storage_directory == ""  # set but empty: Orthanc keeps it empty
    assert settings.postgresql.password == "secret"


def test_substitute_variables_uses_the_value_when_set() -> None:
    assert substitute_variables("${A:-x}/${B:-y}", {"A": "1"}) == "1/y"


def test_invalid_documents_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Inexistent"):
        load_settings(tmp_path / "missing.json", environ={})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_settings(write(tmp_path / "list.json", "[1, 2]"), environ={})
    with pytest.raises(ConfigError, match="ORTHANC_JSON"):
        load_settings(environ={"ORTHANC_JSON": "{not json"})


# -- folders ---------------------------------------------------------------------


def test_folder_loads_every_json_file(tmp_path: Path) -> None:
    write(tmp_path / "a.json", '{ "StableAge" : 5 } // one option')
    write(tmp_path / "b.JSON", '{ "PostgreSQL" : { "Host" : "db" } }')
    write(tmp_path / "notes.txt", "not a configuration")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.json", '{ "HttpPort" : 1 }')

    settings = load_settings(tmp_path, environ={})

    assert settings.stable_age == 5
    assert settings.postgresql.host == "db"
    assert settings.http_port == 8042  # not recursive


def test_folder_with_a_key_in_two_files_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.json", '{ "PostgreSQL" : { "Host" : "db" } }')
    write(tmp_path / "b.json", '{ "PostgreSQL" : { "Port" : 5433 } }')

    with pytest.raises(ConfigError, match="defined in 2 different configuration files"):
        load_settings(tmp_path, environ={})


# -- environment -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (("StableAge",), "ORTHANC__STABLE_AGE"),
        (("DicomAet",), "ORTHANC__DICOM_AET"),
        (("SynchronousCMove",), "ORTHANC__SYNCHRONOUS_C_MOVE"),
        (("CaseSensitivePN",), "ORTHANC__CASE_SENSITIVE_PN"),
        (("HttpsCACertificates",), "ORTHANC__HTTPS_CA_CERTIFICATES"),
        (("StoreMD5ForAttachments",), "ORTHANC__STORE_MD5_FOR_ATTACHMENTS"),
        (("DicomWeb", "StudiesMetadata"), "ORTHANC__DICOM_WEB__STUDIES_METADATA"),
        (("PostgreSQL", "Host"), "ORTHANC__POSTGRESQL__HOST"),
        (("AwsS3Storage", "BucketName"), "ORTHANC__AWS_S3_STORAGE__BUCKET_NAME"),
        (("RabbitMQ", "Url"), "ORTHANC__RABBITMQ__URL"),
        (("DicomKeep", "OpsPort"), "ORTHANC__DICOM_KEEP__OPS_PORT"),
    ],
)
def test_env_name(path: tuple[str, ...], name: str) -> None:
    assert env_name(path) == name


def test_env_name_needs_a_path() -> None:
    with pytest.raises(ValueError):
        env_name(())


def test_env_names_of_known_options_are_unique_and_decodable() -> None:
    variables = settings_variables()
    paths = list(option_paths(Settings))

    assert len(variables) == len(paths)  # no two options share a variable
    for name, (path, _) in variables.items():
        # orthancteam's decoding (capitalise each word) finds the option back,
        # except for the acronyms it lists as non-standard, as we do.
        for env_segment, segment in zip(name[len("ORTHANC__") :].split("__"), path, strict=True):
            if segment in ENV_SEGMENT_EXCEPTIONS:
                continue
            decoded = "".join(word[0] + word[1:].lower() for word in env_segment.split("_"))
            assert decoded == segment


def test_orthanc_variables_override_the_file(tmp_path: Path) -> None:
    settings = load_json(
        tmp_path,
        {"StableAge": 30, "PostgreSQL": {"Host": "file-host", "Port": 5433}},
        ORTHANC__STABLE_AGE="5",
        ORTHANC__POSTGRESQL__HOST="env-host",
        ORTHANC__CASE_SENSITIVE_PN="true",
        ORTHANC__STORE_MD5_FOR_ATTACHMENTS="false",
        ORTHANC__SYNCHRONOUS_C_MOVE="false",
        ORTHANC__REGISTERED_USERS='{"alice": "pw"}',
        ORTHANC__DICOM_MODALITIES='{"pacs": ["PACS", "10.0.0.1", 104]}',
        ORTHANC__DICOM_KEEP__MODE="distributed",
        ORTHANC__UNKNOWN_OPTION="ignored",
    )

    assert settings.stable_age == 5
    assert settings.postgresql.host == "env-host"
    assert settings.postgresql.port == 5433  # nested objects are merged
    assert settings.case_sensitive_pn is True
    assert settings.store_md5_for_attachments is False
    assert settings.synchronous_cmove is False
    assert settings.registered_users == {"alice": "pw"}
    assert settings.dicom_modalities == {"pacs": ["PACS", "10.0.0.1", 104]}
    assert settings.dicomkeep.mode == "distributed"


def test_string_options_keep_numeric_text() -> None:
    settings = load_settings(
        environ={"ORTHANC__POSTGRESQL__PASSWORD": "123456", "ORTHANC__DICOM_AET": "1234"}
    )

    assert settings.postgresql.password == "123456"
    assert settings.dicom_aet == "1234"


def test_longer_variable_paths_win_over_sections() -> None:
    settings = load_settings(
        environ={
            "ORTHANC__POSTGRESQL__HOST": "precise",
            "ORTHANC__POSTGRESQL": '{"Host": "whole", "Port": 6000}',
        }
    )

    assert (settings.postgresql.host, settings.postgresql.port) == ("precise", 6000)


def test_orthanc_json_is_deep_merged_between_file_and_variables(tmp_path: Path) -> None:
    settings = load_json(
        tmp_path,
        {"HttpPort": 8000, "PostgreSQL": {"Host": "file-host", "Port": 5433}},
        ORTHANC_JSON='{ "PostgreSQL": {"Host": "json-host"}, /* c */ "HttpPort": 8001, '
        '"DicomPort": 4000 }',
        ORTHANC__HTTP_PORT="8002",
    )

    assert settings.postgresql.host == "json-host"
    assert settings.postgresql.port == 5433
    assert settings.dicom_port == 4000
    assert settings.http_port == 8002


def test_dicomkeep_variables_come_last(tmp_path: Path) -> None:
    settings = load_json(
        tmp_path,
        {"RabbitMQ": {"Url": "amqp://file/"}},
        ORTHANC__RABBITMQ__URL="amqp://orthanc-var/",
        DICOMKEEP_POSTGRES_DSN="postgresql://u:p@db:5432/keep",
        DICOMKEEP_AMQP_URL="amqp://guest:guest@mq:5672/",
        DICOMKEEP_REDIS_URL="redis://cache:6379/1",
        DICOMKEEP_S3_ENDPOINT="http://127.0.0.1:9000",
        DICOMKEEP_S3_BUCKET="bucket",
        DICOMKEEP_S3_ACCESS_KEY="access",
        DICOMKEEP_S3_SECRET_KEY="12345",
    )

    assert settings.postgresql.connection_uri == "postgresql://u:p@db:5432/keep"
    assert settings.postgresql.dsn() == "postgresql://u:p@db:5432/keep"
    assert settings.rabbitmq.url == "amqp://guest:guest@mq:5672/"
    assert settings.redis.url == "redis://cache:6379/1"
    s3 = settings.aws_s3_storage
    assert (s3.endpoint, s3.bucket_name, s3.access_key, s3.secret_key) == (
        "http://127.0.0.1:9000",
        "bucket",
        "access",
        "12345",
    )
    assert s3.endpoint_address() == ("127.0.0.1:9000", False)


def test_secret_files(tmp_path: Path) -> None:
    write(tmp_path / "pg", "s3cr3t\n")
    write(tmp_path / "dsn", "postgresql://x@db/keep")

    settings = load_settings(
        environ={
            "ORTHANC__POSTGRESQL__PASSWORD_SECRET": "pg",
            "DICOMKEEP_POSTGRES_DSN_SECRET": str(tmp_path / "dsn"),
            "UNRELATED_SECRET": "not-a-file",
        },
        secrets_dir=tmp_path,
    )

    assert settings.postgresql.password == "s3cr3t"
    assert settings.postgresql.connection_uri == "postgresql://x@db/keep"
    with pytest.raises(ConfigError, match="ORTHANC__HTTP_PORT_SECRET"):
        load_settings(environ={"ORTHANC__HTTP_PORT_SECRET": "absent"}, secrets_dir=tmp_path)


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHANC__HTTP_PORT", "9042")

    assert load_settings().http_port == 9042


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "where", "found"),
    [
        ({"StableAge": "60"}, "StableAge", "a string"),
        ({"DicomPort": True}, "DicomPort", "a boolean"),
        ({"HttpPort": 8042.0}, "HttpPort", "a number"),
        ({"RemoteAccessAllowed": 1}, "RemoteAccessAllowed", "an integer"),
        ({"DicomAet": 5}, "DicomAet", "an integer"),
        ({"RegisteredUsers": ["alice"]}, "RegisteredUsers", "an array"),
        ({"AuthenticationEnabled": "true"}, "AuthenticationEnabled", "a string"),
        ({"PostgreSQL": {"Port": "5432"}}, "PostgreSQL.Port", "a string"),
        ({"UserMetadata": {"Sample": True}}, "UserMetadata.Sample", "a boolean"),
    ],
)
def test_json_types_are_strict(
    tmp_path: Path, document: dict[str, object], where: str, found: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_json(tmp_path, document)

    assert f'"{where}"' in str(raised.value)
    assert f"got {found}" in str(raised.value)


def test_variable_values_are_type_checked() -> None:
    with pytest.raises(ConfigError, match="StableAge"):
        load_settings(environ={"ORTHANC__STABLE_AGE": "soon"})


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"UserMetadata": {"Sample": 1000}}, "outside 1024..65535"),
        ({"UserMetadata": {"Sample": 65536}}, "outside 1024..65535"),
        ({"UserMetadata": {"A": 1024, "B": 1024}}, 'used by both "A" and "B"'),
        ({"UserMetadata": {"2000": 2000}}, "cannot be an integer"),
        ({"UserMetadata": {"ReceptionDate": 2000}}, "reserved"),
        ({"UserContentType": {"pdf": 1023}}, "outside 1024..65535"),
        ({"UserContentType": {"a": 1025, "b": [1025, "application/pdf"]}}, "used by both"),
        ({"UserContentType": {"1025": 1025}}, "cannot be an integer"),
        ({"UserContentType": {"dicom": 1025}}, "reserved"),
        ({"UserContentType": {"pdf": ["application/pdf", 1025]}}, "expected a type number"),
        ({"MaximumStorageMode": "Delete"}, "MaximumStorageMode"),
        ({"DicomAet": "A" * 17}, "DicomAet"),
        ({"HttpPort": 70000}, "HttpPort"),
        ({"MaximumStorageSize": -1}, "MaximumStorageSize"),
        ({"DicomKeep": {"Mode": "cluster"}}, "DicomKeep.Mode"),
        ({"DefaultEncoding": "Klingon"}, "DefaultEncoding"),
        ({"DicomTlsEnabled": True}, '"DicomTlsEnabled" is true but "DicomTlsCertificate" is not set'),
        ({"DicomTlsCiphersAccepted": ["RC4"]}, "DicomTlsCiphersAccepted"),
        ({"DicomTlsMinimumProtocolVersion": 1}, "SSLv3"),
        (
            {"CheckRevisions": True, "StoreMD5ForAttachments": False},
            '"CheckRevisions" is true but "StoreMD5ForAttachments" is false',
        ),
    ],
)
def test_invalid_options_are_refused(
    tmp_path: Path, document: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_json(tmp_path, document)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_settings({"StableAge": None})


def test_valid_user_keys() -> None:
    settings = parse_settings(
        {
            "UserMetadata": {"Sample": 1024, "Other": 65535},
            "UserContentType": {"raw": 1026, "samplePdf": [1025, "application/pdf"]},
            "MaximumStorageMode": "Reject",
            "CheckRevisions": True,
        }
    )

    assert settings.user_metadata == {"Sample": 1024, "Other": 65535}
    assert settings.user_attachment_types == {
        "raw": (1026, "application/octet-stream"),
        "samplePdf": (1025, "application/pdf"),
    }
    assert settings.maximum_storage_mode == "Reject"
    assert settings.check_revisions is True


@pytest.mark.parametrize("age", [0, -5])
def test_stable_age_not_positive_means_60(age: int) -> None:
    assert parse_settings({"StableAge": age}).stable_age == 60


def test_authentication_follows_remote_access_unless_set() -> None:
    assert parse_settings({"RemoteAccessAllowed": True}).effective_authentication is True
    assert (
        parse_settings(
            {"RemoteAccessAllowed": True, "AuthenticationEnabled": False}
        ).effective_authentication
        is False
    )
    assert parse_settings({"AuthenticationEnabled": True}).effective_authentication is True


def test_index_directory_defaults_to_storage_directory() -> None:
    assert parse_settings({"StorageDirectory": "/data"}).effective_index_directory == "/data"
    settings = parse_settings({"StorageDirectory": "/data", "IndexDirectory": "/ssd"})
    assert settings.effective_index_directory == "/ssd"


# -- backends ------------------------------------------------------------------------


def test_postgres_dsn_from_parts() -> None:
    postgres = PostgresSettings(
        host="::1", port=5433, database="my db", username="us@r", password="p:w/d", enable_ssl=True
    )

    assert postgres.dsn() == "postgresql://us%40r:p%3Aw%2Fd@[::1]:5433/my%20db?sslmode=require"
    assert PostgresSettings(connection_uri="postgresql:///x").dsn() == "postgresql:///x"


def test_s3_endpoint_address() -> None:
    assert S3Settings(region="eu-west-3").endpoint_address() == (
        "s3.eu-west-3.amazonaws.com",
        True,
    )
    assert S3Settings(endpoint="https://s3.example.org").endpoint_address() == (
        "s3.example.org",
        True,
    )
    assert S3Settings(endpoint="minio:9000").endpoint_address() == ("minio:9000", True)


# -- compatibility -----------------------------------------------------------------

ORTHANC_1_12_LIKE = """{
  /**
   * General configuration of Orthanc
   **/

  // The logical name of this instance of Orthanc, shown at "/system".
  "Name" : "MyOrthanc",
  "StorageDirectory" : "OrthancStorage",
  "IndexDirectory" : "OrthancStorage",
  // "TemporaryDirectory" : "/tmp/Orthanc/",
  "StorageCompression" : false,
  "MaximumStorageSize" : 0,
  "MaximumPatientCount" : 0,
  "MaximumStorageMode" : "Recycle",
  "MaximumStorageCacheSize" : 128,
  "LuaScripts" : [
  ],
  "LuaHeartBeatPeriod" : 0,
  "Plugins" : [
  ],
  "ConcurrentJobs" : 2,
  "JobsEngineThreadsCount" : {
    "ResourceModification": 1
  },

  /**
   * Configuration of the HTTP server
   **/
  "HttpServerEnabled" : true,
  "OrthancExplorerEnabled" : true,
  "HttpPort" : 8042,
  "HttpDescribeErrors" : true,
  "HttpCompressionEnabled" : false,
  "WebDavEnabled" : true,
  "WebDavDeleteAllowed" : false,
  "WebDavUploadAllowed" : true,

  /**
   * Configuration of the DICOM server
   **/
  "DicomServerEnabled" : true,
  "DicomAet" : "ORTHANC",
  "DicomCheckCalledAet" : false,
  "DicomPort" : 4242,
  "DefaultEncoding" : "Latin1",
  "AcceptedTransferSyntaxes" : [ "1.2.840.10008.1.*" ],
  "DeflatedTransferSyntaxAccepted"     : true,
  "JpegTransferSyntaxAccepted"         : true,
  "Mpeg4TransferSyntaxAccepted"        : true,  // New in Orthanc 1.6.0
  "UnknownSopClassAccepted"            : false,
  "DicomScpTimeout" : 30,

  /**
   * Security-related options for the HTTP server
   **/
  "RemoteAccessAllowed" : false,
  "SslEnabled" : false,
  "SslCertificate" : "certificate.pem",
  "SslMinimumProtocolVersion" : 4,
  "SslVerifyPeers" : false,
  "SslTrustedClientCertificates" : "trustedClientCertificates.pem",
  /**
     "AuthenticationEnabled" : false,
   **/
  "RegisteredUsers" : {
    // "alice" : "alicePassword"
  },

  /**
   * Network topology
   **/
  "DicomTlsEnabled" : false,
  "DicomTlsRemoteCertificateRequired" : true,
  "DicomModalities" : {
    // "sample" : [ "STORESCP", "127.0.0.1", 2000 ]
    //"untrusted" : {
    //  "AET" : "ORTHANC",
    //  "Port" : 104
    //}
  },
  "DicomModalitiesInDatabase" : false,
  "DicomAlwaysAllowEcho" : true,
  "DicomAlwaysAllowStore" : true,
  "DicomAlwaysAllowFind" : false,
  "DicomAlwaysAllowFindWorklist" : false,
  "DicomAlwaysAllowGet" : false,
  "DicomAlwaysAllowMove" : false,
  "DicomCheckModalityHost" : false,
  "DicomScuTimeout" : 10,
  "DicomScuPreferredTransferSyntax" : "1.2.840.10008.1.2.1",
  "DicomThreadsCount" : 4,
  "OrthancPeers" : {
    // "peer"  : [ "http://127.0.0.1:8043/", "alice", "alicePassword" ]
  },
  "OrthancPeersInDatabase" : false,
  "HttpProxy" : "",
  "HttpVerbose" : false,
  "HttpTimeout" : 60,
  // Reference: http://curl.haxx.se/docs/sslcerts.html
  "HttpsVerifyPeers" : true,
  "HttpsCACertificates" : "",

  /**
   * Advanced options
   **/
  "UserMetadata" : {
    // "Sample" : 1024
  },
  "UserContentType" : {
    // "sample" : 1024
    // "sample2" : [ 1025, "application/pdf" ]
  },
  "StableAge" : 60,
  "StrictAetComparison" : false,
  "StoreMD5ForAttachments" : true,
  "LimitFindResults" : 0,
  "LimitFindInstances" : 0,
  "LogExportedResources" : false,
  "KeepAlive" : true,
  "KeepAliveTimeout" : 1,
  "TcpNoDelay" : true,
  "HttpThreadsCount" : 50,
  "StoreDicom" : true,
  "DicomAssociationCloseDelay" : 5,
  "QueryRetrieveSize" : 100,
  "CaseSensitivePN" : false,
  "LoadPrivateDictionary" : true,
  "Dictionary" : {
    // "0014,1020" : [ "DA", "ValidationExpiryDate", 1, 1 ]
  },
  "SynchronousCMove" : true,
  "JobsHistorySize" : 10,
  "SaveJobs" : true,
  "OverwriteInstances" : false,
  "MediaArchiveSize" : 1,
  "StorageAccessOnFind" : "Always",
  "MetricsEnabled" : true,
  "ExecuteLuaEnabled" : false,
  "RestApiWriteToFileSystemEnabled": false,
  "HttpRequestTimeout" : 30,
  "DefaultPrivateCreator" : "",
  "CheckRevisions" : false,
  "SynchronousZipStream" : true,
  "ZipLoaderThreads": 0,
  "Warnings" : {
    "W001_TagsBeingReadFromStorage": true
  },
  "ExtraMainDicomTags" : {
    "Instance" : [],
    "Series" : [],
    "Study": [],
    "Patient": []
  },
  "MallocArenaMax" : 5,
  "DeidentifyLogs" : true,
  "DeidentifyLogsDicomVersion" : "2023b",
  "DicomWeb" : { "Enable" : true, "Root" : "/dicom-web/" }
}
"""


def test_orthanc_default_configuration_loads_unchanged(tmp_path: Path) -> None:
    config = write(tmp_path / "orthanc.json", ORTHANC_1_12_LIKE)

    settings = load_settings(config, environ={})

    assert settings == Settings(
        index_directory="OrthancStorage",
        extra_main_dicom_tags={"Instance": [], "Series": [], "Study": [], "Patient": []},
    )
    assert not hasattr(settings, "lua_scripts")


def test_sample_configuration_round_trips(tmp_path: Path) -> None:
    sample = sample_configuration()
    config = write(tmp_path / "sample.json", sample)

    assert load_settings(config, environ={}) == Settings()
    uncommented = [line for line in sample.splitlines() if not line.lstrip().startswith("//")]
    json.loads("\n".join(uncommented))  # strict JSON once the comment lines are gone
    for path, _ in option_paths(Settings):
        assert json.dumps(path[-1]) in sample, path
    assert '// "AuthenticationEnabled" : true' in sample
    assert "// REST API port. Default 8042." in sample
