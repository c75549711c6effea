"""sonoflow.stream.sinks."""
