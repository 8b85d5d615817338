"""The one settings model: every area's options plus the backend sections.

Frozen; constructed by name (`Settings(stable_age=5)`) or by Orthanc's names.
"""

from __future__ import annotations

from dicomkeep.common.settings.backends import (
    DicomKeepSettings,
    PostgresSettings,
    RabbitSettings,
    RedisSettings,
    S3Settings,
)
from dicomkeep.common.settings.base import MODEL_CONFIG as _MODEL_CONFIG
from dicomkeep.common.settings.core import CoreOptions
from dicomkeep.common.settings.dicom import DicomOptions
from dicomkeep.common.settings.http import HttpOptions


class Settings(HttpOptions, DicomOptions, CoreOptions):
    """All options. Defaults are Orthanc 1.12's; JSON keys are Orthanc's names.

    Frozen; constructed by name (`Settings(stable_age=5)`) or by alias. Raises
    pydantic's ValidationError when built directly; `parse_settings` and
    `load_settings` raise ConfigError instead.
    """

    model_config = _MODEL_CONFIG

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
