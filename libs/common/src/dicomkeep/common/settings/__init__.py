"""DicomKeep's settings: Orthanc's options under Orthanc's names, plus backend sections.

One frozen pydantic model, `Settings`, assembled from one module per area:
`core` (storage, index, jobs, search), `http` (REST server, security, peers),
`dicom` (SCP, SCU, modalities), `backends` (`PostgreSQL`, `AwsS3Storage`,
`RabbitMQ`, `Redis`, `DicomKeep`); `base` holds the naming rule and value types
they share, `loading` the sources (files, `ORTHANC_JSON`, variables, secrets).
Each configuration section is parsed once: the model validates types, and the
structured options (`DicomModalities`, `OrthancPeers`) each have one parser in
the module that uses them (`dicomkeep.common.modalities`, `dicomkeep.common.peers`).
"""

from dicomkeep.common.config_files import ConfigError, env_name
from dicomkeep.common.settings.backends import (
    DIRECT_VARIABLES,
    DicomKeepSettings,
    PostgresSettings,
    RabbitSettings,
    RedisSettings,
    S3Settings,
)
from dicomkeep.common.settings.base import orthanc_alias
from dicomkeep.common.settings.core import (
    CORE_CONTENT_TYPES,
    CORE_METADATA,
    DEFAULT_MIME,
    USER_KEY_RANGE,
)
from dicomkeep.common.settings.loading import (
    load_settings,
    parse_settings,
    sample_configuration,
    settings_variables,
)
from dicomkeep.common.settings.model import Settings

__all__ = [
    "CORE_CONTENT_TYPES",
    "CORE_METADATA",
    "DEFAULT_MIME",
    "DIRECT_VARIABLES",
    "USER_KEY_RANGE",
    "ConfigError",
    "DicomKeepSettings",
    "PostgresSettings",
    "RabbitSettings",
    "RedisSettings",
    "S3Settings",
    "Settings",
    "env_name",
    "load_settings",
    "orthanc_alias",
    "parse_settings",
    "sample_configuration",
    "settings_variables",
]
