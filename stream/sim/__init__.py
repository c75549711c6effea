"""sonoflow.stream.sim."""
