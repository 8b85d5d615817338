"""DicomKeep indexer service."""
