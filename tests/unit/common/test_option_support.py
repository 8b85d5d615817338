"""Honest configuration: every option of the settings model is read somewhere in the
product, or refused at start, or logged once as ignored (issue 11)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from dicomkeep.common.option_support import IGNORED_OPTIONS, check_options, ignored_options
from dicomkeep.common.settings import ConfigError, Settings, parse_settings
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[3]
#: The settings package (its own properties and validators) and the start-up check.
EXCLUDED = ("settings", "option_support.py")

#: Fields read through a property or method of the settings model; the right
#: side must itself be read in the product.
READ_THROUGH = {
    ("Settings", "index_directory"): "effective_index_directory",
    ("Settings", "authentication_enabled"): "effective_authentication",
    ("Settings", "user_content_type"): "user_attachment_types",
    ("PostgresSettings", "host"): "dsn",
    ("PostgresSettings", "port"): "dsn",
    ("PostgresSettings", "database"): "dsn",
    ("PostgresSettings", "username"): "dsn",
    ("PostgresSettings", "password"): "dsn",
    ("PostgresSettings", "enable_ssl"): "dsn",
    ("PostgresSettings", "connection_uri"): "dsn",
    ("S3Settings", "endpoint"): "endpoint_address",
    ("S3Settings", "region"): "endpoint_address",
}
#: Options whose only reader is the start-up check (`option_support`): a value
#: DicomKeep cannot honour is refused there.
REFUSED = {
    "execute_lua_enabled", "extra_main_dicom_tags",
    "virtual_addressing", "enable_index", "dicom_scu_preferred_transfer_syntax",
}  # fmt: skip
#: Options whose model accepts only the value DicomKeep implements (any other is a
#: validation error at load).
SINGLE_VALUE = {"ingest_workers", "dicom_tls_ciphers_accepted"}


def _models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [Settings]
    for field in Settings.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found.append(field.annotation)
    return found


def _attributes_read() -> set[str]:
    """Every `x.name` attribute (or name string) in the product's sources, the settings
    package and the start-up check aside."""
    names: set[str] = set()
    for folder in (ROOT / "libs", ROOT / "services"):
        for path in folder.rglob("*.py"):
            relative = path.relative_to(ROOT / "libs" / "common" / "src" / "dicomkeep" / "common") if "common" in path.parts and "libs" in path.parts else None
            if relative is not None and relative.parts[0] in EXCLUDED:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    names.add(node.attr)
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    names.add(node.value)  # read by name: getattr(settings, "dicom_...")
    return names


def _ignored_fields() -> set[str]:
    by_alias = {field.alias: name for name, field in Settings.model_fields.items()}
    return {by_alias[option] for option in IGNORED_OPTIONS}


def test_every_option_is_read_refused_or_ignored() -> None:
    read = _attributes_read()
    ignored = _ignored_fields()
    unaccounted = []
    for model in _models():
        for name in model.model_fields:
            through = READ_THROUGH.get((model.__name__, name))
            if name in read or (through and through in read):
                continue
            if name in REFUSED | SINGLE_VALUE | ignored:
                continue
            unaccounted.append(f"{model.__name__}.{name}")
    assert unaccounted == []


def test_accounting_lists_name_real_options() -> None:
    names = {name for model in _models() for name in model.model_fields}
    assert REFUSED <= names
    assert SINGLE_VALUE <= names
    assert set(IGNORED_OPTIONS) <= {f.alias for f in Settings.model_fields.values()}


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"ExecuteLuaEnabled": True}, "ExecuteLuaEnabled"),
        ({"ExtraMainDicomTags": {"Study": ["0008,1030"]}}, "ExtraMainDicomTags"),
        ({"AwsS3Storage": {"VirtualAddressing": True}}, "AwsS3Storage.VirtualAddressing"),
        ({"PostgreSQL": {"EnableIndex": True}}, "PostgreSQL.EnableIndex"),
        ({"HttpServerEnabled": False, "DicomKeep": {"Mode": "distributed"}}, "HttpServerEnabled"),
        ({"DicomScuPreferredTransferSyntax": "1.2.840.10008.1.2"}, "DicomScuPreferredTransferSyntax"),
        (
            {"DicomModalities": {"pacs": {"AET": "PACS", "Host": "h", "Port": 104, "UseDicomTls": True}}},
            "DicomModalities",
        ),
    ],
)
def test_unsupported_values_are_refused_naming_the_option(config: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=f'"{named}"'):
        check_options(parse_settings(config))


def test_ingest_workers_accepts_only_one() -> None:
    with pytest.raises(ConfigError, match="IngestWorkers"):
        parse_settings({"DicomKeep": {"IngestWorkers": 2}})


def test_supported_values_start() -> None:
    for config in (
        {"ExecuteLuaEnabled": False, "LogExportedResources": True, "HttpServerEnabled": False},
        {"DicomScuPreferredTransferSyntax": "1.2.840.10008.1.2.1", "DicomAssociationCloseDelay": 0},
        {"PostgreSQL": {"EnableIndex": True}, "DicomKeep": {"Mode": "distributed"}},
    ):
        settings = parse_settings(config)
        assert check_options(settings) is settings


def test_ignored_options_are_logged_once_only_when_set(caplog: pytest.LogCaptureFixture) -> None:
    assert ignored_options(Settings()) == []
    settings = parse_settings({"HttpThreadsCount": 8, "WebDavEnabled": True, "HttpPort": 1})
    with caplog.at_level(logging.WARNING, logger="dicomkeep.common.option_support"):
        check_options(settings)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith('"HttpThreadsCount" is ignored: ')
    assert messages[1].startswith('"WebDavEnabled" is ignored: ')
