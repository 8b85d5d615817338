"""DicomKeep ingest service."""
