"""Orthanc's names of the DICOM character encodings (`DefaultEncoding`).

Its own module so that both the settings (which check `DefaultEncoding` at
start) and the run-time SCP options (`/tools/default-encoding`) use it without
importing each other.
"""

from __future__ import annotations

from dicomkeep.common.errors import ErrorCode, OrthancError

#: Orthanc's `Encoding` names (EnumerationToString), keyed by their upper case.
ENCODINGS = {
    name.upper(): name
    for name in (
        "Ascii", "Utf8", "Latin1", "Latin2", "Latin3", "Latin4", "Latin5", "Cyrillic",
        "Windows1251", "Arabic", "Greek", "Hebrew", "Thai", "Japanese", "Chinese",
        "Korean", "JapaneseKanji", "SimplifiedChinese",
    )
}


def parse_encoding(text: str) -> str:
    """Return Orthanc's name of an encoding (case-insensitive); 400 ParameterOutOfRange if unknown."""
    name = ENCODINGS.get(text.strip().upper())
    if name is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown encoding: {text.strip()}")
    return name
