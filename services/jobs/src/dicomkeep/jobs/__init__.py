"""DicomKeep jobs service."""
