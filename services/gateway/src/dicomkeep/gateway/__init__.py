"""DicomKeep gateway service."""
