"""DICOM TLS on the SCP, with Orthanc's options (1.9+): `DicomTlsEnabled`,
`DicomTlsCertificate`, `DicomTlsPrivateKey`, `DicomTlsTrustedCertificates`,
`DicomTlsRemoteCertificateRequired`, `DicomTlsMinimumProtocolVersion`."""

from __future__ import annotations

import ssl

from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.settings import Settings

#: DicomTlsMinimumProtocolVersion -> the TLS version (0 = Orthanc's default, TLS 1.2).
MINIMUM_VERSIONS = {
    0: ssl.TLSVersion.TLSv1_2,
    2: ssl.TLSVersion.TLSv1,
    3: ssl.TLSVersion.TLSv1_1,
    4: ssl.TLSVersion.TLSv1_2,
    5: ssl.TLSVersion.TLSv1_3,
}


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """Return the SCP's TLS context, or None without DicomTlsEnabled.

    Raises OrthancError (naming the option) when a certificate file cannot be read.
    """
    if not settings.dicom_tls_enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSIONS[settings.dicom_tls_minimum_protocol_version]
    option = "DicomTlsCertificate"
    try:
        context.load_cert_chain(settings.dicom_tls_certificate, settings.dicom_tls_private_key)
        option = "DicomTlsTrustedCertificates"
        context.load_verify_locations(settings.dicom_tls_trusted_certificates)
    except (OSError, ssl.SSLError) as error:
        raise OrthancError(
            ErrorCode.BAD_FILE_FORMAT, f'Cannot use "{option}" (or its key): {error}'
        ) from error
    context.verify_mode = (
        ssl.CERT_REQUIRED if settings.dicom_tls_remote_certificate_required else ssl.CERT_OPTIONAL
    )
    return context
