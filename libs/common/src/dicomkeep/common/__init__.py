"""Shared code of DicomKeep: configuration, identifiers, DICOM, events, ports and adapters."""
