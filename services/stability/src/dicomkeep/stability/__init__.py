"""DicomKeep stability service."""
