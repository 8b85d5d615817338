"""DicomKeep storage service."""
