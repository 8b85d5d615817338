"""DICOM networking options: the SCP, its access rules, our SCU, modalities (§11).

`DicomModalities` is kept here as Orthanc's JSON (array or object form); it is
parsed in one place, `dicomkeep.common.modalities`.
"""

from __future__ import annotations

from typing import Annotated, Any

from dicomkeep.common.encodings import parse_encoding
from dicomkeep.common.settings.base import MODEL_CONFIG as _MODEL_CONFIG
from dicomkeep.common.settings.base import Count, Port, Positive
from pydantic import BaseModel, Field, field_validator, model_validator


class DicomOptions(BaseModel):
    """The DICOM SCP and SCU, and the remote modalities."""

    model_config = _MODEL_CONFIG

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

    # -- DICOM TLS on the SCP (Orthanc 1.9+; ingest/tls.py) --
    dicom_tls_enabled: bool = False
    """DICOM TLS on the SCP (Orthanc 1.9+). Default false."""
    dicom_tls_certificate: str = ""
    """PEM certificate of the SCP (required with DicomTlsEnabled). Default ""."""
    dicom_tls_private_key: str = ""
    """PEM private key of that certificate (required with DicomTlsEnabled). Default ""."""
    dicom_tls_trusted_certificates: str = ""
    """PEM bundle of the certificates trusted for callers (required with
    DicomTlsEnabled). Default ""."""
    dicom_tls_remote_certificate_required: bool = True
    """Callers must present a trusted certificate. Default true."""
    dicom_tls_minimum_protocol_version: Annotated[int, Field(ge=0, le=5)] = 0
    """Minimum TLS version: 0 = TLS 1.2 (the default), 2 = TLS 1.0, 3 = TLS 1.1,
    4 = TLS 1.2, 5 = TLS 1.3; 1 (SSLv3) is refused. Default 0."""
    dicom_tls_ciphers_accepted: list[str] = []
    """Cipher suites; only [] (the TLS library's secure defaults) is accepted. Default []."""

    @field_validator("default_encoding")
    @classmethod
    def _default_encoding(cls, value: str) -> str:
        try:
            return parse_encoding(value)
        except Exception:
            raise ValueError(f"unknown encoding {value!r} (Orthanc's names: Latin1, Utf8, ...)") from None

    @model_validator(mode="after")
    def _dicom_tls(self) -> DicomOptions:
        if self.dicom_tls_ciphers_accepted:
            raise ValueError('"DicomTlsCiphersAccepted" is not supported: leave it empty')
        if self.dicom_tls_minimum_protocol_version == 1:
            raise ValueError('"DicomTlsMinimumProtocolVersion" 1 (SSLv3) is not supported')
        if self.dicom_tls_enabled:
            for name in ("certificate", "private_key", "trusted_certificates"):
                if not getattr(self, f"dicom_tls_{name}"):
                    option = "DicomTls" + "".join(p.capitalize() for p in name.split("_"))
                    raise ValueError(f'"DicomTlsEnabled" is true but "{option}" is not set')
        return self
