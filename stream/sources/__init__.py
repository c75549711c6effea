"""sonoflow.stream.sources."""
