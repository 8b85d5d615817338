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


#: Orthanc's `DefaultEncoding` names -> SpecificCharacterSet (Orthanc's
#: GetDicomSpecificCharacterSet).
CHARACTER_SETS = {
    "ascii": "ISO_IR 6",
    "utf8": "ISO_IR 192",
    "latin1": "ISO_IR 100",
    "latin2": "ISO_IR 101",
    "latin3": "ISO_IR 109",
    "latin4": "ISO_IR 110",
    "latin5": "ISO_IR 148",
    "cyrillic": "ISO_IR 144",
    "windows1251": "ISO_IR 144",
    "arabic": "ISO_IR 127",
    "greek": "ISO_IR 126",
    "hebrew": "ISO_IR 138",
    "thai": "ISO_IR 166",
    "japanese": "ISO_IR 13",
    "chinese": "GB18030",
    "korean": "ISO 2022 IR 149",
    "japanesekanji": "ISO 2022 IR 87",
    "simplifiedchinese": "ISO 2022 IR 58",
}


def character_set(default_encoding: str) -> str:
    """Return the SpecificCharacterSet of C-FIND queries and answers for `DefaultEncoding` (Latin1 if unknown)."""
    return CHARACTER_SETS.get(default_encoding.strip().lower(), "ISO_IR 100")
