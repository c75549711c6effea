"""sonoflow.stream.tracking."""
