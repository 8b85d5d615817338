"""DicomKeep allinone service."""
