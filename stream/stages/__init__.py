"""sonoflow.stream.stages."""
